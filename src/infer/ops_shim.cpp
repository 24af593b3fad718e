// TEMPORARY stand-in for the ops module (branch `ops`), so infer builds before it lands.
// Only what infer uses; removed when ops is merged. Same conventions as ops.h.
#include <cmath>
#include <limits>
#include <type_traits>

#include "isoprompt/ops.h"
#include "isoprompt/stats.h"

namespace isoprompt {

const char* interp_name(Interp m) {
  switch (m) {
    case Interp::Nearest: return "nearest";
    case Interp::Linear: return "linear";
    case Interp::Cubic: return "cubic";
    case Interp::Lanczos3: return "lanczos";
  }
  return "?";
}

Interp parse_interp(const std::string& s) {
  if (s == "nearest") return Interp::Nearest;
  if (s == "linear") return Interp::Linear;
  if (s == "cubic") return Interp::Cubic;
  if (s == "lanczos" || s == "lanczos3") return Interp::Lanczos3;
  throw_input("unknown interpolation '{}': expected nearest, linear, cubic or lanczos", s);
}

namespace {
double kernel(Interp m, double t) {
  const double a = std::abs(t);
  switch (m) {
    case Interp::Nearest: return a < 0.5 ? 1.0 : 0.0;
    case Interp::Linear: return a < 1.0 ? 1.0 - a : 0.0;
    case Interp::Cubic: {
      constexpr double A = -0.5;
      if (a <= 1.0) return ((A + 2) * a - (A + 3)) * a * a + 1;
      if (a < 2.0) return ((A * a - 5 * A) * a + 8 * A) * a - 4 * A;
      return 0.0;
    }
    case Interp::Lanczos3: {
      if (a >= 3.0) return 0.0;
      if (a == 0) return 1.0;
      const double pi = 3.14159265358979323846;
      return std::sin(pi * t) / (pi * t) * std::sin(pi * t / 3) / (pi * t / 3);
    }
  }
  return 0.0;
}
}  // namespace

Volume upsample(const Volume& v, int axis, double factor, Interp interp, int64_t out_len) {
  if (axis != 0) throw_error("ops shim: only axis 0");
  const int64_t n = v.nz(), plane = v.ny() * v.nx();
  const int64_t m = out_len >= 0 ? out_len : std::llround(n * factor);
  VoxelSize vs = v.voxel_size();
  vs.z /= factor;
  Volume out(Shape3{m, v.ny(), v.nx()}, DType::F32, vs, v.unit());
  const Volume f = v.dtype() == DType::F32 ? v : v.astype(DType::F32);
  const float* src = f.data<float>();
  float* dst = out.data<float>();
  const double r = interp == Interp::Nearest ? 0.5 : interp == Interp::Linear ? 1 : interp == Interp::Cubic ? 2 : 3;
  for (int64_t i = 0; i < m; ++i) {
    const double x = (i + 0.5) / factor - 0.5;
    std::vector<std::pair<int64_t, float>> taps;
    double sum = 0;
    if (interp == Interp::Nearest) {
      taps.push_back({std::min<int64_t>(n - 1, std::max<int64_t>(0, (int64_t)std::floor(x + 0.5))), 1.f});
      sum = 1;
    } else {
      for (int64_t j = (int64_t)std::floor(x - r) ; j <= (int64_t)std::ceil(x + r); ++j) {
        const double w = kernel(interp, x - j);
        if (w == 0) continue;
        taps.push_back({std::min<int64_t>(n - 1, std::max<int64_t>(0, j)), (float)w});
        sum += w;
      }
    }
    if (interp == Interp::Lanczos3)
      for (auto& t : taps) t.second = (float)(t.second / sum);
    for (int64_t p = 0; p < plane; ++p) {
      float acc = 0;
      for (const auto& t : taps) acc += t.second * src[t.first * plane + p];
      dst[i * plane + p] = acc;
    }
  }
  return out;
}

Normalizer percentile_normalizer(const Volume& v, double pmin, double pmax) {
  const auto q = percentiles(v, {pmin, pmax});
  return {q[0], q[1]};
}

std::string ClipReport::summary() const {
  if (below + above == 0) return "";
  return fmt::format("clipped {:.2f}% of voxels ({} above {}, {} below {})",
                     100.0 * double(below + above) / double(total), above, max_value, below, min_value);
}

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
      for (int64_t i = 0; i < count; ++i) d[i] = static_cast<float>(double(src[i]) * range + lo);
      vmin = -INFINITY, vmax = INFINITY;
    } else {
      constexpr double hi_v = double(std::numeric_limits<T>::max());
      vmin = 0, vmax = hi_v;
      for (int64_t i = 0; i < count; ++i) {
        const double y = std::nearbyint(double(src[i]) * range + lo);
        if (y < 0 || std::isnan(y)) d[i] = 0, ++below;
        else if (y > hi_v) d[i] = static_cast<T>(hi_v), ++above;
        else d[i] = static_cast<T>(y);
      }
    }
  });
  if (report) *report = ClipReport{below, above, count, vmin, vmax};
  return res;
}

}  // namespace isoprompt
