// reconstruct() with a tiny random SwinIR: tile shapes the network sees, and how close
// tiled prediction comes to untiled prediction for a (not translation-equivariant) Swin.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>

#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/model.h"
#include "isoprompt/tensor.h"

using namespace isoprompt;

namespace {

SwinIR tiny_swin() {
  at::manual_seed(21);
  SwinConfig c;
  c.embed_dim = 12;
  c.depths = {2};
  c.num_heads = {2};
  c.num_feat = 8;
  SwinIR net(c);
  net->eval();
  return net;
}

Volume smooth_volume() {
  at::manual_seed(22);
  at::Tensor t = at::avg_pool3d(at::rand({1, 1, 6, 40, 48}), {3, 5, 5}, {1, 1, 1}, {1, 2, 2});
  VolumeTensor vt;
  vt.data = t.squeeze();
  vt.voxel = {2.0, 0.5, 0.5};
  return to_volume(vt, DType::F32);
}

}  // namespace

// Tiles are multiples of the window (8) and batched; with a 16 px overlap the tiled
// result is within 1e-3 of the untiled one, far closer than without blending.
TEST(ReconstructSwin, TiledCloseToUntiledAndBetterThanHardSeams) {
  set_log_level(LogLevel::Error);
  SwinIR net = tiny_swin();
  std::vector<std::vector<int64_t>> shapes;
  SliceRestorer r = [&](const at::Tensor& x) {
    shapes.push_back(x.sizes().vec());
    return net->forward(x);
  };
  const Volume v = smooth_volume();  // K = 4: XZ planes 24 x 48, YZ planes 24 x 40
  ReconstructParams p;
  p.factor = 4.0;
  p.norm = Normalizer{0, 1};
  p.out_dtype = DType::F32;
  p.cost = swin_cost(12, 2, 8, 2.0);
  const Volume whole = reconstruct(v, p, r);
  p.tile = 32;
  p.overlap = 16;
  p.batch = 8;
  shapes.clear();
  ReconstructReport rep;
  const Volume tiled = reconstruct(v, p, r, &rep);
  ASSERT_FALSE(shapes.empty());
  for (const auto& s : shapes) {
    EXPECT_LE(s[0], 8);
    EXPECT_EQ(s[2] % 8, 0);
    EXPECT_EQ(s[3] % 8, 0);
  }
  EXPECT_EQ(rep.xz_plan.tiles_per_plane(), 2);  // rows whole (24), columns: 2 tiles of 32
  p.overlap = 0;
  const Volume hard = reconstruct(v, p, r);
  const at::Tensor w = to_float_tensor(whole);
  const double d_blend = (to_float_tensor(tiled) - w).abs().max().item<double>();
  const double d_hard = (to_float_tensor(hard) - w).abs().max().item<double>();
  const double range = (w.max() - w.min()).item<double>();
  std::printf("tiny SwinIR, 32 px tiles: max |tiled - untiled| = %.3g blended (overlap 16), %.3g unblended (overlap 0); "
              "output range %.3g\n", d_blend, d_hard, range);
  EXPECT_LT(d_blend, 1e-3);
  EXPECT_LT(d_blend, 0.1 * d_hard);
  set_log_level(LogLevel::Info);
}
