// Percentile normalisation and its inverse back to the input's dtype.
#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "isoprompt/ops.h"
#include "isoprompt/stats.h"

namespace isoprompt {

Normalizer percentile_normalizer(const Volume& v, double pmin, double pmax) {
  if (!(pmin >= 0 && pmax <= 100 && pmin < pmax))
    throw_input("percentiles must satisfy 0 <= low < high <= 100, got {} and {}", pmin, pmax);
  const std::vector<double> p = percentiles(v, {pmin, pmax});
  return {p[0], p[1]};
}

Volume normalize(const Volume& v, const Normalizer& n) {
  Volume out(v.shape(), DType::F32, v.voxel_size(), v.unit());
  float* d = out.data<float>();
  const double s = n.scale(), lo = n.lo;
  const int64_t count = v.numel();
  visit_dtype(v.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* src = static_cast<const T*>(v.raw());
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; ++i) d[i] = static_cast<float>((double(src[i]) - lo) * s);
  });
  return out;
}

void normalize_inplace(Volume& f32, const Normalizer& n) {
  float* d = f32.data<float>();
  const double s = n.scale(), lo = n.lo;
  const int64_t count = f32.numel();
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) d[i] = static_cast<float>((double(d[i]) - lo) * s);
}

int64_t clip_inplace(Volume& f32, float lo, float hi) {
  float* d = f32.data<float>();
  const int64_t count = f32.numel();
  int64_t changed = 0;
#pragma omp parallel for schedule(static) reduction(+ : changed) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const float x = d[i];
    if (x < lo) d[i] = lo, ++changed;
    else if (x > hi) d[i] = hi, ++changed;
  }
  return changed;
}

std::string ClipReport::summary() const {
  if (below + above == 0) return "";
  const double pct = total > 0 ? 100.0 * double(below + above) / double(total) : 0.0;
  return fmt::format("clipped {:.3g}% of voxels ({} above {}, {} below {})", pct, above, max_value, below,
                     min_value);
}

namespace {

// x * range + lo as float32, saturated at +-FLT_MAX; `src` may be `dst` (element-wise).
ClipReport denormalize_floats(const float* src, float* dst, int64_t count, double range, double lo) {
  constexpr double fmax = double(std::numeric_limits<float>::max());
  int64_t below = 0, above = 0;
#pragma omp parallel for schedule(static) reduction(+ : below, above) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const double y = double(src[i]) * range + lo;
    if (y > fmax) dst[i] = float(fmax), ++above;
    else if (y < -fmax) dst[i] = float(-fmax), ++below;
    else dst[i] = static_cast<float>(y);  // NaN stays NaN (inputs are checked upstream)
  }
  return ClipReport{below, above, count, -fmax, fmax};
}

}  // namespace

Volume denormalize(const Volume& f32, const Normalizer& n, DType out, ClipReport* report) {
  const float* src = f32.data<float>();
  Volume res(f32.shape(), out, f32.voxel_size(), f32.unit());
  const double range = n.hi > n.lo ? n.hi - n.lo : 1.0, lo = n.lo;
  const int64_t count = f32.numel();
  int64_t below = 0, above = 0;
  double vmin = 0, vmax = 0;
  visit_dtype(out, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* d = res.data<T>();
    if constexpr (std::is_floating_point_v<T>) {
      const ClipReport r = denormalize_floats(src, d, count, range, lo);
      below = r.below, above = r.above, vmin = r.min_value, vmax = r.max_value;
    } else {
      constexpr double hi_v = double(std::numeric_limits<T>::max());
      vmin = 0, vmax = hi_v;
#pragma omp parallel for schedule(static) reduction(+ : below, above) if (count > 65536)
      for (int64_t i = 0; i < count; ++i) {
        const double y = std::nearbyint(double(src[i]) * range + lo);  // round half to even
        if (y < 0 || std::isnan(y)) d[i] = 0, ++below;
        else if (y > hi_v) d[i] = static_cast<T>(hi_v), ++above;
        else d[i] = static_cast<T>(y);
      }
    }
  });
  if (report) *report = ClipReport{below, above, count, vmin, vmax};
  return res;
}

void denormalize_inplace(Volume& f32, const Normalizer& n, ClipReport* report) {
  const double range = n.hi > n.lo ? n.hi - n.lo : 1.0;
  const ClipReport r = denormalize_floats(f32.data<float>(), f32.data<float>(), f32.numel(), range, n.lo);
  if (report) *report = r;
}

}  // namespace isoprompt
