// The prompt patch-attention module on its own (no backbone).
#include <gtest/gtest.h>

#include <cmath>

#include <torch/torch.h>

#include "isoprompt/error.h"
#include "isoprompt/prompt.h"

using namespace isoprompt;

namespace {

PromptConfig small_config(int64_t rank) {
  PromptConfig c;
  c.num_prompts = 5;
  c.attn_dim = 6;
  c.query_rank = rank;
  return c;
}

// The method written out literally: unfold 4×4 patches into D = 16C vectors, Q = patches·Wqᵀ,
// softmax(QKᵀ/√d) over prompts, weights·V, fold back, times the output gain.
at::Tensor reference_delta(PromptAttention& m, const at::Tensor& f) {
  const int64_t c = f.size(1), h = f.size(2), w = f.size(3);
  const int64_t hp = (h + 3) / 4 * 4, wp = (w + 3) / 4 * 4;
  const at::Tensor fp = at::replication_pad2d(f, {0, wp - w, 0, hp - h});
  const at::Tensor patches = at::im2col(fp, {4, 4}, {1, 1}, {0, 0}, {4, 4}).transpose(1, 2);
  // Dense query weight d×(C·16) equivalent to reduce (r×C) then query_weight (d×r×4×4).
  at::Tensor wq;
  if (m->reduce.defined()) {
    wq = at::einsum("drij,rc->dcij", {m->query_weight, m->reduce.squeeze(-1).squeeze(-1)});
  } else {
    wq = m->query_weight;
  }
  const int64_t d = wq.size(0), n = m->keys.size(0);
  const at::Tensor q = at::matmul(patches, wq.reshape({d, -1}).t()) + m->query_bias;  // B×L×d
  const at::Tensor s = at::softmax(at::matmul(q, m->keys.t()) / std::sqrt(double(d)), -1);
  const at::Tensor v = (m->values * m->gain.view({1, c, 1, 1})).reshape({n, -1});  // N×D
  const at::Tensor o = at::matmul(s, v).transpose(1, 2);                            // B×D×L
  return at::col2im(o, {hp, wp}, {4, 4}, {1, 1}, {0, 0}, {4, 4}).slice(2, 0, h).slice(3, 0, w);
}

}  // namespace

TEST(PromptAttention, AddsExactlyZeroAtInitialisation) {
  torch::manual_seed(1);
  PromptAttention m(7, small_config(3));
  for (auto hw : {std::pair<int64_t, int64_t>{16, 24}, {10, 13}, {3, 5}}) {
    const at::Tensor f = torch::randn({2, 7, hw.first, hw.second});
    const at::Tensor out = m->forward(f);
    ASSERT_EQ(out.sizes(), f.sizes());
    EXPECT_TRUE(torch::equal(out, f)) << hw.first << "x" << hw.second;
  }
}

TEST(PromptAttention, EqualsTheLiteralUnfoldAttentionFold) {
  torch::manual_seed(2);
  for (int64_t rank : {0, 3}) {
    PromptAttention m(5, small_config(rank));
    m->to(torch::kDouble);
    {
      torch::NoGradGuard g;
      m->gain.normal_();
    }
    for (auto hw : {std::pair<int64_t, int64_t>{8, 12}, {10, 13}}) {
      const at::Tensor f = torch::randn({2, 5, hw.first, hw.second}, torch::kDouble);
      torch::NoGradGuard g;
      const at::Tensor got = m->delta(f), want = reference_delta(m, f);
      EXPECT_LT((got - want).abs().max().item<double>(), 1e-12) << "rank " << rank;
      EXPECT_GT(want.abs().max().item<double>(), 1e-3);  // not trivially zero
    }
  }
}

TEST(PromptAttention, AttentionIsADistributionOverPrompts) {
  torch::manual_seed(3);
  PromptAttention m(4, small_config(2));
  torch::NoGradGuard g;
  const at::Tensor a = m->attention(torch::randn({3, 4, 9, 14}));
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{3, 5, 3, 4}));
  EXPECT_LT((a.sum(1) - 1).abs().max().item<float>(), 1e-5);
  EXPECT_GE(a.min().item<float>(), 0.f);
}

TEST(PromptAttention, GradientMatchesFiniteDifferencesInDouble) {
  torch::manual_seed(4);
  PromptAttention m(3, small_config(2));
  m->to(torch::kDouble);
  {
    torch::NoGradGuard g;
    m->gain.normal_();  // a zero gain would leave query/keys without gradient
  }
  const at::Tensor f = torch::randn({2, 3, 10, 9}, torch::kDouble).requires_grad_(true);
  const at::Tensor r = torch::randn({2, 3, 10, 9}, torch::kDouble);
  auto objective = [&] { return (m->forward(f) * r).sum(); };
  m->zero_grad();
  objective().backward();

  auto check = [&](at::Tensor p, const at::Tensor& grad, const std::string& name) {
    ASSERT_TRUE(grad.defined()) << name;
    const int64_t n = p.numel();
    for (int64_t k = 0; k < std::min<int64_t>(n, 6); ++k) {
      const int64_t i = (k * 7919) % n;
      auto flat = p.detach().view(-1);
      const double orig = flat[i].item<double>(), h = 1e-6;
      flat[i] = orig + h;
      const double up = objective().item<double>();
      flat[i] = orig - h;
      const double down = objective().item<double>();
      flat[i] = orig;
      const double fd = (up - down) / (2 * h);
      const double an = grad.reshape(-1)[i].item<double>();
      EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::abs(fd))) << name << "[" << i << "]";
    }
  };
  for (const auto& p : m->named_parameters()) check(p.value(), p.value().grad(), p.key());
  check(f, f.grad(), "input");
}

