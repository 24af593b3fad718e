// Image quality metrics: PSNR, SSIM, MS-SSIM, NRMSE, over whole volumes and per plane
// orientation, with an optional mask. Plain C++ with OpenMP, float32 inputs in [0, range].
//
//   EvalOptions opt;                        // GT 0.1/99.9 percentiles -> [0,1], clip, range 1
//   EvalReport r = isoprompt::evaluate(gt, pred, opt);
//   fmt::print("{:.2f} dB\n", r.overall.psnr);
//
// Conventions (they match scikit-image 0.19, see docs/ops.md):
//   PSNR  = 10 log10(range^2 / MSE); identical images give +inf.
//   SSIM  = Wang et al. 2004: Gaussian window sigma 1.5 truncated at radius 5 (11 taps),
//           K1 0.01, K2 0.03, population (co)variances; the mean is taken over the
//           interior that scikit-image keeps (5 px cropped from every border).
//   MS-SSIM = Wang et al. 2003: 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
//           2x2 average pooling between scales; contrast-structure terms at scales 1..M-1,
//           full SSIM at scale M; negative terms clamped to 0. When a plane is too small
//           for 5 scales (each scale must keep >= 11 px), fewer are used and their weights
//           renormalised to sum 1 (reported in EvalReport::ms_ssim_scales).
//   NRMSE = sqrt(MSE) / sqrt(mean(gt^2)) (scikit-image's 'euclidean' normalisation).
// A 3D SSIM / MS-SSIM is the mean over the planes of one orientation (XY: one plane per
// z, XZ: per y, YZ: per x).
#pragma once

#include <cstdint>
#include <string>

#include "isoprompt/volume.h"

namespace isoprompt {

/// 2D SSIM of two float planes (same rows x cols), mean over the cropped interior.
/// With a mask (non-zero = keep) only interior pixels inside the mask count; the
/// function returns the sum and count through `sum`/`count` when given (for pooling).
double ssim_2d(const PlaneView<const float>& a, const PlaneView<const float>& b, double data_range,
               const PlaneView<const float>* mask = nullptr, double* sum = nullptr, int64_t* count = nullptr);
/// 2D MS-SSIM; `scales` is the number of scales to use (1..5; see header notes).
double ms_ssim_2d(const PlaneView<const float>& a, const PlaneView<const float>& b, double data_range, int scales);
/// The number of MS-SSIM scales a rows x cols plane allows (<= max_scales, >= 1).
int ms_ssim_scales_for(int64_t rows, int64_t cols, int max_scales = 5);

/// Volume metrics. `a` is the reference; both float32 of equal shape; `mask` float32 of
/// the same shape (non-zero = evaluate) or null.
double psnr(const Volume& a, const Volume& b, double data_range, const Volume* mask = nullptr);
double nrmse(const Volume& a, const Volume& b, const Volume* mask = nullptr);
double mse(const Volume& a, const Volume& b, const Volume* mask = nullptr);
/// Mean of per-plane SSIM over all planes of orientation `p`.
double ssim(const Volume& a, const Volume& b, Plane p, double data_range, const Volume* mask = nullptr);
/// Mean of per-plane MS-SSIM over all planes of orientation `p` (mask ignored at
/// coarse scales: MS-SSIM has no masked form, planes without masked voxels are skipped).
double ms_ssim(const Volume& a, const Volume& b, Plane p, double data_range, int scales = 5,
               const Volume* mask = nullptr);

struct MetricSet {
  double psnr = 0, ssim = 0, ms_ssim = 0, nrmse = 0;
};

struct EvalOptions {
  enum Norm { GtPercentiles, None };
  /// GtPercentiles: both volumes are mapped with the GT's pmin/pmax percentiles to
  /// [0, 1] and clipped; data range 1. None: voxel values as they are, `data_range`
  /// (0 = the GT dtype's range: 255, 65535, or max - min for float32).
  Norm norm = GtPercentiles;
  double pmin = 0.1, pmax = 99.9;
  double data_range = 0;
  int ms_ssim_scales = 5;
  /// Shapes differ: false = InputError; true = evaluate the common box at the origin
  /// (the prediction is cropped to the GT; where the prediction is shorter, e.g. 248
  /// slices upsampled from floor(250 / 4) = 62, the GT is cropped too, with a warning).
  bool crop_to_gt = false;
  const Volume* mask = nullptr;  // same shape as the GT; non-zero = evaluate
  bool per_orientation = true;   // also compute the XY, XZ and YZ breakdown
};

struct EvalReport {
  Shape3 shape;              // evaluated shape
  double data_range = 1;
  double gt_lo = 0, gt_hi = 0;  // GT percentiles used (GtPercentiles only)
  int ms_ssim_scales = 5;    // used for the smallest plane orientation
  int64_t voxels = 0;        // voxels evaluated (mask applied)
  /// Whole volume. PSNR/NRMSE over all voxels; SSIM/MS-SSIM = mean of the three
  /// orientations' values.
  MetricSet overall;
  /// Per orientation: every metric is the mean of its per-plane values over the planes
  /// of that orientation. Planes that match the GT exactly (PSNR +inf) or whose GT is
  /// all zero (NRMSE undefined) are left out of the PSNR / NRMSE means; when every plane
  /// is left out the value is +inf.
  MetricSet xy, xz, yz;
};

/// Validates shapes (InputError naming both shapes unless crop_to_gt), normalises, and
/// computes every metric.
EvalReport evaluate(const Volume& gt, const Volume& pred, const EvalOptions& opt = {});

}  // namespace isoprompt
