// Test-time augmentation and the uncertainty map of reconstruct() (src/infer/reconstruct.cpp):
// exact back-transforms, the averaged result of a network that is not flip-equivariant, the
// map's closed forms, its geometry, and the errors without a network.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "isoprompt/error.h"
#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/tensor.h"

using namespace isoprompt;

namespace {

struct Quiet {  // keeps test output free of progress bars and info lines
  Quiet() { set_log_level(LogLevel::Error); }
  ~Quiet() { set_log_level(LogLevel::Info); }
};

Volume random_volume(Shape3 s, DType t, double max, uint64_t seed, VoxelSize vs = {2.0, 0.5, 0.5}) {
  at::manual_seed(seed);
  const at::Tensor r = at::rand({s.z, s.y, s.x}) * max;
  VolumeTensor vt;
  vt.data = t == DType::F32 ? r : r.floor();
  vt.voxel = vs;
  return to_volume(vt, t);
}

at::Tensor as_double(const Volume& v) { return to_float_tensor(v).to(at::kDouble); }

bool same_voxels(const Volume& a, const Volume& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

ReconstructParams params(double k, bool tta) {
  ReconstructParams p;
  p.factor = k;
  p.tta = tta;
  return p;
}

const SliceRestorer kIdentity = [](const at::Tensor& x) { return x; };

}  // namespace

// Every flip is undone exactly: with an identity network (whole planes) TTA gives the same
// voxels as no TTA, for integer and float output, and so does a pointwise nonlinear network
// (flip-equivariant, but not the identity).
TEST(Tta, FlipEquivariantNetworkIsBitExact) {
  Quiet q;
  const Volume v = random_volume({5, 12, 9}, DType::U16, 5000, 21);
  auto square = [](const at::Tensor& x) { return x * x + 0.1; };
  for (DType out : {DType::U16, DType::F32}) {
    ReconstructParams p = params(3.0, false), t = params(3.0, true);
    p.out_dtype = t.out_dtype = out;
    EXPECT_TRUE(same_voxels(reconstruct(v, p, kIdentity), reconstruct(v, t, kIdentity)));
    EXPECT_TRUE(same_voxels(reconstruct(v, p, square), reconstruct(v, t, square)));
  }
}

// With tiles the flipped plane is cut at mirrored places that round differently (tile starts
// round half up), so the blended identity differs from the unflipped one by float rounding
// of the blend weights only.
TEST(Tta, TiledIdentityMatchesToRounding) {
  Quiet q;
  const Volume v = random_volume({6, 40, 33}, DType::F32, 1.0, 22, {1, 1, 1});
  ReconstructParams p = params(4.0, false), t = params(4.0, true);
  p.norm = t.norm = Normalizer{0, 1};
  p.tile = t.tile = 16;
  p.overlap = t.overlap = 4;
  ReconstructReport rep;
  const Volume a = reconstruct(v, p, kIdentity), b = reconstruct(v, t, kIdentity, &rep);
  EXPECT_GT(rep.xz_plan.tiles_per_plane(), 1);
  EXPECT_LT((as_double(a) - as_double(b)).abs().max().item<double>(), 1e-6);
}

// A network that is not flip-equivariant: it adds alpha * column + beta * row (normalised
// units) to its input. Undoing each flip turns column c into W - 1 - c and row r into Z - 1 - r,
// so the four variants average to input + alpha (W - 1) / 2 + beta (Z - 1) / 2, with W = nx on
// XZ planes and ny on YZ planes; mean fusion then gives alpha (nx + ny - 2) / 4 + beta (Z - 1)
// / 2 everywhere. Without TTA the ramps stay. Norm [100, 300]: 200 output units per unit.
TEST(Tta, RampNetworkAveragesToTheExpectedValue) {
  Quiet q;
  const double alpha = 0.01, beta = 0.003;
  auto ramp = [&](const at::Tensor& x) {
    const int64_t h = x.size(2), w = x.size(3);
    const at::Tensor rows = at::arange(h, x.options()).view({1, 1, h, 1});
    const at::Tensor cols = at::arange(w, x.options()).view({1, 1, 1, w});
    return x + alpha * cols + beta * rows;
  };
  const Volume v = random_volume({3, 5, 4}, DType::F32, 100, 23);
  const int64_t Z = 6, ny = 5, nx = 4;
  ReconstructParams t = params(2.0, true);
  t.norm = Normalizer{100, 300};
  ReconstructReport rep;
  Volume umap;
  const Volume out = reconstruct(v, t, ramp, &rep, &umap);
  EXPECT_EQ(rep.variants, 4);
  const at::Tensor base = as_double(upsample(v, 0, 2.0, Interp::Keys, Z));
  const double shift = 200.0 * (alpha * double(nx + ny - 2) / 4 + beta * double(Z - 1) / 2);
  EXPECT_LT((as_double(out) - base - shift).abs().max().item<double>(), 1e-3);  // float rounding
  // Without TTA the result keeps the ramps: the test tells the two apart.
  ReconstructParams p = params(2.0, false);
  p.norm = t.norm;
  EXPECT_GT((as_double(reconstruct(v, p, ramp)) - base - shift).abs().max().item<double>(), 0.5);

  // The map: the population standard deviation of the 8 restorations of each voxel. The
  // input cancels, so the expected map is the spread of the 8 ramp values alone.
  ASSERT_EQ(umap.shape(), out.shape());
  const at::Tensor zz = at::arange(Z, at::kDouble).view({Z, 1, 1}).expand({Z, ny, nx});
  const at::Tensor yy = at::arange(ny, at::kDouble).view({1, ny, 1}).expand({Z, ny, nx});
  const at::Tensor xx = at::arange(nx, at::kDouble).view({1, 1, nx}).expand({Z, ny, nx});
  std::vector<at::Tensor> r;
  for (const at::Tensor& zr : {zz, (Z - 1) - zz}) {
    for (const at::Tensor& c : {xx, (nx - 1) - xx}) r.push_back(alpha * c + beta * zr);  // XZ
    for (const at::Tensor& c : {yy, (ny - 1) - yy}) r.push_back(alpha * c + beta * zr);  // YZ
  }
  const at::Tensor want = at::stack(r).std(0, /*unbiased=*/false) * 200.0;
  EXPECT_GT(want.min().item<double>(), 0.1);
  EXPECT_LT((as_double(umap) - want).abs().max().item<double>(), 2e-4);
}

// TTA runs the network on 4x the pixels, and the report says so.
TEST(Tta, RestoresEveryPlaneFourTimes) {
  Quiet q;
  const Volume v = random_volume({4, 10, 7}, DType::U8, 200, 24);
  int64_t pixels = 0;
  auto count = [&](const at::Tensor& x) {
    pixels += x.numel();
    return x;
  };
  ReconstructReport rep;
  reconstruct(v, params(2.0, false), count, &rep);
  const int64_t once = pixels;
  EXPECT_EQ(once, 8 * 7 * 10 + 8 * 10 * 7);  // ny XZ planes of 8 x 7, nx YZ planes of 8 x 10
  EXPECT_EQ(rep.variants, 1);
  pixels = 0;
  reconstruct(v, params(2.0, true), count, &rep);
  EXPECT_EQ(pixels, 4 * once);
  EXPECT_EQ(rep.variants, 4);
  EXPECT_EQ(rep.planes, 10 + 7);
}

// Where the XZ and YZ passes agree the map is exactly 0: an identity network sees the same
// z-interpolated columns in both orientations. The map is float32 on the output grid, with
// the output's voxel size and unit, and asking for it does not change the output.
TEST(Uncertainty, ZeroWhereXzAndYzAgree) {
  Quiet q;
  for (DType in : {DType::U16, DType::F32}) {
    const Volume v = random_volume({5, 11, 8}, in, 4000, 25, {1.96, 0.44, 0.44});
    for (bool tta : {false, true}) {
      ReconstructParams p = params(4.45, tta);
      Volume umap;
      const Volume out = reconstruct(v, p, kIdentity, nullptr, &umap);
      ASSERT_EQ(umap.shape(), out.shape());
      EXPECT_EQ(umap.dtype(), DType::F32);
      EXPECT_EQ(umap.voxel_size(), out.voxel_size());
      EXPECT_EQ(umap.voxel_size().z, 1.96 / 4.45);
      EXPECT_EQ(umap.unit(), out.unit());
      EXPECT_EQ(as_double(umap).abs().max().item<double>(), 0.0) << dtype_name(in) << " tta " << tta;
      EXPECT_TRUE(same_voxels(out, reconstruct(v, p, kIdentity)));
    }
  }
}

// A network that adds +c on XZ planes (width nx = 9) and -c on YZ planes (width ny = 12): the
// two restorations of every voxel differ by 2c, so the standard deviation is c, times the
// normalisation range (here 400) in output units (to the float rounding of x + c - (x - c)). The offsets are flip-equivariant, so with
// TTA the 8 values are 4 x (x + c) and 4 x (x - c): again c.
TEST(Uncertainty, PlusMinusOffsetGivesItsClosedForm) {
  Quiet q;
  const double c = 0.05;
  auto net = [&](const at::Tensor& x) { return x + (x.size(3) == 9 ? c : -c); };
  const Volume v = random_volume({4, 12, 9}, DType::U16, 1000, 26);
  for (bool tta : {false, true}) {
    ReconstructParams p = params(2.0, tta);
    p.norm = Normalizer{100, 500};
    p.fuse = Fuse::Mean;
    Volume umap;
    reconstruct(v, p, net, nullptr, &umap);
    const at::Tensor u = as_double(umap);
    EXPECT_NEAR(u.min().item<double>(), c * 400, 5e-4) << "tta " << tta;
    EXPECT_NEAR(u.max().item<double>(), c * 400, 5e-4) << "tta " << tta;
    // The map does not depend on the fusion rule.
    p.fuse = Fuse::Geometric;
    Volume ugeo;
    reconstruct(v, p, net, nullptr, &ugeo);
    EXPECT_TRUE(same_voxels(umap, ugeo));
  }
}

// Without a network there is nothing to augment and no spread to map: input errors.
TEST(Uncertainty, NeedsANetwork) {
  Quiet q;
  const Volume v = random_volume({4, 8, 8}, DType::U8, 100, 27);
  try {
    reconstruct(v, params(2.0, true), nullptr);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "test-time augmentation needs a network: interpolation has no restorations to average");
  }
  Volume umap;
  try {
    reconstruct(v, params(2.0, false), nullptr, nullptr, &umap);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "the uncertainty map needs a network: it is the spread of the network's XZ and YZ "
                 "restorations, and interpolation has none");
  }
  EXPECT_TRUE(umap.empty());
}
