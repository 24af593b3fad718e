// Pretraining: pair synthesis, the data stream as a pure function of the step, identity
// initialisation, a bounded smoke run, exact resume, Ctrl-C checkpoints, export + reload.
#include "isoprompt/pretrain.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "isoprompt/checkpoint.h"
#include "isoprompt/log.h"
#include "isoprompt/runtime.h"
#include "test_util.h"

namespace isoprompt {
namespace {

using test::TempDir;

SwinConfig tiny_config() {
  SwinConfig c;
  c.embed_dim = 8;
  c.depths = {1, 1};
  c.num_heads = {2, 2};
  c.window_size = 4;
  c.img_size = 8;
  c.num_feat = 4;
  c.mlp_ratio = 1.0;
  return c;
}

PretrainParams tiny_run(const TempDir& dir) {
  PretrainParams p;
  p.config = tiny_config();
  p.steps = 6;
  p.batch = 2;
  p.pairs.crop = 16;
  p.phantom_size = 24;
  p.phantom_every = 2;
  p.warmup = 2;
  p.lr = 1e-3;
  p.val_pairs = 2;
  p.val_every = 3;
  p.log_every = 1;
  p.seed = 42;
  p.checkpoint_path = dir.file("ckpt.safetensors");
  return p;
}

struct QuietLogs {
  QuietLogs() { set_log_level(LogLevel::Warn); }
  ~QuietLogs() { set_log_level(LogLevel::Info); }
};

// A constant image stays constant through degradation and cubic interpolation (no noise).
TEST(MakePair, ConstantImageGivesEqualInputAndTarget) {
  std::vector<float> img(40 * 50, 0.5f), in(16 * 16), tg(16 * 16);
  PairParams pp;
  pp.crop = 16;
  pp.poisson_prob = pp.gaussian_prob = pp.lateral_blur_prob = 0;
  make_pair(img.data(), 40, 50, pp, 7, in.data(), tg.data());
  for (size_t i = 0; i < tg.size(); ++i) {
    EXPECT_NEAR(tg[i], tg[0], 1e-7);
    EXPECT_NEAR(in[i], tg[i], 1e-5);
  }
  EXPECT_GE(tg[0], 0.5f * 0.7f - 1e-6);  // gain in [0.7, 1.1)
  EXPECT_LT(tg[0], 0.5f * 1.1f);
}

// The degradation acts along rows: a ramp along columns (constant along rows) is untouched,
// while stripes along rows are smoothed.
TEST(MakePair, DegradesAlongRowsOnly) {
  const int64_t R = 64, C = 64;
  std::vector<float> img(R * C), in(32 * 32), tg(32 * 32);
  PairParams pp;
  pp.crop = 32;
  pp.poisson_prob = pp.gaussian_prob = pp.lateral_blur_prob = 0;
  pp.min_factor = pp.max_factor = 4;
  // Rows-varying stripes: after any flips/transposes, one of the two axes carries them.
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) img[r * C + c] = (r % 2) ? 1.f : 0.f;
  double moved_rows = 0, moved_cols = 0;
  for (uint64_t s = 0; s < 16; ++s) {
    make_pair(img.data(), R, C, pp, s, in.data(), tg.data());
    // Stripes along the target's rows axis (value changes between rows) get averaged away;
    // stripes along the columns axis survive exactly.
    const bool varies_along_rows = tg[0] != tg[32];
    double diff = 0;
    for (size_t i = 0; i < tg.size(); ++i) diff += std::abs(in[i] - tg[i]);
    (varies_along_rows ? moved_rows : moved_cols) += diff / tg.size();
  }
  EXPECT_GT(moved_rows, 0.1);
  EXPECT_LT(moved_cols, 1e-4);
}

TEST(MakePair, DeterministicAndRejectsSmallPlanes) {
  std::vector<float> img(48 * 48);
  for (size_t i = 0; i < img.size(); ++i) img[i] = float((i * 7919) % 101) / 100.f;
  std::vector<float> a(16 * 16), b(16 * 16), c(16 * 16), t(16 * 16);
  PairParams pp;
  pp.crop = 16;
  make_pair(img.data(), 48, 48, pp, 3, a.data(), t.data());
  make_pair(img.data(), 48, 48, pp, 3, b.data(), t.data());
  make_pair(img.data(), 48, 48, pp, 4, c.data(), t.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(test::input_error_of([&] { make_pair(img.data(), 10, 48, pp, 3, a.data(), t.data()); }),
            "a 10x48 plane is too small for 16x16 training crops");
}

// The batch of step s does not depend on what was generated before (resume relies on it).
TEST(TrainingBatch, PureFunctionOfStep) {
  TempDir dir;
  const PretrainParams p = tiny_run(dir);
  PhantomPool warm, fresh;
  at::Tensor x, y, x5, y5, xf, yf;
  for (int64_t s = 0; s < 5; ++s) training_batch(p, s, warm, x, y);
  training_batch(p, 5, warm, x5, y5);
  training_batch(p, 5, fresh, xf, yf);
  EXPECT_TRUE(at::equal(x5, xf));
  EXPECT_TRUE(at::equal(y5, yf));
  EXPECT_FALSE(at::equal(x5, x));
  EXPECT_EQ(x5.sizes(), (std::vector<int64_t>{2, 1, 16, 16}));
}

// identity_init makes the untrained network return its input.
TEST(IdentityInit, NetworkStartsAsIdentity) {
  SwinIR net(tiny_config());
  identity_init(net);
  at::Tensor x = at::rand({2, 1, 12, 20});
  at::NoGradGuard ng;
  EXPECT_TRUE(at::allclose(net->forward(x), x, 0, 1e-5));
}

// Bounded smoke run: a few steps of a tiny model, CSV log, export that loads back.
TEST(Pretrain, SmokeRunLogsAndExportsALoadableModel) {
  QuietLogs q;
  TempDir dir;
  PretrainParams p = tiny_run(dir);
  p.log_csv = dir.file("log.csv");
  p.export_path = dir.file("model.safetensors");
  const PretrainResult r = pretrain(p);
  EXPECT_EQ(r.steps_done, 6);
  EXPECT_TRUE(std::isfinite(r.last_loss));
  EXPECT_GT(r.val_psnr_input, 10);
  EXPECT_GT(r.val_psnr_output, 10);
  const std::string log = test::read_text(p.log_csv);
  EXPECT_EQ(log.rfind("step,loss,lr,val_psnr_input,val_psnr_output,seconds,gain_phantom_x2,gain_"
                      "phantom_x4,gain_phantom_x8\n1,",
                      0),
            0u)
      << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 7);
  const Backbone bb = load_backbone(p.export_path);
  EXPECT_EQ(bb.config, tiny_config());
  EXPECT_EQ(bb.metadata.at("name"), "isoprompt-default");
  EXPECT_EQ(bb.metadata.at("pretrain_steps"), "6");
  // The exported weights are the checkpoint's weights.
  const TensorMap ck = read_safetensors(p.checkpoint_path);
  for (const auto& [name, w] : bb.net->weights())
    EXPECT_TRUE(at::equal(w, ck.at("param/" + name))) << name;
}

// 6 steps straight == 3 steps, stop, resume, 3 more: bitwise equal weights and Adam state.
TEST(Pretrain, ResumeReproducesTheUninterruptedRun) {
  QuietLogs q;
  TempDir a, b;
  PretrainParams pa = tiny_run(a);
  pretrain(pa);
  PretrainParams pb = tiny_run(b);
  pb.steps = 3;
  pretrain(pb);
  pb.steps = 6;
  pb.resume_path = pb.checkpoint_path;
  const PretrainResult r = pretrain(pb);
  EXPECT_EQ(r.steps_done, 6);
  std::map<std::string, std::string> ma, mb;
  const TensorMap ta = read_safetensors(pa.checkpoint_path, &ma),
                  tb = read_safetensors(pb.checkpoint_path, &mb);
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, t] : ta) EXPECT_TRUE(at::equal(t, tb.at(name))) << name;
  EXPECT_EQ(ma.at("step"), "6");
  EXPECT_EQ(mb.at("step"), "6");
}

