#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "isoprompt/error.h"
#include "isoprompt/loss.h"

namespace isoprompt {
namespace {

constexpr double kMsWeights[5] = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};

at::Tensor gaussian_1d(const SsimOptions& o, const at::Tensor& like) {
  std::vector<double> g(static_cast<size_t>(o.window));
  double sum = 0;
  const double c = (o.window - 1) / 2.0;
  for (int64_t i = 0; i < o.window; ++i) {
    g[static_cast<size_t>(i)] = std::exp(-(i - c) * (i - c) / (2 * o.sigma * o.sigma));
    sum += g[static_cast<size_t>(i)];
  }
  for (auto& v : g) v /= sum;
  return at::tensor(g, at::TensorOptions().dtype(at::kDouble)).to(like.options());
}

// Separable Gaussian filter, 'valid' (no padding), per channel.
at::Tensor blur(const at::Tensor& x, const at::Tensor& g) {
  const int64_t c = x.size(1), w = g.size(0);
  const at::Tensor gx = g.view({1, 1, 1, w}).expand({c, 1, 1, w}).contiguous();
  const at::Tensor gy = g.view({1, 1, w, 1}).expand({c, 1, w, 1}).contiguous();
  const at::Tensor none;
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  const at::IntArrayRef s(one), p(zero);
  return at::conv2d(at::conv2d(x, gx, none, s, p, s, c), gy, none, s, p, s, c);
}

void check_pair(const at::Tensor& x, const at::Tensor& y, const SsimOptions& o) {
  if (x.dim() != 4 || x.sizes() != y.sizes())
    throw_input("ssim needs two B×C×H×W tensors of the same shape");
  if (o.window < 1 || o.window % 2 == 0 || !(o.sigma > 0) || !(o.data_range > 0))
    throw_input("ssim needs an odd window, a positive sigma and a positive data range");
  if (x.size(2) < o.window || x.size(3) < o.window)
    throw_input("ssim window {} does not fit a {}×{} image", o.window, x.size(2), x.size(3));
}

// Per-image, per-channel means of the SSIM map and the contrast-structure map (B×C).
std::pair<at::Tensor, at::Tensor> ssim_cs(const at::Tensor& x, const at::Tensor& y,
                                          const SsimOptions& o) {
  const at::Tensor g = gaussian_1d(o, x);
  const double c1 = (o.k1 * o.data_range) * (o.k1 * o.data_range);
  const double c2 = (o.k2 * o.data_range) * (o.k2 * o.data_range);
  const at::Tensor mx = blur(x, g), my = blur(y, g);
  const at::Tensor mx2 = mx * mx, my2 = my * my, mxy = mx * my;
  const at::Tensor sx = blur(x * x, g) - mx2;
  const at::Tensor sy = blur(y * y, g) - my2;
  const at::Tensor sxy = blur(x * y, g) - mxy;
  const at::Tensor cs = (2 * sxy + c2) / (sx + sy + c2);
  const at::Tensor lum = (2 * mxy + c1) / (mx2 + my2 + c1);
  return {(lum * cs).mean({2, 3}), cs.mean({2, 3})};
}

}  // namespace

at::Tensor ssim(const at::Tensor& x, const at::Tensor& y, const SsimOptions& o) {
  check_pair(x, y, o);
  return ssim_cs(x, y, o).first.mean();
}

int64_t ms_ssim_scales(int64_t min_side, int64_t window) {
  int64_t s = 0;
  while (s < 5 && (min_side >> s) >= window) ++s;
  return s;
}

at::Tensor ms_ssim(const at::Tensor& x, const at::Tensor& y, int64_t scales, const SsimOptions& o) {
  if (scales < 1 || scales > 5) throw_input("ms-ssim needs 1..5 scales, got {}", scales);
  check_pair(x, y, o);
  const int64_t side = std::min(x.size(2), x.size(3));
  if (ms_ssim_scales(side, o.window) < scales)
    throw_input("ms-ssim with {} scales needs images of at least {} px, got {}×{}", scales,
                o.window << (scales - 1), x.size(2), x.size(3));
  double wsum = 0;
  for (int64_t i = 0; i < scales; ++i) wsum += kMsWeights[i];
  at::Tensor a = x, b = y, result;
  for (int64_t i = 0; i < scales; ++i) {
    auto [s, cs] = ssim_cs(a, b, o);
    const bool last = i == scales - 1;
    const at::Tensor term = (last ? s : cs).clamp_min(1e-6).pow(kMsWeights[i] / wsum);
    result = result.defined() ? result * term : term;
    if (!last) {
      a = at::avg_pool2d(a, {2, 2}, {2, 2});
      b = at::avg_pool2d(b, {2, 2}, {2, 2});
    }
  }
  return result.mean();
}

at::Tensor restoration_loss(const at::Tensor& pred, const at::Tensor& target, int64_t scales,
                            const SsimOptions& o) {
  const at::Tensor l1 = (pred - target).abs().mean();
  if (scales <= 0) scales = ms_ssim_scales(std::min(pred.size(2), pred.size(3)), o.window);
  if (scales == 0) return l1;
  return 0.5 * (1.0 - ms_ssim(pred, target, scales, o)) + 0.5 * l1;
}

}  // namespace isoprompt
