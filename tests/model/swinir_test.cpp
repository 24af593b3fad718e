// SwinIR module: configuration, counts, stage hook, gradients.
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <map>

#include "isoprompt/error.h"
#include "isoprompt/model.h"
#include "isoprompt/runtime.h"

namespace isoprompt {
namespace {

SwinConfig small() {
  SwinConfig c;
  c.embed_dim = 8;
  c.depths = {2, 1};
  c.num_heads = {2, 4};
  c.num_feat = 4;
  return c;
}

int64_t numel_of_parameters(const SwinIR& net) {
  int64_t n = 0;
  for (const auto& p : net->parameters()) n += p.numel();
  return n;
}

TEST(SwinConfig, CountsMatchUniFMIR) {
  SwinConfig full;
  EXPECT_EQ(full.parameter_count(), 1527981);  // UNIFMIR.md §2
  EXPECT_EQ(numel_of_parameters(SwinIR(full)), 1527981);
  // 1,692,378 multiply-adds per padded pixel (UNIFMIR.md §4): 221.8 GFLOP per 256x256 slice.
  EXPECT_DOUBLE_EQ(full.gflops(256, 256), 2.0 * 1692378 * 256 * 256 / 1e9);
  EXPECT_DOUBLE_EQ(full.gflops(250, 249), full.gflops(256, 256));  // padded to multiples of 8
  EXPECT_DOUBLE_EQ(full.gflops(64, 64), 2.0 * 1692378 * 64 * 64 / 1e9);
  SwinConfig tiny;
  tiny.embed_dim = 12;
  tiny.depths = {2, 2};
  tiny.num_heads = {2, 2};
  EXPECT_EQ(tiny.parameter_count(), 14805);  // golden README
  SwinConfig s = small();
  EXPECT_EQ(numel_of_parameters(SwinIR(s)), s.parameter_count());
  EXPECT_EQ(SwinIR(full)->named_parameters().size() + SwinIR(full)->named_buffers().size(), 279u);
}

TEST(SwinConfig, JsonRoundTripAndErrors) {
  SwinConfig c = small();
  c.mlp_ratio = 1.5;
  EXPECT_EQ(SwinConfig::from_json(c.to_json()), c);
  EXPECT_EQ(SwinConfig{}.to_json(),
            R"({"in_chans":1,"embed_dim":90,"depths":[6,6,6],"num_heads":[6,6,6],"window_size":8,"mlp_ratio":2.0,"num_feat":32,"img_size":64})");
  EXPECT_THROW(SwinConfig::from_json("iso_tiny"), CheckpointError);
  EXPECT_THROW(SwinConfig::from_json(R"({"embed_dim": 10, "num_heads": [3,3,3]})"), CheckpointError);
  EXPECT_THROW(SwinConfig::from_json(R"({"colour": 1})"), CheckpointError);
  EXPECT_THROW(SwinConfig::from_json(R"({"depths": [1], "num_heads": [6,6]})"), CheckpointError);
}

TEST(SwinIR, StageHookSeesEveryStageAndCanChangeTheOutput) {
  SwinIR net(small());
  net->eval();
  torch::NoGradGuard ng;
  at::Tensor x = at::rand({2, 1, 13, 20});
  at::Tensor base = net->forward(x);
  EXPECT_EQ(base.sizes(), x.sizes());
  std::vector<int64_t> stages;
  net->set_stage_hook([&](int64_t s, const at::Tensor& f) {
    stages.push_back(s);
    EXPECT_EQ(f.sizes(), (at::IntArrayRef{2, 8, 16, 24}));  // padded to multiples of 8
    return f;
  });
  EXPECT_TRUE(at::equal(net->forward(x), base));
  EXPECT_EQ(stages, (std::vector<int64_t>{0, 1}));
  // A per-channel offset (a constant over channels would be removed by the final LayerNorm).
  const at::Tensor offset = at::linspace(-0.5, 0.5, 8).view({1, 8, 1, 1});
  net->set_stage_hook([&](int64_t s, const at::Tensor& f) { return s == 1 ? f + offset : f; });
  EXPECT_GT((net->forward(x) - base).abs().max().item<double>(), 1e-3);
  net->set_stage_hook([](int64_t, const at::Tensor& f) { return f.slice(2, 0, 8); });
  EXPECT_THROW(net->forward(x), Error);
  net->set_stage_hook(nullptr);
  EXPECT_TRUE(at::equal(net->forward(x), base));
}

TEST(SwinIR, InputChecks) {
  SwinIR net(small());
  torch::NoGradGuard ng;
  EXPECT_THROW(net->forward(at::rand({1, 2, 16, 16})), InputError);
  EXPECT_THROW(net->forward(at::rand({16, 16})), InputError);
  EXPECT_THROW(net->forward(at::rand({1, 1, 3, 16})), InputError);  // reflect pad of 5 on 3 rows
  EXPECT_EQ(net->forward(at::rand({1, 1, 5, 8})).sizes(), (at::IntArrayRef{1, 1, 5, 8}));
}

TEST(SwinIR, TranslationByAWindowCommutesAwayFromTheBorders) {
  // Swin attention with relative bias is equivariant to shifts by whole windows (2 windows here,
  // so the shifted-window regions line up) wherever the mask's border regions are not involved.
  SwinIR net(small());
  torch::NoGradGuard ng;
  at::Tensor x = at::rand({1, 1, 48, 48});
  at::Tensor a = net->features(x);
  at::Tensor b = net->features(at::roll(x, {16}, {3}));
  // Compare the interior columns far from both the image border and the wrap-around seam.
  at::Tensor ia = a.slice(3, 16, 24).slice(2, 16, 32), ib = b.slice(3, 32, 40).slice(2, 16, 32);
  EXPECT_LT((ia - ib).abs().max().item<double>(), 1e-3);
}

TEST(SwinIR, FusedKernelsMatchTheAtenPath) {
  // Shifted blocks, padding, batch > 1 and several heads; the fused path (when built in) must
  // agree with the ATen composition that the golden tests also cover. Two threads: worker
  // threads do not inherit no-grad mode, which the fused path must cope with.
  set_threads(2);
  SwinConfig c = small();
  c.depths = {2, 2};
  SwinIR net(c);
  for (auto& p : net->parameters()) {
    torch::NoGradGuard ng;
    p.add_(at::randn_like(p) * 0.3);
  }
  torch::NoGradGuard ng;
  const at::Tensor x = at::rand({3, 1, 21, 30});
  net->set_fused_kernels(false);
  const at::Tensor ref = net->forward(x);
  net->set_fused_kernels(true);
  const at::Tensor fused = net->forward(x);
  std::printf("fused kernels %s: max |fused - aten| = %.3g\n",
              SwinIRImpl::fused_kernels_available() ? "built in" : "not built in",
              (fused - ref).abs().max().item<double>());
  EXPECT_LE((fused - ref).abs().max().item<double>(), 1e-5 * (1 + ref.abs().max().item<double>()));
}

TEST(SwinIR, FusedTrainingGradientsMatchAutogradThroughAten) {
  // A training step (loss.backward) with the fused kernels on (the window attention's fused
  // backward) against the ATen composition: every parameter's gradient, including
  // relative_position_bias_table's through the index gather, within 1e-5 of its scale.
  set_threads(2);
  SwinConfig c = small();
  c.embed_dim = 16;
  c.num_heads = {2, 4};
  c.depths = {2, 2};
  SwinIR net(c);
  {
    torch::NoGradGuard ng;
    for (auto& p : net->parameters()) p.add_(at::randn_like(p) * 0.2);
  }
  const at::Tensor x = at::rand({2, 1, 21, 30}), y = at::rand({2, 1, 21, 30});
  auto grads = [&](bool fused) {
    net->set_fused_kernels(fused);
    for (auto& p : net->parameters()) p.mutable_grad() = at::Tensor();
    const at::Tensor loss = (net->forward(x) - y).abs().mean();
    loss.backward();
    std::map<std::string, at::Tensor> out;
    for (const auto& p : net->named_parameters()) out[p.key()] = p.value().grad().clone();
    out["loss"] = loss.detach().reshape({1});
    return out;
  };
  const auto ref = grads(false), got = grads(true);
  ASSERT_EQ(ref.size(), got.size());
  for (const auto& [name, r] : ref) {
    const double scale = std::max(r.abs().max().item<double>(), 1e-12);
    EXPECT_LE((got.at(name) - r).abs().max().item<double>() / scale, 1e-5) << name;
  }
  EXPECT_GT(ref.at("layers.0.residual_group.blocks.1.attn.relative_position_bias_table")
                .abs()
                .sum()
                .item<double>(),
            0);
}

TEST(SwinIR, GradientsReachWeightsAndHookParameters) {
  SwinIR net(small());
  at::Tensor prompt = at::zeros({1, 8, 1, 1}).set_requires_grad(true);
  net->set_stage_hook([&](int64_t, const at::Tensor& f) { return f + prompt; });
  at::Tensor y = net->forward(at::rand({1, 1, 16, 16}));
  y.sum().backward();
  ASSERT_TRUE(prompt.grad().defined());
  EXPECT_GT(prompt.grad().abs().sum().item<double>(), 0);
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
  }
}

}  // namespace
}  // namespace isoprompt
