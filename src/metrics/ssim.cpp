// SSIM and MS-SSIM on 2D planes (scikit-image 0.19 conventions, see metrics.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "isoprompt/metrics.h"

namespace isoprompt {

namespace {

constexpr int kRadius = 5;  // int(3.5 * 1.5 + 0.5): scikit-image's truncation
constexpr int kWin = 2 * kRadius + 1;
constexpr double kSigma = 1.5, kK1 = 0.01, kK2 = 0.03;
constexpr std::array<double, 5> kMsWeights = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};

const std::array<float, kWin>& gauss_window() {
  static const std::array<float, kWin> w = [] {
    std::array<double, kWin> d{};
    double sum = 0;
    for (int k = 0; k < kWin; ++k) sum += d[k] = std::exp(-0.5 * (k - kRadius) * (k - kRadius) / (kSigma * kSigma));
    std::array<float, kWin> f{};
    for (int k = 0; k < kWin; ++k) f[k] = static_cast<float>(d[k] / sum);
    return f;
  }();
  return w;
}

// A contiguous rows x cols image.
struct Image {
  int64_t rows = 0, cols = 0;
  std::vector<float> px;
  float operator()(int64_t r, int64_t c) const { return px[r * cols + c]; }
};

Image gather(const PlaneView<const float>& v) {
  Image im{v.rows, v.cols, std::vector<float>(static_cast<size_t>(v.rows * v.cols))};
  for (int64_t r = 0; r < v.rows; ++r)
    for (int64_t c = 0; c < v.cols; ++c) im.px[r * v.cols + c] = v(r, c);
  return im;
}

Image pool2(const Image& a) {
  Image o{a.rows / 2, a.cols / 2, {}};
  o.px.resize(static_cast<size_t>(o.rows * o.cols));
  for (int64_t r = 0; r < o.rows; ++r)
    for (int64_t c = 0; c < o.cols; ++c)
      o.px[r * o.cols + c] =
          0.25f * (a(2 * r, 2 * c) + a(2 * r, 2 * c + 1) + a(2 * r + 1, 2 * c) + a(2 * r + 1, 2 * c + 1));
  return o;
}

// Sums of the SSIM map and of the contrast-structure map over the interior (masked).
struct SsimSums {
  double ssim = 0, cs = 0;
  int64_t count = 0;
};

SsimSums ssim_sums(const Image& a, const Image& b, double data_range, const Image* mask) {
  SsimSums out;
  const int64_t R = a.rows, C = a.cols;
  if (R < kWin || C < kWin) return out;
  const int64_t Ci = C - 2 * kRadius, Ri = R - 2 * kRadius;
  const auto& g = gauss_window();
  // Horizontal pass over every row, interior columns only: 5 maps.
  std::vector<float> h(static_cast<size_t>(5 * R * Ci));
  float *ha = h.data(), *hb = ha + R * Ci, *haa = hb + R * Ci, *hbb = haa + R * Ci, *hab = hbb + R * Ci;
  for (int64_t r = 0; r < R; ++r) {
    const float* pa = &a.px[r * C];
    const float* pb = &b.px[r * C];
    for (int64_t c = 0; c < Ci; ++c) {
      float sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
      for (int k = 0; k < kWin; ++k) {
        const float x = pa[c + k], y = pb[c + k], w = g[k];
        sa += w * x;
        sb += w * y;
        saa += w * x * x;
        sbb += w * y * y;
        sab += w * x * y;
      }
      const int64_t i = r * Ci + c;
      ha[i] = sa, hb[i] = sb, haa[i] = saa, hbb[i] = sbb, hab[i] = sab;
    }
  }
  const double C1 = (kK1 * data_range) * (kK1 * data_range), C2 = (kK2 * data_range) * (kK2 * data_range);
  std::vector<float> v(static_cast<size_t>(5 * Ci));
  for (int64_t r = 0; r < Ri; ++r) {
    std::fill(v.begin(), v.end(), 0.f);
    float *va = v.data(), *vb = va + Ci, *vaa = vb + Ci, *vbb = vaa + Ci, *vab = vbb + Ci;
    for (int k = 0; k < kWin; ++k) {
      const float w = g[k];
      const int64_t base = (r + k) * Ci;
      for (int64_t c = 0; c < Ci; ++c) {
        va[c] += w * ha[base + c];
        vb[c] += w * hb[base + c];
        vaa[c] += w * haa[base + c];
        vbb[c] += w * hbb[base + c];
        vab[c] += w * hab[base + c];
      }
    }
    for (int64_t c = 0; c < Ci; ++c) {
      if (mask && (*mask)(r + kRadius, c + kRadius) == 0.f) continue;
      const double ux = va[c], uy = vb[c];
      const double vx = double(vaa[c]) - ux * ux, vy = double(vbb[c]) - uy * uy, vxy = double(vab[c]) - ux * uy;
      const double cs = (2 * vxy + C2) / (vx + vy + C2);
      out.cs += cs;
      out.ssim += cs * (2 * ux * uy + C1) / (ux * ux + uy * uy + C1);
      ++out.count;
    }
  }
  return out;
}

void check_same(const PlaneView<const float>& a, const PlaneView<const float>& b) {
  if (a.rows != b.rows || a.cols != b.cols)
    throw_input("ssim needs planes of equal shape, got {}x{} and {}x{}", a.rows, a.cols, b.rows, b.cols);
}

}  // namespace

double ssim_2d(const PlaneView<const float>& a, const PlaneView<const float>& b, double data_range,
               const PlaneView<const float>* mask, double* sum, int64_t* count) {
  check_same(a, b);
  if (a.rows < kWin || a.cols < kWin)
    throw_input("ssim needs planes of at least {}x{} pixels, got {}x{}", kWin, kWin, a.rows, a.cols);
  const Image ia = gather(a), ib = gather(b);
  Image im;
  if (mask) im = gather(*mask);
  const SsimSums s = ssim_sums(ia, ib, data_range, mask ? &im : nullptr);
  if (sum) *sum = s.ssim;
  if (count) *count = s.count;
  return s.count > 0 ? s.ssim / double(s.count) : std::nan("");
}

int ms_ssim_scales_for(int64_t rows, int64_t cols, int max_scales) {
  int m = 1;
  int64_t r = rows / 2, c = cols / 2;
  while (m < max_scales && r >= kWin && c >= kWin) ++m, r /= 2, c /= 2;
  return m;
}

double ms_ssim_2d(const PlaneView<const float>& a, const PlaneView<const float>& b, double data_range,
                  int scales) {
  check_same(a, b);
  if (scales < 1 || scales > 5) throw_input("ms-ssim scales must be 1..5, got {}", scales);
  if (ms_ssim_scales_for(a.rows, a.cols, scales) < scales)
    throw_input("a {}x{} plane is too small for {} ms-ssim scales (each scale needs >= {} px)", a.rows, a.cols,
                scales, kWin);
  Image ia = gather(a), ib = gather(b);
  double wsum = 0;
  for (int s = 0; s < scales; ++s) wsum += kMsWeights[s];
  double result = 1.0;
  for (int s = 0; s < scales; ++s) {
    const SsimSums m = ssim_sums(ia, ib, data_range, nullptr);
    const double term = (s == scales - 1 ? m.ssim : m.cs) / double(m.count);
    result *= std::pow(std::max(term, 0.0), kMsWeights[s] / wsum);
    if (s + 1 < scales) ia = pool2(ia), ib = pool2(ib);
  }
  return result;
}

}  // namespace isoprompt
