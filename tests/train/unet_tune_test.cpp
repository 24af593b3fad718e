// tune() in Mode::UNet: CARE's U-Net from scratch on the prompt's pairs, and its files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "isoprompt/error.h"
#include "isoprompt/train.h"
#include "test_util.h"
#include "tiny_models.h"

using namespace isoprompt;

namespace {

// Smooth structure along every axis, z-step 4x the pixel (K = 4).
Volume wavy_volume() {
  Volume v({8, 48, 48}, DType::F32, {4.0, 1.0, 1.0});
  float* d = v.data<float>();
  for (int64_t i = 0; i < v.numel(); ++i) {
    const int64_t z = i / (48 * 48), y = (i / 48) % 48, x = i % 48;
    d[i] = static_cast<float>(std::sin(0.5 * x + 0.7 * z) * std::cos(0.35 * y) +
                              0.3 * std::sin(0.9 * y));
  }
  return v;
}

TuneParams short_run() {
  TuneParams p;
  p.mode = TuneParams::Mode::UNet;
  p.steps = 6;
  p.batch = 2;
  p.crop_min = 16;
  p.crop_max = 32;
  p.eval_every = 2;
  p.val_crops = 4;
  p.seed = 3;
  p.unet.filters = 8;  // small and fast; the architecture is CARE's otherwise
  return p;
}

TensorMap weights_of(const UNet& net) {
  TensorMap m;
  for (const auto& kv : net->weights()) m[kv.first] = kv.second.detach().clone();
  return m;
}

}  // namespace

TEST(UNetTune, TrainsFromScratchKeepsTheBestAndIsDeterministic) {
  const Volume v = wavy_volume();
  const TuneParams p = short_run();
  const TuneResult r = tune(v, p);
  ASSERT_TRUE(r.unet);
  EXPECT_FALSE(r.model.has_prompts());
  EXPECT_EQ(r.steps_run, 6);
  EXPECT_TRUE(r.evaluated);
  EXPECT_EQ(r.info.mode, TuneParams::Mode::UNet);
  EXPECT_TRUE(r.info.unet == p.unet);
  EXPECT_DOUBLE_EQ(r.info.factor, 4.0);
  EXPECT_EQ(r.info.steps, 6);
  EXPECT_TRUE(r.info.backbone_hash.empty());
  ASSERT_EQ(r.val_history.size(), 4u);  // the start, then steps 2, 4 and 6
  EXPECT_EQ(r.info.zero_shot_psnr, r.val_history.front().second);
  double best = -1;
  int64_t best_step = -1;
  for (const auto& [step, db] : r.val_history)
    if (db > best) best = db, best_step = step;
  EXPECT_EQ(r.info.val_psnr, best);
  EXPECT_EQ(r.info.best_step, best_step);
  EXPECT_EQ(r.loss_history.size(), 6u);
  for (const auto& t : r.unet->parameters()) EXPECT_FALSE(t.requires_grad());

  // The same seed gives the same network, bit for bit; the backbone overload dispatches here.
  Backbone none;
  const TuneResult again = tune(v, none, p);
  const TensorMap a = weights_of(r.unet), b = weights_of(again.unet);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& kv : a) EXPECT_TRUE(torch::equal(kv.second, b.at(kv.first))) << kv.first;
  EXPECT_EQ(again.info.val_psnr, r.info.val_psnr);

  TuneParams prompt = p;
  prompt.mode = TuneParams::Mode::Prompt;
  EXPECT_THROW(tune(v, prompt), InputError);
  TuneParams resumed = p;
  resumed.resume_from = "x.safetensors";
  EXPECT_THROW(tune(v, resumed), InputError);
}

TEST(UNetTune, FileRoundTripAndModeChecks) {
  test::TempDir dir;
  const Volume v = wavy_volume();
  TuneParams p = short_run();
  p.steps = 2;
  TuneResult r = tune(v, p);
  const std::string path = dir.file("u.safetensors");
  save_prompt(path, r);

  const PromptInfo info = read_prompt_info(path);
  EXPECT_EQ(info.mode, TuneParams::Mode::UNet);
  EXPECT_TRUE(info.unet == p.unet);
  EXPECT_EQ(info.val_psnr, r.info.val_psnr);
  EXPECT_EQ(info.norm.lo, r.info.norm.lo);
  EXPECT_EQ(info.norm.hi, r.info.norm.hi);
  EXPECT_EQ(info.interp, r.info.interp);

  LoadedPrompt lp = load_unet(path);
  ASSERT_TRUE(lp.unet);
  const at::Tensor x = torch::rand({2, 1, 19, 23});
  {
    torch::NoGradGuard g;
    EXPECT_TRUE(torch::equal(lp.unet->forward(x), r.unet->forward(x)));
  }

  // A backbone's loader refuses the U-Net, and the U-Net's loader a prompt.
  torch::manual_seed(7);
  Backbone bb;
  bb.config = test::tiny_swin_config();
  bb.net = SwinIR(bb.config);
  bb.name = "tiny";
  bb.hash = backbone_hash(bb.net);
  try {
    load_prompt(path, bb);
    FAIL() << "load_prompt accepted a U-Net file";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(std::string(e.what()),
              path + " holds a U-Net trained from scratch (mode unet), which needs no backbone");
  }
  TuneParams pp;
  pp.steps = 1;
  pp.batch = 2;
  pp.crop_min = pp.crop_max = 16;
  pp.cache_crops = 2;
  pp.val_crops = 2;
  const std::string prompt = dir.file("p.safetensors");
  save_prompt(prompt, tune(v, bb, pp));
  try {
    load_unet(prompt);
    FAIL() << "load_unet accepted a prompt file";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(std::string(e.what()),
              prompt + " holds a prompt for backbone tiny, not a U-Net (mode unet)");
  }
}
