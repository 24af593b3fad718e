// Degradation models, noise, the 2D training entry point, normalisation.
#include <gtest/gtest.h>

#include <limits>

#include <omp.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "isoprompt/ops.h"
#include "test_util.h"

using namespace isoprompt;

namespace {

Volume impulse_z(int64_t n, int64_t at) {
  Volume v({n, 2, 3}, DType::F32, {0.5, 1, 1});
  for (int64_t y = 0; y < 2; ++y)
    for (int64_t x = 0; x < 3; ++x) v.at<float>(at, y, x) = 1.f;
  return v;
}

Volume random_volume(Shape3 s, uint32_t seed) {
  Volume v(s, DType::F32);
  uint32_t st = seed;
  for (int64_t i = 0; i < v.numel(); ++i) {
    st = st * 1664525u + 1013904223u;
    v.data<float>()[i] = float(st >> 8) / float(1 << 24);
  }
  return v;
}

bool same(const Volume& a, const Volume& b) {
  if (a.shape() != b.shape()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.data<float>()[i] != b.data<float>()[i]) return false;
  return true;
}

}  // namespace

// The average model is the area average of downsample(), voxel step * K.
TEST(Degrade, AverageModelIsTheAreaAverage) {
  const Volume v = random_volume({23, 4, 5}, 1);
  for (double k : {2.0, 4.43}) {
    DegradeParams p;
    p.factor = k;
    const Volume d = degrade(v, 0, p);
    EXPECT_TRUE(same(d, downsample(v, 0, k)));
    EXPECT_EQ(d.voxel_size().z, k);
  }
}

// Psf model, sigma 1 px, K = 1: the impulse response is the normalised Gaussian
// sampled at integer offsets, truncated at 4 sigma.
TEST(Degrade, GaussianPsfImpulseResponse) {
  DegradeParams p;
  p.model = DegradeParams::Psf;
  p.factor = 1;
  p.psf_sigma_px = 1;
  const Volume d = degrade(impulse_z(21, 10), 0, p);
  double norm = 0;
  for (int k = -4; k <= 4; ++k) norm += std::exp(-0.5 * k * k);
  for (int z = 0; z < 21; ++z) {
    const int t = z - 10;
    const double want = std::abs(t) <= 4 ? std::exp(-0.5 * t * t) / norm : 0.0;
    EXPECT_NEAR(d.at<float>(z, 1, 2), want, 1e-7) << z;
  }
  // K = 2 samples the blurred line at the K-grid centres 2j + 0.5.
  p.factor = 2;
  const Volume d2 = degrade(impulse_z(20, 9), 0, p);
  ASSERT_EQ(d2.nz(), 10);
  EXPECT_EQ(d2.voxel_size().z, 1.0);
  for (int j = 0; j < 10; ++j) {
    const double c = 2 * j + 0.5;
    double sum = 0;
    for (int k = int(std::ceil(c - 4)); k <= int(std::floor(c + 4)); ++k) sum += std::exp(-0.5 * (k - c) * (k - c));
    const double want = std::abs(9 - c) <= 4 ? std::exp(-0.5 * (9 - c) * (9 - c)) / sum : 0.0;
    EXPECT_NEAR(d2.at<float>(j, 0, 0), want, 1e-7) << j;
  }
}

// FWHM in micrometres converts with the voxel step: FWHM = 2 sqrt(2 ln 2) sigma.
TEST(Degrade, FwhmConvertsWithTheVoxelStep) {
  const Volume v = random_volume({30, 3, 3}, 2);  // z step 1
  Volume v2 = v.clone();
  v2.set_voxel_size({0.5, 1, 1});
  DegradeParams ps, pf;
  ps.model = pf.model = DegradeParams::Psf;
  ps.factor = pf.factor = 3;
  ps.psf_sigma_px = 2;
  pf.psf_fwhm_um = 2 * std::sqrt(2 * std::log(2.0)) * 1.0;  // sigma 1 um = 2 px at 0.5 um
  const Volume a = degrade(v, 0, ps), b = degrade(v2, 0, pf);
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_NEAR(a.data<float>()[i], b.data<float>()[i], 1e-6);
}

