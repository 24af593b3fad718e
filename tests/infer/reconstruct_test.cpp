// reconstruct(): geometry, interpolation mode, fusion, tiling, memory, Ctrl-C.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "isoprompt/error.h"
#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/restore.h"
#include "isoprompt/runtime.h"
#include "isoprompt/tensor.h"

using namespace isoprompt;

namespace {

// A random volume of the given dtype with values in [0, max).
Volume random_volume(Shape3 s, DType t, double max, uint64_t seed, VoxelSize vs = {2.0, 0.5, 0.5}) {
  at::manual_seed(seed);
  const at::Tensor r = at::rand({s.z, s.y, s.x}) * max;
  VolumeTensor vt;
  vt.data = t == DType::F32 ? r : r.floor();
  vt.voxel = vs;
  return to_volume(vt, t);
}

at::Tensor as_tensor(const Volume& v) {
  return to_float_tensor(v).to(at::kDouble);
}
double max_abs_diff(const Volume& a, const Volume& b) {
  return (as_tensor(a) - as_tensor(b)).abs().max().item<double>();
}

struct Quiet {  // keeps test output free of progress bars and info lines
  Quiet() { set_log_level(LogLevel::Error); }
  ~Quiet() { set_log_level(LogLevel::Info); }
};

ReconstructParams params(double k) {
  ReconstructParams p;
  p.factor = k;
  return p;
}

}  // namespace

// Interpolation mode on a hand-computed case: linear, K = 2, z ramp 0, 10, 20 read at
// (i + 0.5)/2 - 0.5 = -0.25 (clamped), 0.25, ... 2.25 (clamped).
// The network's input interpolation comes from the backbone's pretraining metadata.
TEST(Reconstruct, InputInterpolationFollowsTheBackbone) {
  Backbone b;
  EXPECT_EQ(backbone_input_interp(b),
            Interp::Keys);  // files without it: the first default, UniFMIR
  b.metadata["input_interp"] = "cubic";
  EXPECT_EQ(backbone_input_interp(b), Interp::BSpline3);
  EXPECT_EQ(resolve_interp("auto", &b), Interp::BSpline3);
  b.metadata["input_interp"] = "keys";
  EXPECT_EQ(resolve_interp("auto", &b), Interp::Keys);
  EXPECT_EQ(resolve_interp("linear", &b), Interp::Linear);
  EXPECT_EQ(resolve_interp("auto", nullptr),
            Interp::BSpline3);  // interpolation only: the best kernel
  EXPECT_THROW(resolve_interp("bicubic", &b), InputError);
}

TEST(Reconstruct, InterpModeHandComputedLinear) {
  Quiet q;
  Volume v({3, 1, 2}, DType::F32, {1.0, 0.5, 0.5});
  for (int64_t z = 0; z < 3; ++z)
    for (int64_t x = 0; x < 2; ++x) v.at<float>(z, 0, x) = 10.f * z;
  ReconstructParams p = params(2.0);
  p.interp = Interp::Linear;
  const Volume out = reconstruct(v, p, nullptr);
  ASSERT_EQ(out.shape(), (Shape3{6, 1, 2}));
  const float want[6] = {0, 2.5, 7.5, 12.5, 17.5, 20};
  for (int64_t z = 0; z < 6; ++z) EXPECT_FLOAT_EQ(out.at<float>(z, 0, 1), want[z]) << z;
  EXPECT_EQ(out.voxel_size(), (VoxelSize{0.5, 0.5, 0.5}));
}

// Interpolation mode is exactly ops' upsample() converted to the input dtype.
TEST(Reconstruct, InterpModeEqualsUpsampleExactly) {
  Quiet q;
  const Volume v = random_volume({7, 9, 11}, DType::U16, 60000, 3);
  for (Interp m : {Interp::Nearest, Interp::Linear, Interp::Keys, Interp::Lanczos3}) {
    ReconstructParams p = params(2.5);
    p.interp = m;
    ReconstructReport rep;
    const Volume out = reconstruct(v, p, nullptr, &rep);
    const Volume ref = denormalize(upsample(v, 0, 2.5, m, 18), Normalizer{0, 1}, DType::U16);
    ASSERT_EQ(out.dtype(), DType::U16);
    ASSERT_EQ(out.shape(), (Shape3{18, 9, 11}));  // round(7 * 2.5) = 17.5 -> 18
    EXPECT_EQ(std::memcmp(out.raw(), ref.raw(), out.size_bytes()), 0) << interp_name(m);
    EXPECT_EQ(rep.planes, 0);
  }
}

