// SSIM / MS-SSIM / tuning loss against hand formulas and a naive reference.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "isoprompt/error.h"
#include "isoprompt/loss.h"

using namespace isoprompt;

namespace {

const auto kD = torch::TensorOptions().dtype(torch::kDouble);

// Naive SSIM / CS means of a single-channel image, explicit loops over valid windows.
std::pair<double, double> naive_ssim_cs(const at::Tensor& x, const at::Tensor& y) {
  const int64_t h = x.size(0), w = x.size(1), win = 11;
  std::vector<double> g(win);
  double gs = 0;
  for (int i = 0; i < win; ++i) gs += g[i] = std::exp(-(i - 5.0) * (i - 5.0) / (2 * 1.5 * 1.5));
  auto X = x.accessor<double, 2>(), Y = y.accessor<double, 2>();
  const double c1 = 1e-4, c2 = 9e-4;
  double ssum = 0, csum = 0;
  int64_t cnt = 0;
  for (int64_t r = 0; r + win <= h; ++r)
    for (int64_t c = 0; c + win <= w; ++c) {
      double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
      for (int i = 0; i < win; ++i)
        for (int j = 0; j < win; ++j) {
          const double k = g[i] * g[j] / (gs * gs), a = X[r + i][c + j], b = Y[r + i][c + j];
          mx += k * a, my += k * b, xx += k * a * a, yy += k * b * b, xy += k * a * b;
        }
      const double sx = xx - mx * mx, sy = yy - my * my, sxy = xy - mx * my;
      const double cs = (2 * sxy + c2) / (sx + sy + c2);
      ssum += (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs;
      csum += cs;
      ++cnt;
    }
  return {ssum / cnt, csum / cnt};
}

at::Tensor pool2(const at::Tensor& x) {  // 2×2 mean, floor
  const int64_t h = x.size(0) / 2, w = x.size(1) / 2;
  return x.slice(0, 0, 2 * h).slice(1, 0, 2 * w).reshape({h, 2, w, 2}).mean({1, 3});
}

}  // namespace

TEST(Loss, IdenticalImagesGiveSsimOneAndLossZero) {
  torch::manual_seed(1);
  const at::Tensor x = torch::rand({3, 1, 40, 37});
  EXPECT_EQ(ssim(x, x).item<float>(), 1.f);
  EXPECT_EQ(ms_ssim(x, x, 2).item<float>(), 1.f);
  EXPECT_EQ(restoration_loss(x, x).item<float>(), 0.f);
}

TEST(Loss, SsimOfAConstantOffsetMatchesTheFormula) {
  // x = a and y = a + c everywhere: variances and covariance are 0, so SSIM is the
  // luminance term (2a(a+c) + C1) / (a² + (a+c)² + C1) with C1 = (0.01·1)².
  const double a = 0.3, c = 0.2, c1 = 1e-4;
  const at::Tensor x = torch::full({1, 1, 16, 20}, a, kD), y = x + c;
  const double want = (2 * a * (a + c) + c1) / (a * a + (a + c) * (a + c) + c1);
  EXPECT_NEAR(ssim(x, y).item<double>(), want, 1e-12);
  // MS-SSIM: the contrast terms are exactly 1, the last scale's SSIM is the formula.
  const at::Tensor xb = torch::full({1, 1, 24, 24}, a, kD);
  EXPECT_NEAR(ms_ssim(xb, xb + c, 2).item<double>(), std::pow(want, 0.2856 / (0.0448 + 0.2856)),
              1e-9);
}

TEST(Loss, SsimMatchesANaiveLoopReference) {
  torch::manual_seed(2);
  const at::Tensor x = torch::rand({15, 14}, kD), y = (x + 0.2 * torch::rand({15, 14}, kD));
  const auto ref = naive_ssim_cs(x, y);
  EXPECT_NEAR(ssim(x.view({1, 1, 15, 14}), y.view({1, 1, 15, 14})).item<double>(), ref.first, 1e-12);
  EXPECT_LT(ref.first, 0.99);  // not a trivial case
}

TEST(Loss, MsSsimMatchesTheNaiveReferenceProduct) {
  torch::manual_seed(3);
  const at::Tensor x = torch::rand({46, 50}, kD), y = x + 0.3 * torch::rand({46, 50}, kD);
  const auto s0 = naive_ssim_cs(x, y);
  const auto s1 = naive_ssim_cs(pool2(x), pool2(y));
  const auto s2 = naive_ssim_cs(pool2(pool2(x)), pool2(pool2(y)));
  const double w = 0.0448 + 0.2856 + 0.3001;
  const double want = std::pow(s0.second, 0.0448 / w) * std::pow(s1.second, 0.2856 / w) *
                      std::pow(s2.first, 0.3001 / w);
  EXPECT_NEAR(ms_ssim(x.view({1, 1, 46, 50}), y.view({1, 1, 46, 50}), 3).item<double>(), want, 1e-12);
  // One scale is plain SSIM.
  EXPECT_NEAR(ms_ssim(x.view({1, 1, 46, 50}), y.view({1, 1, 46, 50}), 1).item<double>(), s0.first,
              1e-12);
  // The loss: 0.5(1 − MS-SSIM) + 0.5 L1, with 3 scales picked for a 46 px crop.
  const double l1 = (x - y).abs().mean().item<double>();
  EXPECT_NEAR(restoration_loss(x.view({1, 1, 46, 50}), y.view({1, 1, 46, 50})).item<double>(),
              0.5 * (1 - want) + 0.5 * l1, 1e-12);
}

TEST(Loss, ScaleCountFitsTheCrop) {
  EXPECT_EQ(ms_ssim_scales(10), 0);
  EXPECT_EQ(ms_ssim_scales(11), 1);
  EXPECT_EQ(ms_ssim_scales(21), 1);
  EXPECT_EQ(ms_ssim_scales(22), 2);
  EXPECT_EQ(ms_ssim_scales(64), 3);
  EXPECT_EQ(ms_ssim_scales(96), 4);
  EXPECT_EQ(ms_ssim_scales(128), 4);
  EXPECT_EQ(ms_ssim_scales(176), 5);
  EXPECT_EQ(ms_ssim_scales(4096), 5);
  const at::Tensor x = torch::rand({1, 1, 64, 64});
  try {
    ms_ssim(x, x, 4);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "ms-ssim with 4 scales needs images of at least 88 px, got 64×64");
  }
  // Crops below one window: L1 only.
  const at::Tensor a = torch::zeros({1, 1, 8, 8}), b = torch::full({1, 1, 8, 8}, 0.25);
  EXPECT_FLOAT_EQ(restoration_loss(a, b).item<float>(), 0.25f);
}

TEST(Loss, GradientMatchesFiniteDifferences) {
  torch::manual_seed(4);
  const at::Tensor t = torch::rand({2, 1, 24, 26}, kD);
  const at::Tensor p = (t + 0.1 * torch::randn({2, 1, 24, 26}, kD)).requires_grad_(true);
  restoration_loss(p, t).backward();
  auto flat = p.detach().view(-1);
  for (int64_t i : {3, 100, 517, 1000}) {
    const double o = flat[i].item<double>(), h = 1e-6;
    flat[i] = o + h;
    const double up = restoration_loss(p, t).item<double>();
    flat[i] = o - h;
    const double dn = restoration_loss(p, t).item<double>();
    flat[i] = o;
    EXPECT_NEAR(p.grad().view(-1)[i].item<double>(), (up - dn) / (2 * h), 1e-7) << i;
  }
}
