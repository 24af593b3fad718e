// Phantom generator: determinism, statistics of each object class, optical model.
#include "isoprompt/phantom.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <queue>

namespace isoprompt {
namespace {

bool identical(const Volume& a, const Volume& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

// Sizes of the 6-connected components of {v > thr}.
std::vector<int64_t> components(const Volume& v, float thr) {
  const Shape3 s = v.shape();
  const float* d = v.data<float>();
  std::vector<uint8_t> seen(static_cast<size_t>(v.numel()), 0);
  std::vector<int64_t> sizes;
  for (int64_t i = 0; i < v.numel(); ++i) {
    if (seen[i] || d[i] <= thr) continue;
    int64_t n = 0;
    std::queue<int64_t> q;
    q.push(i);
    seen[i] = 1;
    while (!q.empty()) {
      const int64_t j = q.front();
      q.pop();
      ++n;
      const int64_t z = j / (s.y * s.x), y = (j / s.x) % s.y, x = j % s.x;
      const int64_t nb[6][3] = {{z - 1, y, x}, {z + 1, y, x}, {z, y - 1, x}, {z, y + 1, x}, {z, y, x - 1}, {z, y, x + 1}};
      for (const auto& c : nb) {
        if (c[0] < 0 || c[1] < 0 || c[2] < 0 || c[0] >= s.z || c[1] >= s.y || c[2] >= s.x) continue;
        const int64_t k = (c[0] * s.y + c[1]) * s.x + c[2];
        if (!seen[k] && d[k] > thr) {
          seen[k] = 1;
          q.push(k);
        }
      }
    }
    sizes.push_back(n);
  }
  return sizes;
}

double fraction_above(const Volume& v, float thr) {
  const float* d = v.data<float>();
  int64_t n = 0;
  for (int64_t i = 0; i < v.numel(); ++i) n += d[i] > thr;
  return double(n) / v.numel();
}

// Mean squared difference of neighbours along axis 0 (z) or 2 (x).
double gradient_energy(const Volume& v, int axis) {
  const Shape3 s = v.shape();
  double acc = 0;
  int64_t n = 0;
  for (int64_t z = 0; z + (axis == 0) < s.z; ++z)
    for (int64_t y = 0; y < s.y; ++y)
      for (int64_t x = 0; x + (axis == 2) < s.x; ++x) {
        const double d = v.at<float>(z + (axis == 0), y, x + (axis == 2)) - v.at<float>(z, y, x);
        acc += d * d;
        ++n;
      }
  return acc / n;
}

PhantomParams small(PhantomKind k, uint64_t seed, int64_t n = 48) {
  PhantomParams p;
  p.kind = k;
  p.seed = seed;
  p.size = {n, n, n};
  return p;
}

// splitmix64 reference sequence for seed 0 (Vigna's published generator).
TEST(SplitMix, MatchesReferenceSequence) {
  SplitMix r(0);
  EXPECT_EQ(r.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(r.next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(r.next(), 0x06c45d188009454fULL);
}

TEST(SplitMix, UniformAndRandintStayInRange) {
  SplitMix r(5);
  for (int i = 0; i < 1000; ++i) {
    const double u = r.uniform(2, 3);
    EXPECT_GE(u, 2);
    EXPECT_LT(u, 3);
    const int64_t k = r.randint(-2, 2);
    EXPECT_GE(k, -2);
    EXPECT_LE(k, 2);
  }
}

// Same seed -> bitwise identical for every kind; another seed -> different voxels.
TEST(Phantom, DeterministicPerSeedForEveryKind) {
  for (PhantomKind k : all_phantom_kinds()) {
    SCOPED_TRACE(phantom_kind_name(k));
    const Volume a = make_phantom(small(k, 11));
    const Volume b = make_phantom(small(k, 11));
    const Volume c = make_phantom(small(k, 12));
    EXPECT_TRUE(identical(a, b));
    EXPECT_FALSE(identical(a, c));
    EXPECT_EQ(a.dtype(), DType::F32);
    EXPECT_EQ(a.shape(), (Shape3{48, 48, 48}));
    EXPECT_EQ(a.voxel_size(), (VoxelSize{0.1, 0.1, 0.1}));
    const auto [lo, hi] = std::minmax_element(a.data<float>(), a.data<float>() + a.numel());
    EXPECT_GE(*lo, 0.f);
    EXPECT_LE(*hi, 1.f);
    EXPECT_GT(*hi, 0.3f);  // something bright was drawn
  }
}

// The thread count does not change a single bit (counter-based noise, serial object placement).
TEST(Phantom, IndependentOfThreadCount) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Volume a = make_phantom(small(PhantomKind::Mixed, 3, 40));
  OpticsParams o;
  o.psf_axial_fwhm_um = 0.5;
  o.poisson_peak = 50;
  o.gaussian_sigma = 0.01;
  o.z_factor = 2;
  const Volume ao = apply_optics(a, o);
  omp_set_num_threads(2);
  const Volume b = make_phantom(small(PhantomKind::Mixed, 3, 40));
  const Volume bo = apply_optics(b, o);
  omp_set_num_threads(saved);
  EXPECT_TRUE(identical(a, b));
  EXPECT_TRUE(identical(ao, bo));
}

// Filaments are thin: a small fraction of voxels is bright, but the curves are long and connected.
TEST(Phantom, FilamentsAreSparseAndLong) {
  PhantomParams p = small(PhantomKind::Filaments, 1, 64);
  p.n_filaments = 6;
  const Volume v = make_phantom(p);
  const double f = fraction_above(v, 0.2f);
  EXPECT_GT(f, 0.001);
  EXPECT_LT(f, 0.08);
  // The largest component spans many voxels (a curve), far more than a Gaussian spot.
  const auto comp = components(v, 0.2f);
  ASSERT_FALSE(comp.empty());
  EXPECT_GT(*std::max_element(comp.begin(), comp.end()), 300);
  EXPECT_LE(comp.size(), 60u);
}

// Nuclei: the requested number of separate blob-sized bright regions.
TEST(Phantom, NucleiAreSeparateBlobs) {
  PhantomParams p = small(PhantomKind::Nuclei, 2, 96);
  p.n_nuclei = 4;
  const Volume v = make_phantom(p);
  const auto comp = components(v, 0.15f);
  std::vector<int64_t> big;
  for (int64_t c : comp)
    if (c >= 200) big.push_back(c);
  EXPECT_EQ(big.size(), 4u);
  // Radii at 96^3: ~9-22 voxels (times 0.6-1.25 per axis) -> ~1500 to ~60000 voxels.
  for (int64_t c : big) {
    EXPECT_GT(c, 1000);
    EXPECT_LT(c, 80000);
  }
}

// Puncta: exactly the requested number of separate spots/vesicles.
TEST(Phantom, PunctaCountMatchesRequest) {
  PhantomParams p = small(PhantomKind::Puncta, 4, 64);
  p.n_puncta = 40;
  const Volume v = make_phantom(p);
  const auto comp = components(v, 0.2f);
  EXPECT_EQ(comp.size(), 40u);
  for (int64_t c : comp) EXPECT_LT(c, 1500);  // small objects
}

// Membranes: thin walls forming one connected network around dark cell interiors.
TEST(Phantom, MembranesFormConnectedWalls) {
  PhantomParams p = small(PhantomKind::Membranes, 5, 64);
  p.n_cells = 12;
  const Volume v = make_phantom(p);
  const double f = fraction_above(v, 0.2f);
  EXPECT_GT(f, 0.03);
  EXPECT_LT(f, 0.5);
  const auto comp = components(v, 0.2f);
  const int64_t largest = *std::max_element(comp.begin(), comp.end());
  EXPECT_GT(largest, 0.8 * f * v.numel());  // walls of adjacent cells touch
}

// EM: grey cytoplasm with dark membranes (a dark tail well below the mean).
TEST(Phantom, EmIsGreyWithDarkStructures) {
  const Volume v = make_phantom(small(PhantomKind::EM, 6, 64));
  const float* d = v.data<float>();
  std::vector<float> s(d, d + v.numel());
  std::sort(s.begin(), s.end());
  double mean = 0;
  for (float x : s) mean += x;
  mean /= s.size();
  EXPECT_GT(mean, 0.35);
  EXPECT_LT(mean, 0.7);
  EXPECT_LT(s[s.size() / 50], mean - 0.15);  // 2nd percentile: membranes/mitochondria
}

TEST(Phantom, RejectsUnknownKindAndBadSize) {
  try {
    parse_phantom_kind("cells");
    FAIL() << "no throw";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "unknown phantom kind 'cells' (expected mixed, filaments, nuclei, membranes, puncta or em)");
  }
  EXPECT_EQ(parse_phantom_kind("em"), PhantomKind::EM);
  PhantomParams p;
  p.size = {0, 4, 4};
  EXPECT_THROW(make_phantom(p), InputError);
}

TEST(GaussianBlur, KernelIsNormalisedAndBlurKeepsConstants) {
  const auto k = gaussian_kernel(1.0);
  ASSERT_EQ(k.size(), 7u);
  double sum = 0;
  for (float w : k) sum += w;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_NEAR(k[3] / k[2], std::exp(0.5), 1e-5);
  Volume c({5, 6, 7}, DType::F32);
  std::fill(c.data<float>(), c.data<float>() + c.numel(), 0.25f);
  gaussian_blur_inplace(c, 1.0, 2.0, 0.7);
  for (int64_t i = 0; i < c.numel(); ++i) ASSERT_NEAR(c.data<float>()[i], 0.25f, 1e-6);
}

// A delta in the middle becomes the outer product of the three 1D kernels.
TEST(GaussianBlur, DeltaGivesSeparableKernel) {
  Volume v({9, 9, 9}, DType::F32);
  v.at<float>(4, 4, 4) = 1;
  gaussian_blur_inplace(v, 1.0, 0.5, 0);
  const auto kz = gaussian_kernel(1.0), ky = gaussian_kernel(0.5);
  EXPECT_NEAR(v.at<float>(4, 4, 4), kz[3] * ky[2], 1e-7);
  EXPECT_NEAR(v.at<float>(5, 3, 4), kz[4] * ky[1], 1e-7);
  EXPECT_EQ(v.at<float>(4, 4, 5), 0.f);  // no blur along x
}

// An axial PSF wider than the lateral one removes more high frequencies along z than x.
TEST(Optics, AxialPsfBlursZMoreThanX) {
  const Volume gt = make_phantom(small(PhantomKind::Puncta, 8, 48));
  const double rz0 = gradient_energy(gt, 0), rx0 = gradient_energy(gt, 2);
  EXPECT_NEAR(rz0 / rx0, 1.0, 0.25);  // the phantom itself is isotropic
  OpticsParams o;
  o.psf_lateral_fwhm_um = 0.2;  // 2 voxels
  o.psf_axial_fwhm_um = 0.6;    // 6 voxels
  const Volume b = apply_optics(gt, o);
  EXPECT_EQ(b.shape(), gt.shape());
  const double rz = gradient_energy(b, 0), rx = gradient_energy(b, 2);
  EXPECT_LT(rx, rx0);
  EXPECT_LT(rz, 0.5 * rx);  // measured 0.40
}

// z-subsampling samples the cell centres of the coarse grid: plane j reads z = (j + 0.5) K - 0.5.
TEST(Optics, ZSubsamplingSamplesCellCentres) {
  Volume ramp({8, 2, 3}, DType::F32, {0.5, 0.1, 0.1});
  for (int64_t z = 0; z < 8; ++z)
    for (int64_t i = 0; i < 6; ++i) ramp.data<float>()[z * 6 + i] = float(z);
  OpticsParams o;
  o.z_factor = 2;
  const Volume s = apply_optics(ramp, o);
  ASSERT_EQ(s.shape(), (Shape3{4, 2, 3}));
  EXPECT_DOUBLE_EQ(s.voxel_size().z, 1.0);
  EXPECT_DOUBLE_EQ(s.voxel_size().x, 0.1);
  for (int64_t j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(s.at<float>(j, 1, 2), 2.f * j + 0.5f);
  o.z_factor = 3;  // floor(8 / 3) = 2 planes at z = 1 and 4
  const Volume t = apply_optics(ramp, o);
  ASSERT_EQ(t.nz(), 2);
  EXPECT_FLOAT_EQ(t.at<float>(0, 0, 0), 1.f);
  EXPECT_FLOAT_EQ(t.at<float>(1, 0, 0), 4.f);
}

// Poisson noise keeps the mean and has variance mean / peak (intensity units).
TEST(Optics, PoissonNoiseHasTheRightMoments) {
  for (double level : {0.05, 0.5}) {  // Knuth and normal-approximation regimes
    Volume c({16, 32, 32}, DType::F32);
    std::fill(c.data<float>(), c.data<float>() + c.numel(), float(level));
    OpticsParams o;
    o.poisson_peak = 200;
    o.seed = 9;
    const Volume n = apply_optics(c, o);
    double m = 0, m2 = 0;
    for (int64_t i = 0; i < n.numel(); ++i) m += n.data<float>()[i];
    m /= n.numel();
    for (int64_t i = 0; i < n.numel(); ++i) m2 += std::pow(n.data<float>()[i] - m, 2);
    m2 /= n.numel();
    const double var = level / 200;
    EXPECT_NEAR(m, level, 4 * std::sqrt(var / n.numel()));
    EXPECT_NEAR(m2, var, 0.05 * var);
  }
}

TEST(Optics, GaussianNoiseStdAndErrors) {
  Volume c({8, 32, 32}, DType::F32);
  OpticsParams o;
  o.gaussian_sigma = 0.1;
  const Volume n = apply_optics(c, o);
  double m2 = 0;
  for (int64_t i = 0; i < n.numel(); ++i) m2 += std::pow(n.data<float>()[i], 2);
  EXPECT_NEAR(std::sqrt(m2 / n.numel()), 0.1, 0.005);
  o.z_factor = 0.5;
  try {
    apply_optics(c, o);
    FAIL() << "no throw";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "z factor must be between 1 and the number of planes (8), got 0.5");
  }
  o.z_factor = 1;
  o.psf_axial_fwhm_um = -1;
  EXPECT_THROW(apply_optics(c, o), InputError);
}

}  // namespace
}  // namespace isoprompt
