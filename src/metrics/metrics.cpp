// Volume metrics and the evaluation protocol.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "isoprompt/log.h"
#include "isoprompt/progress.h"
#include "isoprompt/metrics.h"
#include "isoprompt/stats.h"

namespace isoprompt {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

void check_pair(const Volume& a, const Volume& b, const Volume* mask) {
  if (a.dtype() != DType::F32 || b.dtype() != DType::F32)
    throw_input("metrics need float32 volumes, got {} and {}", dtype_name(a.dtype()), dtype_name(b.dtype()));
  if (a.shape() != b.shape())
    throw_input("metrics need volumes of equal shape, got {} and {}", to_string(a.shape()), to_string(b.shape()));
  if (mask && (mask->shape() != a.shape() || mask->dtype() != DType::F32))
    throw_input("mask must be a float32 volume of shape {}, got {} {}", to_string(a.shape()),
                dtype_name(mask->dtype()), to_string(mask->shape()));
}

PlaneView<const float> cview(const Volume& v, Plane p, int64_t i) {
  const PlaneView<float> w = v.plane<float>(p, i);
  return {w.data, w.rows, w.cols, w.row_stride, w.col_stride};
}

double psnr_from_mse(double mse, double range) { return mse > 0 ? 10.0 * std::log10(range * range / mse) : kInf; }

struct ErrSums {
  double se = 0, ref2 = 0;
  int64_t n = 0;
};

ErrSums plane_err(const PlaneView<const float>& a, const PlaneView<const float>& b,
                  const PlaneView<const float>* m) {
  ErrSums s;
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t c = 0; c < a.cols; ++c) {
      if (m && (*m)(r, c) == 0.f) continue;
      const double x = a(r, c), d = double(b(r, c)) - x;
      s.se += d * d;
      s.ref2 += x * x;
      ++s.n;
    }
  return s;
}

ErrSums volume_err(const Volume& a, const Volume& b, const Volume* mask) {
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const float* pm = mask ? mask->data<float>() : nullptr;
  const int64_t n = a.numel();
  double se = 0, ref2 = 0;
  int64_t cnt = 0;
#pragma omp parallel for schedule(static) reduction(+ : se, ref2, cnt)
  for (int64_t i = 0; i < n; ++i) {
    if (pm && pm[i] == 0.f) continue;
    const double x = pa[i], d = double(pb[i]) - x;
    se += d * d;
    ref2 += x * x;
    ++cnt;
  }
  return {se, ref2, cnt};
}

}  // namespace

double mse(const Volume& a, const Volume& b, const Volume* mask) {
  check_pair(a, b, mask);
  const ErrSums s = volume_err(a, b, mask);
  if (s.n == 0) throw_input("the mask selects no voxels");
  return s.se / double(s.n);
}

double psnr(const Volume& a, const Volume& b, double data_range, const Volume* mask) {
  if (!(data_range > 0)) throw_input("psnr data range must be positive, got {}", data_range);
  return psnr_from_mse(mse(a, b, mask), data_range);
}

double nrmse(const Volume& a, const Volume& b, const Volume* mask) {
  check_pair(a, b, mask);
  const ErrSums s = volume_err(a, b, mask);
  if (s.n == 0) throw_input("the mask selects no voxels");
  return s.ref2 > 0 ? std::sqrt(s.se / s.ref2) : kInf;
}

double ssim(const Volume& a, const Volume& b, Plane p, double data_range, const Volume* mask) {
  check_pair(a, b, mask);
  const int64_t np = a.plane_count(p);
  std::vector<double> sums(np, 0.0);
  std::vector<int64_t> counts(np, 0);
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < np; ++i) {
    PlaneView<const float> mv;
    if (mask) mv = cview(*mask, p, i);
    ssim_2d(cview(a, p, i), cview(b, p, i), data_range, mask ? &mv : nullptr, &sums[i], &counts[i]);
  }
  double s = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < np; ++i) s += sums[i], n += counts[i];
  if (n == 0) throw_input("ssim: no {} plane interior voxel is inside the mask", plane_name(p));
  return s / double(n);
}

