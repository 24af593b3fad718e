#include "isoprompt/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/nonfinite.h"
#include "isoprompt/error.h"

namespace isoprompt {

IntensityStats intensity_stats(const Volume& v) {
  IntensityStats s;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0, sum2 = 0;
  int64_t finite = 0, nans = 0, infs = 0;
  const int64_t n = v.numel();
  visit_dtype(v.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* p = static_cast<const T*>(v.raw());
#pragma omp parallel for reduction(min : lo) reduction(max : hi) reduction(+ : sum, sum2, finite, nans, infs)
    for (int64_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(p[i]);
      if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(x)) { ++nans; continue; }
        if (std::isinf(x)) { ++infs; continue; }
      }
      lo = std::min(lo, x);
      hi = std::max(hi, x);
      sum += x;
      sum2 += x * x;
      ++finite;
    }
  });
  s.finite_count = finite;
  s.nan_count = nans;
  s.inf_count = infs;
  if (finite > 0) {
    s.min = lo;
    s.max = hi;
    s.mean = sum / double(finite);
    s.std = std::sqrt(std::max(0.0, sum2 / double(finite) - s.mean * s.mean));
  }
  return s;
}

namespace {

template <class F>
void for_each_value(const Volume& v, F&& f) {
  const int64_t n = v.numel();
  visit_dtype(v.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* p = static_cast<const T*>(v.raw());
    for (int64_t i = 0; i < n; ++i) f(p[i]);
  });
}

}  // namespace

// The k-th smallest (0-based) finite values from slabs visited once (integers: an exact
// histogram of every possible value) or three times (float32: min, max and count; then a
// fine histogram that locates each order statistic's bin; then only the values in the
// needed bins, selected exactly). Never a sorted copy of the volume.
std::vector<double> percentiles_of_slabs(DType dtype, const SlabVisitor& visit,
                                         const std::vector<double>& pcts) {
  for (double q : pcts)
    if (!(q >= 0 && q <= 100)) throw_input("percentile {} is outside [0, 100]", q);
  std::vector<int64_t> ks;  // floor(pos) and the next order statistic, per percentile
  std::vector<double> fracs, os;
  auto plan = [&](int64_t n) {
    if (n == 0) throw_input("cannot compute percentiles: the volume has no finite voxels");
    for (double q : pcts) {
      const double pos = q / 100.0 * double(n - 1);
      const int64_t k = static_cast<int64_t>(std::floor(pos));
      ks.push_back(k);
      ks.push_back(std::min(k + 1, n - 1));
      fracs.push_back(pos - double(k));
    }
    os.assign(ks.size(), 0.0);
  };
  if (dtype != DType::F32) {
    const size_t nb = dtype == DType::U8 ? 256 : 65536;
    std::vector<int64_t> hist(nb, 0);
    visit([&](const Volume& s) {
      for_each_value(s, [&](auto x) {
        if constexpr (!std::is_floating_point_v<decltype(x)>) ++hist[x];
      });
    });
    int64_t n = 0;
    for (int64_t h : hist) n += h;
    plan(n);
    for (size_t j = 0; j < ks.size(); ++j) {
      int64_t acc = 0;
      for (size_t b = 0; b < nb; ++b) {
        acc += hist[b];
        if (acc > ks[j]) {
          os[j] = double(b);
          break;
        }
      }
    }
  } else {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    int64_t n = 0;
    visit([&](const Volume& s) {
      const float* p = s.data<float>();
      const int64_t m = s.numel();
      double l = lo, h = hi;
      int64_t c = 0;
#pragma omp parallel for reduction(min : l) reduction(max : h) reduction(+ : c)
      for (int64_t i = 0; i < m; ++i) {
        if (!std::isfinite(p[i])) continue;
        l = std::min(l, double(p[i]));
        h = std::max(h, double(p[i]));
        ++c;
      }
      lo = l;
      hi = h;
      n += c;
    });
    plan(n);
    const int nb = 1 << 16;
    const double width = (hi - lo) / nb;
    auto bin_of = [&](float x) {
      if (width <= 0) return 0;
      return std::min(nb - 1, std::max(0, int((double(x) - lo) / width)));
    };
    std::vector<int64_t> hist(nb, 0);
    visit([&](const Volume& s) {
      for_each_value(s, [&](float x) {
        if (std::isfinite(x)) ++hist[bin_of(x)];
      });
    });
    std::vector<int64_t> start(nb + 1, 0);
    for (int b = 0; b < nb; ++b) start[b + 1] = start[b] + hist[b];
    std::vector<int> need_bin(ks.size());
    std::vector<char> needed(nb, 0);
    for (size_t j = 0; j < ks.size(); ++j) {
      need_bin[j] = int(std::upper_bound(start.begin(), start.end(), ks[j]) - start.begin()) - 1;
      needed[need_bin[j]] = 1;
    }
    std::vector<std::vector<float>> vals(nb);
    visit([&](const Volume& s) {
      for_each_value(s, [&](float x) {
        if (!std::isfinite(x)) return;
        const int b = bin_of(x);
        if (needed[b]) vals[b].push_back(x);
      });
    });
    for (size_t j = 0; j < ks.size(); ++j) {
      auto& bv = vals[need_bin[j]];
      const int64_t local = ks[j] - start[need_bin[j]];
      std::nth_element(bv.begin(), bv.begin() + local, bv.end());
      os[j] = bv[local];
    }
  }
  std::vector<double> out(pcts.size());
  for (size_t j = 0; j < pcts.size(); ++j)
    out[j] = os[2 * j] + fracs[j] * (os[2 * j + 1] - os[2 * j]);
  return out;
}

