#include "isoprompt/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

// k-th smallest (0-based) finite value for each requested k.
std::vector<double> order_statistics(const Volume& v, const std::vector<int64_t>& ks, const IntensityStats& st) {
  std::vector<double> out(ks.size());
  const int64_t n = v.numel();
  if (v.dtype() != DType::F32) {
    // Integer data: an exact histogram of every possible value.
    const size_t nb = v.dtype() == DType::U8 ? 256 : 65536;
    std::vector<int64_t> hist(nb, 0);
    visit_dtype(v.dtype(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      if constexpr (!std::is_floating_point_v<T>) {
        const T* p = static_cast<const T*>(v.raw());
        for (int64_t i = 0; i < n; ++i) ++hist[p[i]];
      }
    });
    for (size_t j = 0; j < ks.size(); ++j) {
      int64_t acc = 0;
      for (size_t b = 0; b < nb; ++b) {
        acc += hist[b];
        if (acc > ks[j]) { out[j] = double(b); break; }
      }
    }
    return out;
  }
  // Float data: a fine histogram locates each order statistic's bin; a second pass
  // gathers only the values in the needed bins and selects exactly.
  const float* p = v.data<float>();
  const int nb = 1 << 16;
  const double lo = st.min, width = (st.max - st.min) / nb;
  auto bin_of = [&](float x) {
    if (width <= 0) return 0;
    return std::min(nb - 1, std::max(0, int((double(x) - lo) / width)));
  };
  std::vector<int64_t> hist(nb, 0);
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(p[i])) ++hist[bin_of(p[i])];
  std::vector<int64_t> start(nb + 1, 0);
  for (int b = 0; b < nb; ++b) start[b + 1] = start[b] + hist[b];
  std::vector<int> need_bin(ks.size());
  std::vector<char> needed(nb, 0);
  for (size_t j = 0; j < ks.size(); ++j) {
    need_bin[j] = int(std::upper_bound(start.begin(), start.end(), ks[j]) - start.begin()) - 1;
    needed[need_bin[j]] = 1;
  }
  std::vector<std::vector<float>> vals(nb);
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(p[i])) {
      const int b = bin_of(p[i]);
      if (needed[b]) vals[b].push_back(p[i]);
    }
  for (size_t j = 0; j < ks.size(); ++j) {
    auto& bv = vals[need_bin[j]];
    const int64_t local = ks[j] - start[need_bin[j]];
    std::nth_element(bv.begin(), bv.begin() + local, bv.end());
    out[j] = bv[local];
  }
  return out;
}

}  // namespace

std::vector<double> percentiles(const Volume& v, const std::vector<double>& pcts) {
  const IntensityStats st = intensity_stats(v);
  const int64_t n = st.finite_count;
  if (n == 0) throw_input("cannot compute percentiles: the volume has no finite voxels");
  std::vector<int64_t> ks;
  std::vector<double> fracs;
  for (double q : pcts) {
    if (!(q >= 0 && q <= 100)) throw_input("percentile {} is outside [0, 100]", q);
    const double pos = q / 100.0 * double(n - 1);
    const int64_t k = static_cast<int64_t>(std::floor(pos));
    ks.push_back(k);
    ks.push_back(std::min(k + 1, n - 1));
    fracs.push_back(pos - double(k));
  }
  const std::vector<double> os = order_statistics(v, ks, st);
  std::vector<double> out(pcts.size());
  for (size_t j = 0; j < pcts.size(); ++j) out[j] = os[2 * j] + fracs[j] * (os[2 * j + 1] - os[2 * j]);
  return out;
}

}  // namespace isoprompt
