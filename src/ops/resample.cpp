// Line weights (area average, interpolation kernels) and their application along an axis.
#include <algorithm>
#include <cmath>

#include "isoprompt/ops.h"
#include "ops/line_resampler.h"

namespace isoprompt {
namespace detail {

namespace {

constexpr double kPi = 3.14159265358979323846;

int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// Index i of the line mirrored about its outer cell faces (-0.5 and n - 0.5).
int64_t half_sample_symmetric(int64_t i, int64_t n) {
  const int64_t period = 2 * n;
  i = ((i % period) + period) % period;
  return i < n ? i : period - 1 - i;
}

// Appends output j's taps; zero weights are dropped, the rest renormalised to sum 1.
void push_taps(LineWeights& w, const std::vector<std::pair<int64_t, double>>& taps, bool renorm) {
  double sum = 0;
  for (const auto& t : taps) sum += t.second;
  const double s = renorm && sum != 0 ? 1.0 / sum : 1.0;
  for (const auto& t : taps) {
    if (t.second == 0) continue;
    w.index.push_back(clamp_index(t.first, w.n_in));
    w.weight.push_back(static_cast<float>(t.second * s));
  }
  w.offset.push_back(static_cast<int64_t>(w.index.size()));
}

double sinc(double x) {
  if (x == 0) return 1.0;
  const double px = kPi * x;
  return std::sin(px) / px;
}

}  // namespace

double interp_radius(Interp m) {
  switch (m) {
    case Interp::Nearest: return 0.5;
    case Interp::Linear: return 1.0;
    case Interp::Keys: return 2.0;
    case Interp::Lanczos3: return 3.0;
    case Interp::BSpline3: return 2.0;
  }
  return 1.0;
}

double interp_kernel(Interp m, double t) {
  const double a = std::abs(t);
  switch (m) {
    case Interp::Nearest: return a < 0.5 ? 1.0 : 0.0;
    case Interp::Linear: return a < 1.0 ? 1.0 - a : 0.0;
    case Interp::Keys: {
      constexpr double A = -0.5;  // Keys (1981), Catmull-Rom
      if (a <= 1.0) return ((A + 2) * a - (A + 3)) * a * a + 1;
      if (a < 2.0) return ((A * a - 5 * A) * a + 8 * A) * a - 4 * A;
      return 0.0;
    }
    case Interp::Lanczos3: return a < 3.0 ? sinc(t) * sinc(t / 3.0) : 0.0;
    case Interp::BSpline3:
      if (a < 1.0) return 2.0 / 3.0 - a * a + 0.5 * a * a * a;
      if (a < 2.0) return (2.0 - a) * (2.0 - a) * (2.0 - a) / 6.0;
      return 0.0;
  }
  return 0.0;
}

int64_t downsampled_length(int64_t n, double factor) {
  return static_cast<int64_t>(std::floor(static_cast<double>(n) / factor + 1e-9));
}

LineWeights area_weights(int64_t n_in, double factor) {
  LineWeights w;
  w.n_in = n_in;
  w.n_out = downsampled_length(n_in, factor);
  w.offset.push_back(0);
  std::vector<std::pair<int64_t, double>> taps;
  for (int64_t j = 0; j < w.n_out; ++j) {
    const double a = j * factor, b = std::min((j + 1) * factor, static_cast<double>(n_in));
    taps.clear();
    const int64_t i0 = static_cast<int64_t>(std::floor(a + 1e-9));
    const int64_t i1 = static_cast<int64_t>(std::ceil(b - 1e-9));
    for (int64_t i = i0; i < i1; ++i) {
      const double overlap = std::min(b, double(i + 1)) - std::max(a, double(i));
      if (overlap > 1e-9) taps.push_back({i, overlap});
    }
    push_taps(w, taps, true);  // overlap / (sum of overlaps) = overlap / K
  }
  return w;
}

LineWeights interp_weights(int64_t n_in, double factor, Interp interp, int64_t n_out) {
  LineWeights w;
  w.n_in = n_in;
  w.n_out = n_out;
  w.offset.push_back(0);
  std::vector<std::pair<int64_t, double>> taps;
  for (int64_t i = 0; i < n_out; ++i) {
    const double x = (i + 0.5) / factor - 0.5;
    taps.clear();
    if (interp == Interp::Nearest) {
      taps.push_back({static_cast<int64_t>(std::floor(x + 0.5)), 1.0});
    } else {
      const double r = interp_radius(interp);
      const int64_t lo = static_cast<int64_t>(std::floor(x)) - static_cast<int64_t>(r) + 1;
      const int64_t hi = static_cast<int64_t>(std::floor(x)) + static_cast<int64_t>(r);
      for (int64_t k = lo; k <= hi; ++k) {
        // The B-spline coefficients exist only for the half-sample symmetric extension the
        // prefilter assumed, so taps past the ends must read that extension: -1 -> 0,
        // -2 -> 1, n -> n - 1 (period 2n). Other kernels clamp (in push_taps); for
        // nearest and linear, whose taps reach at most half a voxel past the ends, the two
        // are the same.
        const int64_t idx = interp == Interp::BSpline3 ? half_sample_symmetric(k, n_in) : k;
        taps.push_back({idx, interp_kernel(interp, x - double(k))});
      }
    }
    push_taps(w, taps, true);
  }
  return w;
}

LineWeights kernel_weights(int64_t n_in, double factor, const std::function<double(double)>& kernel,
                           double radius) {
  LineWeights w;
  w.n_in = n_in;
  w.n_out = downsampled_length(n_in, factor);
  w.offset.push_back(0);
  std::vector<std::pair<int64_t, double>> taps;
  for (int64_t j = 0; j < w.n_out; ++j) {
    const double c = (j + 0.5) * factor - 0.5;
    taps.clear();
    const int64_t lo = static_cast<int64_t>(std::ceil(c - radius));
    const int64_t hi = static_cast<int64_t>(std::floor(c + radius));
    for (int64_t k = lo; k <= hi; ++k) taps.push_back({k, kernel(double(k) - c)});
    double sum = 0;
    for (const auto& t : taps) sum += t.second;
    if (!(sum > 0)) {  // kernel narrower than the sample spacing: nearest voxel
      taps.clear();
      taps.push_back({static_cast<int64_t>(std::floor(c + 0.5)), 1.0});
    }
    push_taps(w, taps, true);
  }
  return w;
}

void bspline3_prefilter(float* data, int64_t outer, int64_t n, int64_t inner) {
  // One sample mirrored half-sample symmetrically is a constant, whose coefficients are itself.
  if (n < 2) return;
  const double z = std::sqrt(3.0) - 2.0, lambda = (1.0 - z) * (1.0 - 1.0 / z);  // lambda = 6
  const int64_t horizon = std::min<int64_t>(n, static_cast<int64_t>(std::ceil(std::log(1e-9) / std::log(-z))));
  // Work items: (outer index, block of up to B columns); each runs the recursions for its
  // columns, so the z axis (outer = 1) is parallel too.
  constexpr int64_t B = 1024;
  const int64_t nblk = (inner + B - 1) / B;
#pragma omp parallel for schedule(static) if (outer * n * inner > 65536)
  for (int64_t t = 0; t < outer * nblk; ++t) {
    const int64_t o = t / nblk, i0 = (t - o * nblk) * B, len = std::min(B, inner - i0);
    float* base = data + o * n * inner + i0;
    auto row = [&](int64_t k) { return base + k * inner; };
    double sum[B];
    for (int64_t k = 0; k < n; ++k) {
      float* r = row(k);
      for (int64_t i = 0; i < len; ++i) r[i] = static_cast<float>(r[i] * lambda);
    }
    // Causal initialisation c+[0] = sum_{j >= 0} z^j x[-j] on the half-sample symmetric
    // extension x[-j] = x[j - 1]: a truncated sum when z^horizon is negligible, otherwise
    // the closed form over one period 2n (scipy's mode='reflect'). The sum is kept apart
    // from row 0, which it reads to the end: scipy until gh-24550 (1.10 here) updates x[0]
    // in place and reads it back, which puts its short lines off by ~z^2n (2.5e-3, n = 2).
    if (horizon < n) {
      double zj = z;
      for (int64_t i = 0; i < len; ++i) sum[i] = row(0)[i];
      for (int64_t j = 1; j < horizon; ++j, zj *= z)
        for (int64_t i = 0; i < len; ++i) sum[i] += zj * row(j - 1)[i];
    } else {
      // c+[0] = x[0] + z / (1 - z^2n) * sum_{k=0}^{n-1} z^k (x[k] + z^n x[n-1-k]).
      const double zn = std::pow(z, double(n)), scale = z / (1.0 - zn * zn);
      for (int64_t i = 0; i < len; ++i) sum[i] = 0;
      double zk = 1;
      for (int64_t k = 0; k < n; ++k, zk *= z) {
        const float *a = row(k), *b = row(n - 1 - k);
        for (int64_t i = 0; i < len; ++i) sum[i] += zk * (a[i] + zn * b[i]);
      }
      for (int64_t i = 0; i < len; ++i) sum[i] = row(0)[i] + scale * sum[i];
    }
    for (int64_t i = 0; i < len; ++i) row(0)[i] = static_cast<float>(sum[i]);
    for (int64_t k = 1; k < n; ++k) {
      float *r = row(k), *p = row(k - 1);
      for (int64_t i = 0; i < len; ++i) r[i] = static_cast<float>(r[i] + z * p[i]);
    }
    // Anticausal initialisation: the coefficients are symmetric too (c[n] = c[n-1]), and
    // c-[n-1] = z (c-[n] - c+[n-1]) then gives c-[n-1] = z / (z - 1) c+[n-1].
    {
      float* r = row(n - 1);
      for (int64_t i = 0; i < len; ++i) r[i] = static_cast<float>((z / (z - 1.0)) * r[i]);
    }
    for (int64_t k = n - 2; k >= 0; --k) {
      float *r = row(k), *q = row(k + 1);
      for (int64_t i = 0; i < len; ++i) r[i] = static_cast<float>(z * (q[i] - r[i]));
    }
  }
}

template <typename T>
void apply_weights(const T* src, int64_t outer, int64_t inner, const LineWeights& w, float* dst) {
  const int64_t n_in = w.n_in, n_out = w.n_out;
  const int64_t* off = w.offset.data();
  const int64_t* idx = w.index.data();
  const float* wt = w.weight.data();
  if (n_out == 0 || outer == 0 || inner == 0) return;
  const int64_t work = outer * n_out * inner * std::max<int64_t>(1, w.index.size() / n_out);
  if (inner == 1) {
    // Contiguous lines (x axis): one dot product per output voxel.
#pragma omp parallel for schedule(static) if (work > 65536)
    for (int64_t o = 0; o < outer; ++o) {
      const T* s = src + o * n_in;
      float* d = dst + o * n_out;
      for (int64_t j = 0; j < n_out; ++j) {
        float acc = 0.f;
        for (int64_t k = off[j]; k < off[j + 1]; ++k) acc += wt[k] * static_cast<float>(s[idx[k]]);
        d[j] = acc;
      }
    }
    return;
  }
  // Strided axis: each output row is a weighted sum of whole input rows, processed in
  // blocks that stay in L1 so every row of dst is written once.
  constexpr int64_t B = 2048;
  const int64_t nblk = (inner + B - 1) / B;
  const int64_t items = outer * n_out * nblk;
#pragma omp parallel for schedule(static) if (work > 65536)
  for (int64_t t = 0; t < items; ++t) {
    const int64_t o = t / (n_out * nblk);
    const int64_t r = t - o * n_out * nblk;
    const int64_t j = r / nblk;
    const int64_t i0 = (r - j * nblk) * B;
    const int64_t len = std::min(B, inner - i0);
    float acc[B];
    for (int64_t i = 0; i < len; ++i) acc[i] = 0.f;
    for (int64_t k = off[j]; k < off[j + 1]; ++k) {
      const T* s = src + (o * n_in + idx[k]) * inner + i0;
      const float wk = wt[k];
      for (int64_t i = 0; i < len; ++i) acc[i] += wk * static_cast<float>(s[i]);
    }
    float* d = dst + (o * n_out + j) * inner + i0;
    std::copy(acc, acc + len, d);
  }
}

template void apply_weights<uint8_t>(const uint8_t*, int64_t, int64_t, const LineWeights&, float*);
template void apply_weights<uint16_t>(const uint16_t*, int64_t, int64_t, const LineWeights&, float*);
template void apply_weights<float>(const float*, int64_t, int64_t, const LineWeights&, float*);

}  // namespace detail

namespace {

using detail::AxisLayout;
using detail::layout;

}  // namespace

detail::AxisLayout detail::layout(const Shape3& s, int axis) {
  switch (axis) {
    case 0: return {1, s.z, s.y * s.x};
    case 1: return {s.z, s.y, s.x};
    case 2: return {s.z * s.y, s.x, 1};
  }
  throw_input("axis must be 0 (z), 1 (y) or 2 (x), got {}", axis);
}

namespace {

const char* axis_name(int axis) { return axis == 0 ? "z" : axis == 1 ? "y" : "x"; }

Shape3 with_axis_len(Shape3 s, int axis, int64_t n) {
  (axis == 0 ? s.z : axis == 1 ? s.y : s.x) = n;
  return s;
}

VoxelSize scale_step(VoxelSize v, int axis, double mul) {
  (axis == 0 ? v.z : axis == 1 ? v.y : v.x) *= mul;
  return v;
}

void check_factor(double factor, const char* what) {
  if (!(factor >= 1.0) || !std::isfinite(factor))
    throw_input("{} factor must be a finite number >= 1, got {}", what, factor);
}

}  // namespace

double detail::axis_step(const VoxelSize& v, int axis) { return axis == 0 ? v.z : axis == 1 ? v.y : v.x; }

Volume detail::apply_along_axis(const Volume& v, int axis, const detail::LineWeights& w, double step_mul) {
  const AxisLayout l = layout(v.shape(), axis);
  Volume out(with_axis_len(v.shape(), axis, w.n_out), DType::F32, scale_step(v.voxel_size(), axis, step_mul),
             v.unit());
  visit_dtype(v.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    detail::apply_weights<T>(static_cast<const T*>(v.raw()), l.outer, l.inner, w, out.data<float>());
  });
  return out;
}