TEST(PromptAttention, ParameterCountsStayUnderTenPercentOfTheBackbone) {
  PromptConfig def;  // N 16, d 64, r 8
  // UniFMIR isotropic backbone: embed 90, 1,527,981 parameters (docs/UNIFMIR.md, measured).
  const int64_t c = 90, backbone = 1527981;
  const int64_t want = 8 * 90 + 64 * 8 * 16 + 64 + 16 * 64 + 16 * 90 * 16 + 90;
  EXPECT_EQ(want, 33130);
  EXPECT_EQ(prompt_module_parameters(c, def), want);
  PromptAttention m(c, def);
  EXPECT_EQ(m->parameter_count(), want);
  EXPECT_LT(10 * want, backbone);
  EXPECT_LT(10 * 4 * want, backbone);  // tail + one module after each of the 3 stages
  PromptConfig dense = def;
  dense.query_rank = 0;
  EXPECT_EQ(prompt_module_parameters(c, dense), 64 * 90 * 16 + 64 + 16 * 64 + 16 * 90 * 16 + 90);
  EXPECT_EQ(PromptAttention(c, dense)->parameter_count(), prompt_module_parameters(c, dense));
}

TEST(PromptAttention, InitialisesPromptsFromFeaturePatchesWithoutChangingTheOutput) {
  torch::manual_seed(5);
  PromptAttention m(6, small_config(2));
  const at::Tensor feats = torch::randn({2, 6, 12, 16});
  m->init_from_features(feats, 42);
  const at::Tensor patches = at::im2col(feats, {4, 4}, {1, 1}, {0, 0}, {4, 4});  // B×96×L
  const at::Tensor all = patches.transpose(1, 2).reshape({-1, 96});
  for (int64_t i = 0; i < 5; ++i) {
    const at::Tensor v = m->values[i].reshape({1, 96});
    EXPECT_EQ((all - v).abs().sum(1).min().item<float>(), 0.f) << "prompt " << i;
  }
  EXPECT_TRUE(torch::equal(m->forward(feats), feats));
  // Deterministic in the seed.
  PromptAttention m2(6, small_config(2));
  m2->init_from_features(feats, 42);
  EXPECT_TRUE(torch::equal(m->values, m2->values));
}

TEST(PromptAttention, RejectsBadShapesAndPlacements) {
  PromptAttention m(4, small_config(2));
  try {
    m->forward(torch::zeros({1, 3, 8, 8}));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("B×4×H×W"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_placement("stages"), PromptConfig::Placement::Stages);
  EXPECT_STREQ(placement_name(PromptConfig::Placement::Both), "both");
  try {
    parse_placement("head");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "unknown prompt placement 'head' (expected tail, stages or both)");
  }
  PromptConfig bad;
  bad.num_prompts = -1;
  try {
    PromptAttention(4, bad);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "number of prompts must be in 1..4096, got -1");
  }
}

TEST(PromptAttention, AutoSizesKeepTheModulesUnderTenPercentOfTheBackbone) {
  // UniFMIR (90 channels, 1,527,981 parameters): the method's 16 prompts and d 64 (2.2%).
  const PromptConfig unifmir = resolve_prompt_config(PromptConfig{}, 90, 1, 1527981);
  EXPECT_EQ(unifmir.num_prompts, 16);
  EXPECT_EQ(unifmir.attn_dim, 64);
  // The default backbone (32 channels, 103,641): 16 / 64 would hold 17,760 (17%); 8 / 32 hold 8,768.
  PromptConfig def;
  def.num_prompts = 16;
  def.attn_dim = 64;
  EXPECT_EQ(prompt_module_parameters(32, def), 17760);
  const PromptConfig small = resolve_prompt_config(PromptConfig{}, 32, 1, 103641);
  EXPECT_EQ(small.num_prompts, 8);
  EXPECT_EQ(small.attn_dim, 32);
  EXPECT_EQ(prompt_module_parameters(32, small), 8768);
  // Four modules (tail and 3 stages): halved down to the floor of 4 prompts and d 16, no further.
  const PromptConfig four = resolve_prompt_config(PromptConfig{}, 32, 4, 103641);
  EXPECT_EQ(four.num_prompts, 4);
  EXPECT_EQ(four.attn_dim, 16);
  // A size the user gave stays; only the auto one shrinks.
  PromptConfig given;
  given.num_prompts = 32;
  const PromptConfig kept = resolve_prompt_config(given, 32, 1, 103641);
  EXPECT_EQ(kept.num_prompts, 32);
  EXPECT_EQ(kept.attn_dim, 16);
  // A module on its own takes the method's sizes.
  EXPECT_EQ(PromptAttention(32, PromptConfig{})->config().num_prompts, kMethodPrompts);
  EXPECT_EQ(PromptAttention(32, PromptConfig{})->config().attn_dim, kMethodAttnDim);
}
