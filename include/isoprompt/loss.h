// Differentiable image-similarity losses for self-supervised tuning (torch).
// Images are B×1×H×W float tensors on any device; values are in normalised units
// (the volume's 1st..99.8th percentile maps to 0..1), so the SSIM data range is 1.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace isoprompt {

struct SsimOptions {
  int64_t window = 11;   // Gaussian window size (odd)
  double sigma = 1.5;
  double k1 = 0.01, k2 = 0.03;
  double data_range = 1.0;
};

// Mean SSIM over the 'valid' part of the images (no padding: the window must fit,
// H and W >= window). Returns a 0-dim tensor, differentiable.
at::Tensor ssim(const at::Tensor& x, const at::Tensor& y, const SsimOptions& o = {});

// Number of MS-SSIM scales that fit an image whose smaller side is `min_side`: the
// largest s <= 5 with floor(min_side / 2^(s-1)) >= window, i.e. the coarsest scale
// still holds one whole SSIM window. 64 px -> 3, 96 px -> 4, 176 px -> 5, < 11 px -> 0.
int64_t ms_ssim_scales(int64_t min_side, int64_t window = 11);

// MS-SSIM with an explicit scale count (1 = plain SSIM). The standard 5-scale weights
// (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) are truncated to `scales` and renormalised to
// sum to 1. Between scales, 2×2 average pooling. Contrast-structure terms are clamped
// at 1e-6 before the fractional powers (negative values would give NaN).
// Throws InputError when the images are too small for `scales`.
at::Tensor ms_ssim(const at::Tensor& x, const at::Tensor& y, int64_t scales,
                   const SsimOptions& o = {});

// The tuning loss: 0.5·(1 − MS-SSIM) + 0.5·L1. scales <= 0 picks ms_ssim_scales() of the
// crop; crops smaller than one window fall back to L1 alone.
at::Tensor restoration_loss(const at::Tensor& pred, const at::Tensor& target, int64_t scales = 0,
                            const SsimOptions& o = {});

}  // namespace isoprompt