// The output voxel size is z / K exactly, for a fractional K; y and x are untouched.
TEST(Reconstruct, VoxelSizeIsExact) {
  Quiet q;
  const Volume v = random_volume({10, 6, 5}, DType::U8, 200, 4, {1.96, 0.4424, 0.4425});
  ReconstructReport rep;
  const Volume out = reconstruct(v, params(4.43), nullptr, &rep);
  EXPECT_EQ(out.nz(), 44);  // round(44.3)
  EXPECT_EQ(out.voxel_size().z, 1.96 / 4.43);
  EXPECT_EQ(out.voxel_size().y, 0.4424);
  EXPECT_EQ(out.voxel_size().x, 0.4425);
  EXPECT_EQ(rep.factor, 4.43);
  EXPECT_EQ(rep.voxel, out.voxel_size());
  // The same with a network.
  const Volume net = reconstruct(v, params(4.43), [](const at::Tensor& x) { return x; });
  EXPECT_EQ(net.voxel_size(), out.voxel_size());
  EXPECT_EQ(net.unit(), v.unit());
}

// An identity network with mean fusion reproduces plain upsampling (float output: to
// rounding; uint16 output: within one grey level at .5 ties).
TEST(Reconstruct, IdentityNetworkReproducesUpsampling) {
  Quiet q;
  const Volume v = random_volume({6, 20, 24}, DType::U16, 5000, 5);
  const Volume up = upsample(v, 0, 3.0, Interp::Keys, 18);
  ReconstructParams p = params(3.0);
  p.out_dtype = DType::F32;
  p.tile = 16;
  p.overlap = 4;
  const Volume f = reconstruct(v, p, [](const at::Tensor& x) { return x; });
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_LT(max_abs_diff(f, up), 5000 * 1e-6);
  p.out_dtype.reset();
  const Volume u = reconstruct(v, p, [](const at::Tensor& x) { return x; });
  EXPECT_EQ(u.dtype(), DType::U16);
  EXPECT_LE(max_abs_diff(u, denormalize(up, Normalizer{0, 1}, DType::U16)), 1.0);
}

// Geometric fusion of two identical stacks is max(x, 0) in normalised units, i.e. the
// upsampled volume clipped from below at the normalisation's lo.
TEST(Reconstruct, GeometricFusionOfIdenticalStacksClipsAtLo) {
  Quiet q;
  const Volume v = random_volume({5, 12, 10}, DType::F32, 100, 6);
  ReconstructParams p = params(2.0);
  p.fuse = Fuse::Geometric;
  p.norm = Normalizer{30, 80};
  const Volume out = reconstruct(v, p, [](const at::Tensor& x) { return x; });
  const at::Tensor want = as_tensor(upsample(v, 0, 2.0, Interp::Keys, 10)).clamp_min(30);
  EXPECT_LT((as_tensor(out) - want).abs().max().item<double>(), 1e-4);
}

// The XZ and YZ stacks are fused as documented: the network returns 0.2 on XZ planes
// (width nx = 10) and 0.8 on YZ planes (width ny = 12); norm [100, 300].
TEST(Reconstruct, FusesXzAndYzStacks) {
  Quiet q;
  const Volume v = random_volume({4, 12, 10}, DType::U16, 1000, 7);
  auto net = [](const at::Tensor& x) { return at::full_like(x, x.size(3) == 10 ? 0.2 : 0.8); };
  ReconstructParams p = params(2.0);
  p.norm = Normalizer{100, 300};
  const Volume mean = reconstruct(v, p, net);
  p.fuse = Fuse::Geometric;
  const Volume geo = reconstruct(v, p, net);
  const at::Tensor m = as_tensor(mean), g = as_tensor(geo);
  EXPECT_EQ(m.min().item<double>(), 200);  // 100 + 200 * (0.2 + 0.8) / 2
  EXPECT_EQ(m.max().item<double>(), 200);
  EXPECT_EQ(g.min().item<double>(), 180);  // 100 + 200 * sqrt(0.16)
  EXPECT_EQ(g.max().item<double>(), 180);
}

// Tiled reconstruction equals untiled to 1e-3 for a translation-equivariant network
// (3x3 conv, ReLU, 7x7 conv: receptive radius 4 <= overlap 16 / 4).
TEST(Reconstruct, TiledMatchesUntiled) {
  Quiet q;
  at::manual_seed(11);
  const at::Tensor w1 = at::randn({4, 1, 3, 3}) * 0.3, w2 = at::randn({1, 4, 7, 7}) * 0.1;
  auto net = [&](const at::Tensor& x) {
    return at::conv2d(at::relu(at::conv2d(x, w1, {}, 1, 1)), w2, {}, 1, 3) + x;
  };
  const Volume v = random_volume({12, 50, 60}, DType::F32, 1.0, 8, {1, 1, 1});
  ReconstructParams p = params(4.0);
  p.norm = Normalizer{0, 1};
  const Volume whole = reconstruct(v, p, net);
  p.tile = 32;
  p.overlap = 16;
  p.batch = 3;
  ReconstructReport rep;
  const Volume tiled = reconstruct(v, p, net, &rep);
  EXPECT_EQ(rep.xz_plan.tiles_per_plane(), 6);  // 48 x 60 planes: 2 x 3 tiles
  EXPECT_EQ(rep.yz_plan.tiles_per_plane(), 6);  // 48 x 50 planes: 2 x 3 tiles
  EXPECT_LT(max_abs_diff(whole, tiled), 1e-3);
  EXPECT_EQ(rep.planes, 50 + 60);
}