TEST(Pretrain, ResumeRejectsOtherSettings) {
  QuietLogs q;
  TempDir dir;
  PretrainParams p = tiny_run(dir);
  p.steps = 1;
  pretrain(p);
  p.resume_path = p.checkpoint_path;
  p.steps = 2;
  p.seed = 43;
  // Names the setting that differs, not the whole 1 kB settings object.
  EXPECT_THAT(test::input_error_of([&] { pretrain(p); }), testing::HasSubstr("was made with other data settings (seed)"));
  // A deliberate change of the data mid-campaign continues from the saved step.
  p.resume_new_data = true;
  EXPECT_EQ(pretrain(p).steps_done, 2);
  p.resume_new_data = false;
  p.pairs.log_uniform_factor = true;
  EXPECT_THAT(test::input_error_of([&] { pretrain(p); }), testing::HasSubstr("(factor_draw)"));
  p.pairs.log_uniform_factor = false;
  p.config.embed_dim = 16;
  EXPECT_THROW(pretrain(p), InputError);
}

// Ctrl-C: the run stops with Cancelled after writing a checkpoint one can resume from.
TEST(Pretrain, InterruptWritesCheckpoint) {
  QuietLogs q;
  TempDir dir;
  PretrainParams p = tiny_run(dir);
  request_interrupt();
  EXPECT_THROW(pretrain(p), Cancelled);
  clear_interrupt();
  std::map<std::string, std::string> meta;
  read_safetensors(p.checkpoint_path, &meta);
  EXPECT_EQ(meta.at("step"), "0");
  p.resume_path = p.checkpoint_path;
  EXPECT_EQ(pretrain(p).steps_done, 6);
}

TEST(Pretrain, RejectsBadParams) {
  TempDir dir;
  PretrainParams p = tiny_run(dir);
  p.phantom_size = 8;
  EXPECT_EQ(test::input_error_of([&] { pretrain(p); }), "--phantom-size (8) must be at least the crop size (16)");
}

// The default configuration meets the CPU budget on paper: <= 1/6 of UniFMIR's FLOPs.
TEST(DefaultConfig, IsSixTimesCheaperThanUniFMIR) {
  const SwinConfig d = default_backbone_config(), u;
  EXPECT_LE(d.gflops(256, 256), u.gflops(256, 256) / 6);
  EXPECT_NEAR(u.gflops(256, 256), 221.8, 0.5);
  EXPECT_NO_THROW(d.validate());
}

}  // namespace
}  // namespace isoprompt