// A measured profile [0, 1, 2, 1, 0] is the 3-tap blur [1/4, 1/2, 1/4].
TEST(Degrade, MeasuredProfile) {
  DegradeParams p;
  p.model = DegradeParams::Psf;
  p.factor = 1;
  p.psf_profile = {0, 1, 2, 1, 0};
  const Volume d = degrade(impulse_z(9, 4), 0, p);
  const std::vector<float> want = {0, 0, 0, 0.25f, 0.5f, 0.25f, 0, 0, 0};
  for (int z = 0; z < 9; ++z) EXPECT_FLOAT_EQ(d.at<float>(z, 0, 0), want[z]) << z;
  // At the edge the blur clamps: voxel 0 of an impulse at 0 keeps 1/2 + 1/4.
  const Volume e = degrade(impulse_z(9, 0), 0, p);
  EXPECT_FLOAT_EQ(e.at<float>(0, 0, 0), 0.75f);
  EXPECT_FLOAT_EQ(e.at<float>(1, 0, 0), 0.25f);
}

TEST(Degrade, ReadsProfileTextAndRejectsGarbage) {
  test::TempDir tmp;
  const std::string f = tmp.file("psf.txt");
  std::FILE* fp = std::fopen(f.c_str(), "w");
  std::fputs("# z profile\n0.1, 0.5\n1.0\t0.5 0.1\n", fp);
  std::fclose(fp);
  EXPECT_EQ(read_psf_profile_text(f), (std::vector<double>{0.1, 0.5, 1.0, 0.5, 0.1}));
  fp = std::fopen(f.c_str(), "w");
  std::fputs("0.1\n0.5x\n", fp);
  std::fclose(fp);
  try {
    read_psf_profile_text(f);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "psf profile file " + f + " line 2: '0.5x' is not a number");
  }
  EXPECT_THROW(read_psf_profile_text(tmp.file("missing.txt")), InputError);
}

TEST(Degrade, ValidatesParameters) {
  DegradeParams p;
  p.factor = 0.5;
  EXPECT_THROW(validate(p), InputError);
  p.factor = 2;
  p.model = DegradeParams::Psf;
  EXPECT_THROW(validate(p), InputError);  // no width
  p.psf_sigma_px = 1;
  p.psf_fwhm_um = 1;
  EXPECT_THROW(validate(p), InputError);  // two widths
  p.psf_fwhm_um = 0;
  EXPECT_NO_THROW(validate(p));
  p.poisson_peak = -1;
  EXPECT_THROW(validate(p), InputError);
}

// Noise: same seed -> same noise whatever the thread count; another seed differs.
TEST(Degrade, SeededNoiseIsDeterministic) {
  const Volume v = random_volume({40, 64, 64}, 3);
  DegradeParams p;
  p.factor = 2;
  p.poisson_peak = 50;
  p.gaussian_sigma = 0.01;
  p.seed = 42;
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Volume a = degrade(v, 0, p);
  omp_set_num_threads(2);
  const Volume b = degrade(v, 0, p);
  omp_set_num_threads(threads);
  EXPECT_TRUE(same(a, b));
  p.seed = 43;
  EXPECT_FALSE(same(a, degrade(v, 0, p)));
  p.poisson_peak = p.gaussian_sigma = 0;
  EXPECT_TRUE(same(degrade(v, 0, p), downsample(v, 0, 2)));
}

// Noise statistics: Poisson keeps the mean (constant 0.5 at peak 100: 50 photons,
// 40000 voxels, std of the mean 0.0004); Gaussian sigma 0.1 adds that std.
TEST(Degrade, NoiseStatistics) {
  Volume v({2, 200, 200}, DType::F32);
  for (int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] = 0.5f;
  v.data<float>()[0] = 1.0f;  // the max sets the photon scale: 1.0 -> 100 photons
  DegradeParams p;
  p.factor = 2;  // z: 2 -> 1 plane, 0.5 everywhere but voxel 0 (0.75)
  p.poisson_peak = 100;
  p.seed = 1;
  Volume d = degrade(v, 0, p);
  double sum = 0, sum2 = 0;
  const int64_t n = d.numel();
  for (int64_t i = 1; i < n; ++i) sum += d.data<float>()[i], sum2 += double(d.data<float>()[i]) * d.data<float>()[i];
  double mean = sum / double(n - 1), var = sum2 / double(n - 1) - mean * mean;
  EXPECT_NEAR(mean, 0.5, 0.003);
  // 0.5 is 66.7 photons at peak 100 / max 0.75: variance 66.7 / 133.3^2.
  EXPECT_NEAR(var, (0.5 * 100 / 0.75) / (100 / 0.75) / (100 / 0.75), 0.0003);
  p.poisson_peak = 0;
  p.gaussian_sigma = 0.1;
  d = degrade(v, 0, p);
  sum = sum2 = 0;
  for (int64_t i = 1; i < n; ++i) sum += d.data<float>()[i], sum2 += double(d.data<float>()[i]) * d.data<float>()[i];
  mean = sum / double(n - 1), var = sum2 / double(n - 1) - mean * mean;
  EXPECT_NEAR(mean, 0.5, 0.003);
  EXPECT_NEAR(std::sqrt(var), 0.1, 0.002);
}