Volume downsample(const Volume& v, int axis, double factor) {
  check_factor(factor, "downsampling");
  const AxisLayout l = layout(v.shape(), axis);
  const int64_t n_out = detail::downsampled_length(l.n, factor);
  if (n_out < 1)
    throw_input("cannot downsample axis {} of length {} by {}: fewer voxels than the factor", axis_name(axis),
                l.n, factor);
  return detail::apply_along_axis(v, axis, detail::area_weights(l.n, factor), factor);
}

Volume upsample(const Volume& v, int axis, double factor, Interp interp, int64_t out_len) {
  check_factor(factor, "upsampling");
  const AxisLayout l = layout(v.shape(), axis);
  if (l.n < 1) throw_input("cannot upsample an empty axis {}", axis_name(axis));
  const int64_t n_out = out_len >= 0 ? out_len : std::llround(static_cast<double>(l.n) * factor);
  if (n_out < 1) throw_input("upsampled length of axis {} must be >= 1, got {}", axis_name(axis), n_out);
  const detail::LineWeights w = detail::interp_weights(l.n, factor, interp, n_out);
  if (interp != Interp::BSpline3) return detail::apply_along_axis(v, axis, w, 1.0 / factor);
  Volume coef = v.dtype() == DType::F32 ? v.clone() : v.astype(DType::F32);
  detail::bspline3_prefilter(coef.data<float>(), l.outer, l.n, l.inner);
  return detail::apply_along_axis(coef, axis, w, 1.0 / factor);
}