double ms_ssim(const Volume& a, const Volume& b, Plane p, double data_range, int scales, const Volume* mask) {
  check_pair(a, b, mask);
  const int64_t np = a.plane_count(p);
  std::vector<double> vals(np, std::nan(""));
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < np; ++i) {
    if (mask) {
      const ErrSums m = plane_err(cview(*mask, p, i), cview(*mask, p, i), nullptr);
      if (m.ref2 == 0) continue;  // no masked voxel in this plane
    }
    vals[i] = ms_ssim_2d(cview(a, p, i), cview(b, p, i), data_range, scales);
  }
  double s = 0;
  int64_t n = 0;
  for (double v : vals)
    if (!std::isnan(v)) s += v, ++n;
  if (n == 0) throw_input("ms-ssim: no {} plane contains masked voxels", plane_name(p));
  return s / double(n);
}

namespace {

// Per-orientation breakdown: mean of per-plane values.
MetricSet orientation_metrics(const Volume& a, const Volume& b, Plane p, double range, int scales,
                              const Volume* mask) {
  MetricSet m;
  const int64_t np = a.plane_count(p);
  std::vector<double> ps(np, std::nan("")), nr(np, std::nan(""));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < np; ++i) {
    PlaneView<const float> mv;
    if (mask) mv = cview(*mask, p, i);
    const ErrSums s = plane_err(cview(a, p, i), cview(b, p, i), mask ? &mv : nullptr);
    if (s.n == 0) continue;
    if (s.se > 0) ps[i] = psnr_from_mse(s.se / double(s.n), range);
    if (s.ref2 > 0) nr[i] = std::sqrt(s.se / s.ref2);
  }
  auto mean_or_inf = [](const std::vector<double>& v) {
    double s = 0;
    int64_t n = 0;
    for (double x : v)
      if (!std::isnan(x)) s += x, ++n;
    return n ? s / double(n) : kInf;
  };
  m.psnr = mean_or_inf(ps);
  m.nrmse = mean_or_inf(nr);
  m.ssim = ssim(a, b, p, range, mask);
  m.ms_ssim = ms_ssim(a, b, p, range, scales, mask);
  return m;
}

// float32 copy of v mapped by (x - lo) * scale and clipped to [0, 1]. (metrics depends
// on core only, so this does not call ops' normalize().)
Volume to_unit_range(const Volume& v, double lo, double scale) {
  Volume out(v.shape(), DType::F32, v.voxel_size(), v.unit());
  float* d = out.data<float>();
  const int64_t n = v.numel();
  visit_dtype(v.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* src = static_cast<const T*>(v.raw());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const double x = (double(src[i]) - lo) * scale;
      d[i] = static_cast<float>(x < 0 ? 0 : x > 1 ? 1 : x);
    }
  });
  return out;
}

// The first g.z x g.y x g.x voxels of v (origin 0).
Volume crop_origin(const Volume& v, const Shape3& g) {
  Volume out(g, v.dtype(), v.voxel_size(), v.unit());
  const size_t es = dtype_size(v.dtype());
  const auto* src = static_cast<const unsigned char*>(v.raw());
  auto* dst = static_cast<unsigned char*>(out.raw());
  const Shape3& s = v.shape();
  for (int64_t z = 0; z < g.z; ++z)
    for (int64_t y = 0; y < g.y; ++y)
      std::copy_n(src + ((z * s.y + y) * s.x) * es, g.x * es, dst + ((z * g.y + y) * g.x) * es);
  return out;
}

}  // namespace

