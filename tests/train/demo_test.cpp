// The demo pipeline with a tiny identity backbone, and the shipped default model.
#include "isoprompt/demo.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/ops.h"
#include "isoprompt/pretrain.h"

namespace isoprompt {
namespace {

Backbone identity_backbone() {
  SwinConfig c;
  c.embed_dim = 8;
  c.depths = {1};
  c.num_heads = {2};
  c.window_size = 4;
  c.img_size = 8;
  c.num_feat = 4;
  c.mlp_ratio = 1.0;
  Backbone bb;
  bb.config = c;
  bb.net = SwinIR(c);
  identity_init(bb.net);
  bb.net->eval();
  bb.name = "identity";
  return bb;
}

// An identity network restores nothing: zero-shot equals the Keys interpolation the network
// is fed, the "cubic" row is the cubic B-spline baseline, and the table has the three methods
// measured on the same ground truth (z rounded to a multiple of K).
TEST(Demo, IdentityBackboneMatchesItsKeysInput) {
  set_log_level(LogLevel::Warn);
  Backbone bb = identity_backbone();
  DemoParams p;
  p.size = {18, 32, 32};
  p.factor = 4;
  p.tune_seconds = 20;
  p.tune_steps = 2;
  const DemoResult r = run_demo(p, bb);
  set_log_level(LogLevel::Info);
  EXPECT_EQ(r.gt.shape(), (Shape3{16, 32, 32}));
  EXPECT_EQ(r.input.shape(), (Shape3{4, 32, 32}));
  EXPECT_EQ(r.zero_shot.shape(), r.gt.shape());
  EXPECT_EQ(r.tuned.shape(), r.gt.shape());
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0].method, "cubic");
  EXPECT_EQ(r.rows[1].method, "zero-shot");
  EXPECT_EQ(r.rows[2].method, "prompt-tuned");
  EXPECT_GT(r.rows[0].psnr, 10);
  const Volume bspline = upsample(r.input, 0, 4, Interp::BSpline3, 16);
  const Volume keys = upsample(r.input, 0, 4, Interp::Keys, 16);
  ASSERT_EQ(r.cubic.dtype(), DType::F32);
  ASSERT_EQ(r.zero_shot.dtype(), DType::F32);
  const double tol = 1e-4 * (r.gt_hi - r.gt_lo);  // the network runs on normalised floats
  double cubic_err = 0, zero_err = 0, kernels_differ = 0;
  for (int64_t i = 0; i < keys.numel(); ++i) {
    cubic_err = std::max(cubic_err, double(std::abs(r.cubic.data<float>()[i] - bspline.data<float>()[i])));
    zero_err = std::max(zero_err, double(std::abs(r.zero_shot.data<float>()[i] - keys.data<float>()[i])));
    kernels_differ = std::max(kernels_differ, double(std::abs(keys.data<float>()[i] - bspline.data<float>()[i])));
  }
  EXPECT_EQ(cubic_err, 0);
  EXPECT_LT(zero_err, tol);
  EXPECT_GT(kernels_differ, 100 * tol);  // so the two checks above tell the kernels apart
  EXPECT_GT(r.rows[2].trainable, 0);
  EXPECT_EQ(r.rows[0].trainable, 0);
}

TEST(Demo, RejectsFractionalFactor) {
  Backbone bb = identity_backbone();
  DemoParams p;
  p.factor = 2.5;
  EXPECT_THROW(run_demo(p, bb), InputError);
}

// The model file shipped in models/ loads strictly, has the default configuration and its
// recorded validation shows it restores better than its cubic input.
TEST(DefaultModel, ShippedFileLoadsAndBeatsItsInput) {
  const std::string path = std::string(ISO_SOURCE_DIR) + "/models/isoprompt-default.safetensors";
  ASSERT_TRUE(file_exists(path)) << path;
  Backbone bb = load_backbone(path);
  EXPECT_EQ(bb.config, default_backbone_config());
  EXPECT_EQ(bb.metadata.at("name"), "isoprompt-default");
  EXPECT_GT(std::stod(bb.metadata.at("val_psnr_output")), std::stod(bb.metadata.at("val_psnr_input")));
  // A flat image stays (nearly) flat.
  at::NoGradGuard ng;
  const at::Tensor flat = at::full({1, 1, 40, 48}, 0.5);
  const at::Tensor out = bb.net->forward(flat);
  EXPECT_EQ(out.sizes(), flat.sizes());
  EXPECT_LT((out - flat).abs().max().item<double>(), 0.1);
}

}  // namespace
}  // namespace isoprompt
