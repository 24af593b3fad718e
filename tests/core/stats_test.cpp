#include <gtest/gtest.h>

#include <cmath>

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

TEST(Stats, RejectsBadPercentile) {
  Volume v({1, 1, 2}, DType::U8);
  EXPECT_THROW(percentiles(v, {101}), InputError);
}