std::vector<double> percentiles(const Volume& v, const std::vector<double>& pcts) {
  return percentiles_of_slabs(
      v.dtype(), [&](const std::function<void(const Volume&)>& f) { f(v); }, pcts);
}

NonFiniteReport find_non_finite(const Volume& v) {
  NonFiniteReport r;
  if (v.dtype() != DType::F32) return r;
  const float* p = v.data<float>();
  const int64_t n = v.numel();
  int64_t nan = 0, inf = 0, first = n;
#pragma omp parallel for reduction(+ : nan, inf) reduction(min : first) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const bool is_nan = std::isnan(p[i]), is_inf = std::isinf(p[i]);
    nan += is_nan;
    inf += is_inf;
    if ((is_nan || is_inf) && i < first) first = i;
  }
  r.nan_count = nan;
  r.inf_count = inf;
  if (first < n) {
    const int64_t plane = v.ny() * v.nx();
    r.first_z = first / plane;
    r.first_y = first % plane / v.nx();
    r.first_x = first % v.nx();
  }
  return r;
}

NonFiniteReport replace_non_finite(Volume& v) {
  const NonFiniteReport r = find_non_finite(v);
  if (r.count() == 0) return r;
  if (r.count() == v.numel())
    throw_input("the volume has no finite voxel ({} NaN, {} Inf): nothing to replace them with",
                r.nan_count, r.inf_count);
  core::replace_non_finite_planes(v, 0, v.nz(), true);
  return r;
}

bool core::replace_non_finite_planes(Volume& v, int64_t z_begin, int64_t z_end, bool whole,
                                     int64_t* isolated) {
  float* p = v.data<float>();
  const int64_t nz = v.nz(), ny = v.ny(), nx = v.nx(), n = v.numel();
  auto median = [](std::vector<float>& vals) {
    const size_t mid = vals.size() / 2;
    std::nth_element(vals.begin(), vals.begin() + static_cast<std::ptrdiff_t>(mid), vals.end());
    const float upper = vals[mid];
    if (vals.size() % 2) return upper;
    const float lower = *std::max_element(vals.begin(), vals.begin() + static_cast<std::ptrdiff_t>(mid));
    return static_cast<float>(0.5 * (double(lower) + double(upper)));
  };
  std::vector<int64_t> bad;
  for (int64_t i = z_begin * ny * nx; i < z_end * ny * nx; ++i)
    if (!std::isfinite(p[i])) bad.push_back(i);
  // Computed from the original values first, written afterwards.
  std::vector<float> repl(bad.size());
  std::vector<float> vals;
  float global = NAN;
  for (size_t k = 0; k < bad.size(); ++k) {
    const int64_t i = bad[k], z = i / (ny * nx), y = i / nx % ny, x = i % nx;
    vals.clear();
    for (int64_t dz = -1; dz <= 1; ++dz)
      for (int64_t dy = -1; dy <= 1; ++dy)
        for (int64_t dx = -1; dx <= 1; ++dx) {
          const int64_t zz = z + dz, yy = y + dy, xx = x + dx;
          if (zz < 0 || zz >= nz || yy < 0 || yy >= ny || xx < 0 || xx >= nx) continue;
          const float q = p[(zz * ny + yy) * nx + xx];
          if (std::isfinite(q)) vals.push_back(q);
        }
    if (vals.empty() && !whole) {
      if (isolated) *isolated = i;
      return false;
    }
    if (vals.empty() && std::isnan(global)) {
      std::vector<float> all;
      for (int64_t j = 0; j < n; ++j)
        if (std::isfinite(p[j])) all.push_back(p[j]);
      if (all.empty())
        throw_input("the volume has no finite voxel: nothing to replace its NaN/Inf voxels with");
      global = median(all);
    }
    repl[k] = vals.empty() ? global : median(vals);
  }
  for (size_t k = 0; k < bad.size(); ++k) p[bad[k]] = repl[k];
  return true;
}

}  // namespace isoprompt