// The 2D training entry point is degrade() + upsample() on a 1-plane volume, bit for bit.
TEST(Degrade, RestoreRowsMatchesTheVolumePath) {
  const int64_t rows = 37, cols = 11;
  const Volume img = random_volume({1, rows, cols}, 4);
  for (auto model : {DegradeParams::Average, DegradeParams::Psf})
  for (Interp interp : {Interp::Keys, Interp::BSpline3}) {
    DegradeParams p;
    p.model = model;
    p.factor = 4.43;
    if (model == DegradeParams::Psf) p.psf_fwhm_um = 1.2;
    p.gaussian_sigma = 0.05;
    p.seed = 9;
    std::vector<float> out(rows * cols);
    degrade_restore_rows(img.data<float>(), rows, cols, out.data(), p, interp, 0.3);
    Volume img2 = img;
    img2.set_voxel_size({1, 0.3, 1});
    const Volume d = degrade(img2, 1, p);
    ASSERT_EQ(d.ny(), 8);
    const Volume u = upsample(d, 1, 4.43, interp, rows);
    for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(out[i], u.data<float>()[i]) << i;
  }
}

// Normalisation: percentiles of the whole volume; the inverse rounds back exactly.
TEST(Normalize, RoundTripAndClipReport) {
  Volume v({1, 10, 10}, DType::U16, {2, 1, 1});
  for (int i = 0; i < 100; ++i) v.data<uint16_t>()[i] = uint16_t(i * 600);
  const Normalizer n = percentile_normalizer(v, 1, 99.8);
  EXPECT_DOUBLE_EQ(n.lo, 0.99 * 600);       // numpy linear: rank 0.99
  EXPECT_NEAR(n.hi, 98.802 * 600, 1e-9);  // rank 98.802
  Volume f = normalize(v, n);
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.voxel_size(), v.voxel_size());
  EXPECT_NEAR(f.data<float>()[50], (30000 - n.lo) / (n.hi - n.lo), 1e-6);
  ClipReport rep;
  Volume back = denormalize(f, n, DType::U16, &rep);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(back.data<uint16_t>()[i], v.data<uint16_t>()[i]);
  EXPECT_EQ(rep.below + rep.above, 0);
  EXPECT_EQ(rep.summary(), "");
  // Push two voxels past 65535 and one below 0.
  f.data<float>()[0] = -0.5f;
  f.data<float>()[1] = 1.2f;
  f.data<float>()[2] = 3.0f;
  back = denormalize(f, n, DType::U16, &rep);
  EXPECT_EQ(back.data<uint16_t>()[0], 0);
  EXPECT_EQ(back.data<uint16_t>()[2], 65535);
  EXPECT_EQ(rep.above, 2);
  EXPECT_EQ(rep.below, 1);
  EXPECT_EQ(rep.summary(), "clipped 3% of voxels (2 above 65535, 1 below 0)");
  // float32 output saturates at the float range: finite data near +-3e38 and a network's
  // small overshoot must not become Inf. The same in place.
  {
    const Normalizer wide{-3e38, 3e38};
    Volume y({1, 1, 4}, DType::F32);
    float* p = y.data<float>();
    p[0] = 0.5f, p[1] = 1.2f, p[2] = -0.2f, p[3] = 0.75f;
    const Volume z = denormalize(y, wide, DType::F32, &rep);
    EXPECT_EQ(z.data<float>()[0], 0.0f);
    EXPECT_EQ(z.data<float>()[1], std::numeric_limits<float>::max());
    EXPECT_EQ(z.data<float>()[2], -std::numeric_limits<float>::max());
    EXPECT_EQ(z.data<float>()[3], 1.5e38f);
    EXPECT_EQ(rep.above, 1);
    EXPECT_EQ(rep.below, 1);
    ClipReport in_place;
    denormalize_inplace(y, wide, &in_place);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(y.data<float>()[i], z.data<float>()[i]) << i;
    EXPECT_EQ(in_place.above, 1);
    EXPECT_EQ(in_place.below, 1);
  }
  // In place.
  Volume g = v.astype(DType::F32);
  normalize_inplace(g, n);
  const Volume h = normalize(v, n);
  for (int i = 0; i < 100; ++i) ASSERT_FLOAT_EQ(g.data<float>()[i], h.data<float>()[i]);
  EXPECT_EQ(clip_inplace(g, 0.f, 1.f), 2);  // voxel 0 (below lo) and voxel 99 (above hi)
  EXPECT_THROW(percentile_normalizer(v, 50, 10), InputError);
}
