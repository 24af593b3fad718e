#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/stats.h"

using namespace isoprompt;

TEST(Stats, IntegerPercentilesMatchNumpyLinear) {
  // numpy.percentile([0..9], [0, 25, 50, 99.8]) = [0, 2.25, 4.5, 8.982]
  Volume v({1, 2, 5}, DType::U16);
  for (int i = 0; i < 10; ++i) v.data<uint16_t>()[i] = uint16_t(9 - i);
  auto p = percentiles(v, {0, 25, 50, 99.8});
  EXPECT_DOUBLE_EQ(p[0], 0.0);
  EXPECT_DOUBLE_EQ(p[1], 2.25);
  EXPECT_DOUBLE_EQ(p[2], 4.5);
  EXPECT_NEAR(p[3], 8.982, 1e-12);
}

TEST(Stats, FloatPercentilesExcludeNanAndCountThem) {
  Volume v({1, 1, 6}, DType::F32);
  float* d = v.data<float>();
  d[0] = 3.5f; d[1] = NAN; d[2] = -1.f; d[3] = INFINITY; d[4] = 10.f; d[5] = 0.25f;
  auto s = intensity_stats(v);
  EXPECT_EQ(s.nan_count, 1);
  EXPECT_EQ(s.inf_count, 1);
  EXPECT_EQ(s.finite_count, 4);
  EXPECT_DOUBLE_EQ(s.min, -1.0);
  EXPECT_DOUBLE_EQ(s.max, 10.0);
  // finite sorted: -1, 0.25, 3.5, 10; 50th percentile = (0.25+3.5)/2
  auto p = percentiles(v, {50, 100});
  EXPECT_DOUBLE_EQ(p[0], 1.875);
  EXPECT_DOUBLE_EQ(p[1], 10.0);
}

// The streaming form visits slabs (z ranges) in an arbitrary order: the same values,
// exactly, as the whole volume, for integer and float data (float: three passes).
TEST(Stats, PercentilesOfSlabsEqualTheWholeVolumes) {
  for (DType t : {DType::U16, DType::F32}) {
    Volume v({7, 5, 9}, t);
    uint64_t state = 12345;
    for (int64_t i = 0; i < v.numel(); ++i) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      const double r = double(state >> 11) / double(1ULL << 53);
      if (t == DType::U16) v.data<uint16_t>()[i] = uint16_t(r * r * 60000);
      else v.data<float>()[i] = i == 17 ? NAN : float(std::exp(8 * r) - 3);
    }
    const std::vector<double> q{0, 1, 37.5, 99.8, 100};
    const std::vector<double> whole = percentiles(v, q);
    int visits = 0;
    const std::vector<double> slabs = percentiles_of_slabs(
        t,
        [&](const std::function<void(const Volume&)>& f) {
          ++visits;
          for (int64_t z0 : {4, 0, 3, 6}) {  // slabs [4,6), [0,3), [3,4), [6,7)
            const int64_t n = z0 == 4 ? 2 : z0 == 0 ? 3 : 1;
            Volume s({n, 5, 9}, t);
            std::memcpy(s.raw(), static_cast<const uint8_t*>(v.raw()) + z0 * 45 * dtype_size(t),
                        s.size_bytes());
            f(s);
          }
        },
        q);
    EXPECT_EQ(visits, t == DType::F32 ? 3 : 1);
    for (size_t j = 0; j < q.size(); ++j) EXPECT_EQ(slabs[j], whole[j]) << dtype_name(t) << " " << q[j];
    EXPECT_LT(whole[0], whole[2]);  // a volume with a spread, so equality is not trivial
  }
}

TEST(Stats, RejectsBadPercentile) {
  Volume v({1, 1, 2}, DType::U8);
  EXPECT_THROW(percentiles(v, {101}), InputError);
}

TEST(Checked, MultiplicationAndAdditionReportOverflow) {
  EXPECT_EQ(checked_mul(int64_t(1) << 31, int64_t(1) << 31), int64_t(1) << 62);
  EXPECT_FALSE(checked_mul(int64_t(1) << 32, int64_t(1) << 32));
  EXPECT_FALSE(checked_mul(7, 7905747460161236407));  // wraps to 1 unchecked
  EXPECT_FALSE(checked_add(INT64_MAX, 1));
  EXPECT_EQ(checked_add(-5, 3), -2);
  EXPECT_EQ(checked_product({2, 3, 7}), 42);
  EXPECT_FALSE(checked_product({2, 3, 7}, 41));  // over the limit
  EXPECT_FALSE(checked_product({4294967296, 4294967296, 1}));
  EXPECT_EQ(checked_product(std::vector<int64_t>{}), 1);
}

TEST(Stats, NonFiniteVoxelsAreFoundAndReplacedByTheirNeighboursMedian) {
  Volume v({3, 3, 3}, DType::F32);
  float* d = v.data<float>();
  for (int i = 0; i < 27; ++i) d[i] = float(i);
  d[13] = NAN;      // the centre: neighbours 1..26 but 13 (0 is Inf): 25 values, median 14
  d[0] = INFINITY;  // a corner: neighbours 1, 3, 4, 9, 10, 12 (13 is NaN): median (4 + 9) / 2
  const NonFiniteReport found = find_non_finite(v);
  EXPECT_EQ(found.nan_count, 1);
  EXPECT_EQ(found.inf_count, 1);
  EXPECT_EQ(found.first_z, 0);
  EXPECT_EQ(found.first_y, 0);
  EXPECT_EQ(found.first_x, 0);
  const NonFiniteReport replaced = replace_non_finite(v);
  EXPECT_EQ(replaced.count(), 2);
  EXPECT_EQ(d[13], 14.0f);  // from the original values: the corner's Inf is excluded, not its replacement
  EXPECT_EQ(d[0], 6.5f);
  EXPECT_EQ(find_non_finite(v).count(), 0);
  // No finite neighbour: the median of the whole volume.
  Volume w({1, 1, 7}, DType::F32);
  float* e = w.data<float>();
  const float vals[7] = {NAN, NAN, NAN, 1.f, 2.f, 30.f, NAN};
  std::copy(vals, vals + 7, e);
  replace_non_finite(w);
  EXPECT_EQ(e[0], 2.0f);  // x = 0 and 1 see only NaN: the median of {1, 2, 30}
  EXPECT_EQ(e[1], 2.0f);
  EXPECT_EQ(e[2], 1.0f);  // sees x = 3
  EXPECT_EQ(e[6], 30.0f);
  Volume all_nan({1, 1, 2}, DType::F32);
  all_nan.data<float>()[0] = all_nan.data<float>()[1] = NAN;
  EXPECT_THROW(replace_non_finite(all_nan), InputError);
}