EvalReport evaluate(const Volume& gt_in, const Volume& pred_in, const EvalOptions& opt) {
  Volume pred = pred_in;
  Volume gt = gt_in;
  if (gt.shape() != pred.shape()) {
    if (!opt.crop_to_gt)
      throw_input("shape mismatch: ground truth is {} but prediction is {} (crop the prediction with --crop-to-gt)",
                  to_string(gt.shape()), to_string(pred.shape()));
    // Both grids start at voxel 0 (cell-centred, see ops.h), so the common box at the
    // origin is registered: a prediction upsampled from floor(n / K) slices is shorter
    // than the GT by n mod K slices, which are dropped from the GT.
    const Shape3 g = gt.shape(), q = pred.shape();
    const Shape3 c{std::min(g.z, q.z), std::min(g.y, q.y), std::min(g.x, q.x)};
    if (q != c) {
      pred = crop_origin(pred, c);
      log_info("cropped the prediction from {} to {}", to_string(q), to_string(c));
    }
    if (g != c) {
      gt = crop_origin(gt, c);
      log_warn("the prediction is smaller than the ground truth: evaluating the common {} box (ground truth {})",
               to_string(c), to_string(g));
    }
  }
  const Shape3 s = gt.shape();
  if (s.z < 11 || s.y < 11 || s.x < 11)
    throw_input("evaluation needs at least 11 voxels along every axis for ssim, got {}", to_string(s));
  Volume mask;
  if (opt.mask) {
    if (opt.mask->shape() != gt_in.shape())
      throw_input("mask shape {} does not match the ground truth {}", to_string(opt.mask->shape()),
                  to_string(gt_in.shape()));
    mask = (opt.mask->shape() == s ? *opt.mask : crop_origin(*opt.mask, s)).astype(DType::F32);
  }
  EvalReport r;
  r.shape = s;
  Volume a, b;
  if (opt.norm == EvalOptions::GtPercentiles) {
    if (!(opt.pmin >= 0 && opt.pmax <= 100 && opt.pmin < opt.pmax))
      throw_input("percentiles must satisfy 0 <= low < high <= 100, got {} and {}", opt.pmin, opt.pmax);
    const std::vector<double> pc = percentiles(gt, {opt.pmin, opt.pmax});
    r.gt_lo = pc[0], r.gt_hi = pc[1];
    double scale = 1.0;
    if (r.gt_hi > r.gt_lo) scale = 1.0 / (r.gt_hi - r.gt_lo);
    else log_warn("the ground truth is constant between its percentiles: metrics are degenerate");
    a = to_unit_range(gt, r.gt_lo, scale);
    b = to_unit_range(pred, r.gt_lo, scale);
    r.data_range = 1.0;
  } else {
    a = gt.dtype() == DType::F32 ? gt : gt.astype(DType::F32);
    b = pred.dtype() == DType::F32 ? pred : pred.astype(DType::F32);
    double range = opt.data_range;
    if (range <= 0) {
      if (gt.dtype() == DType::U8) range = 255;
      else if (gt.dtype() == DType::U16) range = 65535;
      else {
        const float* p = a.data<float>();
        const auto mm = std::minmax_element(p, p + a.numel());
        range = double(*mm.second) - double(*mm.first);
      }
    }
    if (!(range > 0)) throw_input("data range must be positive, got {}", range);
    r.data_range = range;
  }
  const Volume* m = opt.mask ? &mask : nullptr;
  const int64_t min_side = std::min({s.z, s.y, s.x});
  r.ms_ssim_scales = ms_ssim_scales_for(min_side, min_side, opt.ms_ssim_scales);
  if (r.ms_ssim_scales < opt.ms_ssim_scales)
    log_info("ms-ssim: planes of {} px allow {} scales, not {}", min_side, r.ms_ssim_scales, opt.ms_ssim_scales);
  {
    const ErrSums e = volume_err(a, b, m);
    if (e.n == 0) throw_input("the mask selects no voxels");
    r.voxels = e.n;
    r.overall.psnr = psnr_from_mse(e.se / double(e.n), r.data_range);
    r.overall.nrmse = e.ref2 > 0 ? std::sqrt(e.se / e.ref2) : kInf;
  }
  if (opt.per_orientation) {
    Progress progress("evaluating", 3, "orientations");  // also the Ctrl-C safe points
    r.xy = orientation_metrics(a, b, Plane::XY, r.data_range, r.ms_ssim_scales, m);
    progress.advance(1, "xy");
    r.xz = orientation_metrics(a, b, Plane::XZ, r.data_range, r.ms_ssim_scales, m);
    progress.advance(1, "xz");
    r.yz = orientation_metrics(a, b, Plane::YZ, r.data_range, r.ms_ssim_scales, m);
    progress.finish();
    r.overall.ssim = (r.xy.ssim + r.xz.ssim + r.yz.ssim) / 3.0;
    r.overall.ms_ssim = (r.xy.ms_ssim + r.xz.ms_ssim + r.yz.ms_ssim) / 3.0;
  } else {
    double ss = 0, ms = 0;
    for (Plane p : {Plane::XY, Plane::XZ, Plane::YZ}) {
      ss += ssim(a, b, p, r.data_range, m);
      ms += ms_ssim(a, b, p, r.data_range, r.ms_ssim_scales, m);
    }
    r.overall.ssim = ss / 3.0;
    r.overall.ms_ssim = ms / 3.0;
  }
  return r;
}

}  // namespace isoprompt