const char* interp_name(Interp m) {
  switch (m) {
    case Interp::Nearest: return "nearest";
    case Interp::Linear: return "linear";
    case Interp::Keys: return "keys";
    case Interp::Lanczos3: return "lanczos";
    case Interp::BSpline3: return "cubic";
  }
  return "?";
}

Interp parse_interp(const std::string& s) {
  if (s == "nearest") return Interp::Nearest;
  if (s == "linear") return Interp::Linear;
  if (s == "cubic" || s == "bspline") return Interp::BSpline3;
  if (s == "keys" || s == "catmull-rom") return Interp::Keys;
  if (s == "lanczos" || s == "lanczos3") return Interp::Lanczos3;
  throw_input(
      "unknown interpolation '{}' (expected nearest, linear, cubic (cubic B-spline, also 'bspline'), keys "
      "(Keys a = -0.5, also 'catmull-rom') or lanczos)",
      s);
}

Volume crop(const Volume& v, Shape3 origin, Shape3 size) {
  const Shape3& s = v.shape();
  if (origin.z < 0 || origin.y < 0 || origin.x < 0 || size.z < 0 || size.y < 0 || size.x < 0 ||
      origin.z + size.z > s.z || origin.y + size.y > s.y || origin.x + size.x > s.x)
    throw_input("crop box {} at {} does not fit in a volume of shape {}", to_string(size), to_string(origin),
                to_string(s));
  Volume out(size, v.dtype(), v.voxel_size(), v.unit());
  const size_t es = dtype_size(v.dtype());
  const auto* src = static_cast<const unsigned char*>(v.raw());
  auto* dst = static_cast<unsigned char*>(out.raw());
#pragma omp parallel for schedule(static)
  for (int64_t z = 0; z < size.z; ++z)
    for (int64_t y = 0; y < size.y; ++y)
      std::copy_n(src + (((origin.z + z) * s.y + origin.y + y) * s.x + origin.x) * es, size.x * es,
                  dst + ((z * size.y + y) * size.x) * es);
  return out;
}

}  // namespace isoprompt