// Normalisation is whole-volume, never per tile: a network that adds 0.1 (normalised)
// shifts every output voxel by exactly 0.1 * (hi - lo), whatever tile it is in.
TEST(Reconstruct, NormalisationIsGlobalNotPerTile) {
  Quiet q;
  Volume v = random_volume({8, 40, 40}, DType::F32, 10, 9);
  float* d = v.data<float>();
  for (int64_t i = 0; i < v.numel(); ++i)
    d[i] += static_cast<float>((i % 40) * 50);  // a strong x ramp
  ReconstructParams p = params(2.0);
  p.tile = 16;
  p.overlap = 4;
  ReconstructReport rep;
  const Volume out = reconstruct(
      v, p, [](const at::Tensor& x) { return x + 0.1; }, &rep);
  const at::Tensor diff = as_tensor(out) - as_tensor(upsample(v, 0, 2.0, Interp::Keys, 16));
  const double shift = 0.1 * (rep.norm.hi - rep.norm.lo);
  EXPECT_GT(shift, 100);
  EXPECT_LT((diff - shift).abs().max().item<double>(), 1e-3 * shift);
}

// Automatic tiling keeps every forward pass within the memory budget.
TEST(Reconstruct, AutoTilesRespectMaxMemory) {
  Quiet q;
  const Volume v = random_volume({16, 96, 128}, DType::U8, 255, 10, {4, 1, 1});
  ReconstructParams p = params(4.0);
  // XZ planes 64 x 128 need 82 MB whole, above the 64 MB budget; YZ planes 64 x 96 fit.
  p.cost.bytes_per_pixel = 10000;
  p.max_memory_gb = 0.06;
  double max_bytes = 0;
  auto net = [&](const at::Tensor& x) {
    max_bytes = std::max(max_bytes, double(x.numel()) * p.cost.bytes_per_pixel);
    return x;
  };
  ReconstructReport rep;
  reconstruct(v, p, net, &rep);
  EXPECT_GT(max_bytes, 0);
  EXPECT_LE(max_bytes, 0.06 * 1024 * 1024 * 1024);
  EXPECT_EQ(rep.xz_plan.tiles_per_plane(), 2);
  EXPECT_EQ(rep.yz_plan.tiles_per_plane(), 1);
  // A generous budget takes whole planes, batched.
  p.max_memory_gb = 64;
  max_bytes = 0;
  reconstruct(v, p, net, &rep);
  EXPECT_EQ(rep.xz_plan.tiles_per_plane(), 1);
  EXPECT_GT(rep.xz_plan.batch, 1);
}

// Ctrl-C: the first forward pass requests an interrupt; reconstruct() throws Cancelled
// and returns nothing.
TEST(Reconstruct, InterruptThrowsCancelled) {
  Quiet q;
  const Volume v = random_volume({4, 16, 16}, DType::U16, 1000, 12);
  int64_t calls = 0;
  ReconstructParams p = params(2.0);
  p.batch = 1;
  auto net = [&](const at::Tensor& x) {
    ++calls;
    request_interrupt();
    return x;
  };
  EXPECT_THROW(reconstruct(v, p, net), Cancelled);
  clear_interrupt();
  EXPECT_EQ(calls, 1);
  request_interrupt();
  EXPECT_THROW(reconstruct(v, p, nullptr), Cancelled);
  clear_interrupt();
}

// Bad parameters are input errors that name the value.
TEST(Reconstruct, BadParametersThrowInputError) {
  Quiet q;
  const Volume v = random_volume({4, 8, 8}, DType::U8, 100, 13);
  try {
    reconstruct(v, params(0.5), nullptr);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "z factor 0.5 must be a finite number >= 1");
  }
  EXPECT_THROW(reconstruct(v, params(std::nan("")), nullptr), InputError);
  ReconstructParams p = params(2.0);
  p.tile = 4;
  EXPECT_THROW(reconstruct(v, p, [](const at::Tensor& x) { return x; }), InputError);
  EXPECT_THROW(reconstruct(Volume(), params(2.0), nullptr), InputError);
}
