#include <algorithm>
#include <cmath>
#include <random>

#include <torch/torch.h>

#include "isoprompt/error.h"
#include "isoprompt/prompt.h"

namespace isoprompt {

const char* placement_name(PromptConfig::Placement p) {
  switch (p) {
    case PromptConfig::Placement::Tail: return "tail";
    case PromptConfig::Placement::Stages: return "stages";
    case PromptConfig::Placement::Both: return "both";
  }
  return "tail";
}

PromptConfig::Placement parse_placement(const std::string& s) {
  if (s == "tail") return PromptConfig::Placement::Tail;
  if (s == "stages") return PromptConfig::Placement::Stages;
  if (s == "both") return PromptConfig::Placement::Both;
  throw_input("unknown prompt placement '{}' (expected tail, stages or both)", s);
}

// Auto sizes of a module on its own: the method's.
static PromptConfig with_method_sizes(PromptConfig cfg) {
  if (cfg.num_prompts == 0) cfg.num_prompts = kMethodPrompts;
  if (cfg.attn_dim == 0) cfg.attn_dim = kMethodAttnDim;
  return cfg;
}

int64_t prompt_module_parameters(int64_t channels, const PromptConfig& config) {
  const PromptConfig cfg = with_method_sizes(config);
  const int64_t p2 = PromptAttentionImpl::kPatch * PromptAttentionImpl::kPatch;
  const int64_t n = cfg.num_prompts, d = cfg.attn_dim, r = cfg.query_rank;
  const int64_t query = r > 0 ? r * channels + d * r * p2 + d : d * channels * p2 + d;
  return query + n * d + n * channels * p2 + channels;
}

static void check_config(int64_t channels, const PromptConfig& cfg) {
  if (channels <= 0) throw_input("prompt module needs a positive channel count, got {}", channels);
  if (cfg.num_prompts < 1 || cfg.num_prompts > 4096)
    throw_input("number of prompts must be in 1..4096, got {}", cfg.num_prompts);
  if (cfg.attn_dim < 1 || cfg.attn_dim > 4096)
    throw_input("prompt attention dimension must be in 1..4096, got {}", cfg.attn_dim);
  if (cfg.query_rank < 0 || cfg.query_rank > 4096)
    throw_input("prompt query rank must be in 0..4096, got {}", cfg.query_rank);
}

PromptConfig resolve_prompt_config(PromptConfig cfg, int64_t channels, int64_t modules,
                                   int64_t backbone_parameters) {
  const bool auto_n = cfg.num_prompts == 0, auto_d = cfg.attn_dim == 0;
  cfg = with_method_sizes(cfg);
  auto share = [&] {
    return static_cast<double>(modules * prompt_module_parameters(channels, cfg)) /
           static_cast<double>(std::max<int64_t>(1, backbone_parameters));
  };
  while ((auto_n || auto_d) && share() > 0.1) {
    const bool can_n = auto_n && cfg.num_prompts > 4, can_d = auto_d && cfg.attn_dim > 16;
    if (!can_n && !can_d) break;
    if (can_n) cfg.num_prompts /= 2;
    if (can_d) cfg.attn_dim /= 2;
  }
  return cfg;
}

PromptAttentionImpl::PromptAttentionImpl(int64_t channels, const PromptConfig& config)
    : channels_(channels), cfg_(with_method_sizes(config)) {
  const PromptConfig& cfg = cfg_;
  check_config(channels, cfg);
  torch::NoGradGuard no_grad;
  const int64_t n = cfg.num_prompts, d = cfg.attn_dim, r = cfg.query_rank, p = kPatch;
  const int64_t in = r > 0 ? r : channels;
  if (r > 0) {
    const double b = 1.0 / std::sqrt(static_cast<double>(channels));
    reduce = register_parameter("reduce", torch::empty({r, channels, 1, 1}).uniform_(-b, b));
  }
  const double bq = 1.0 / std::sqrt(static_cast<double>(in * p * p));
  query_weight = register_parameter("query_weight", torch::empty({d, in, p, p}).uniform_(-bq, bq));
  query_bias = register_parameter("query_bias", torch::empty({d}).uniform_(-bq, bq));
  keys = register_parameter("keys", torch::randn({n, d}));
  values = register_parameter("values", torch::randn({n, channels, p, p}) * 0.1);
  // Zero output gain: the module adds exactly zero until it has been trained.
  gain = register_parameter("gain", torch::zeros({channels}));
}

int64_t PromptAttentionImpl::parameter_count() const {
  int64_t total = 0;
  for (const auto& t : parameters()) total += t.numel();
  return total;
}

at::Tensor PromptAttentionImpl::pad(const at::Tensor& f) const {
  if (f.dim() != 4 || f.size(1) != channels_)
    throw_input("prompt module expects a B×{}×H×W feature map, got {}", channels_,
                fmt::format("{}", fmt::join(f.sizes(), "×")));
  const int64_t h = f.size(2), w = f.size(3);
  const int64_t ph = (kPatch - h % kPatch) % kPatch, pw = (kPatch - w % kPatch) % kPatch;
  if (ph == 0 && pw == 0) return f;
  // Replicate padding needs no minimum size (reflect would need > pad pixels).
  return at::replication_pad2d(f, {0, pw, 0, ph});
}

at::Tensor PromptAttentionImpl::queries(const at::Tensor& padded) {
  at::Tensor x = padded;
  if (reduce.defined()) x = at::conv2d(x, reduce);
  return at::conv2d(x, query_weight, query_bias, {kPatch, kPatch});
}

at::Tensor PromptAttentionImpl::attention(const at::Tensor& f) {
  const at::Tensor q = queries(pad(f));  // B×d×h×w: one query per 4×4 patch
  const int64_t n = keys.size(0), d = keys.size(1);
  const at::Tensor scores = at::conv2d(q, keys.view({n, d, 1, 1})) *
                            (1.0 / std::sqrt(static_cast<double>(d)));  // QKᵀ/√d
  return at::softmax(scores, 1);
}

at::Tensor PromptAttentionImpl::delta(const at::Tensor& f) {
  const at::Tensor w = attention(f);  // B×N×h×w
  // weights·V folded back to pixels: a transposed convolution with kernel = stride = 4
  // writes Σ_n w_n·V_n into each patch, which is exactly fold(weights·V).
  const at::Tensor v = values * gain.view({1, channels_, 1, 1});
  const at::Tensor out = at::conv_transpose2d(w, v, {}, {kPatch, kPatch});
  if (out.size(2) == f.size(2) && out.size(3) == f.size(3)) return out;
  return out.slice(2, 0, f.size(2)).slice(3, 0, f.size(3));
}

at::Tensor PromptAttentionImpl::forward(const at::Tensor& f) { return f + delta(f); }

void PromptAttentionImpl::init_from_features(const at::Tensor& features, uint64_t seed) {
  torch::NoGradGuard no_grad;
  if (features.dim() != 4 || features.size(1) != channels_ || features.size(2) < kPatch ||
      features.size(3) < kPatch)
    throw_input("prompt initialisation needs B×{}×H×W features with H, W >= {}", channels_, kPatch);
  const at::Tensor f = features.to(values.device(), values.scalar_type());
  const int64_t b = f.size(0), gh = f.size(2) / kPatch, gw = f.size(3) / kPatch;
  const int64_t n = keys.size(0);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, b * gh * gw - 1);
  std::vector<at::Tensor> patches;
  patches.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = pick(rng);
    const int64_t bi = k / (gh * gw), yi = (k / gw) % gh, xi = k % gw;
    patches.push_back(f[bi].slice(1, yi * kPatch, (yi + 1) * kPatch)
                          .slice(2, xi * kPatch, (xi + 1) * kPatch));
  }
  const at::Tensor p = at::stack(patches);  // N×C×4×4
  values.copy_(p);
  keys.copy_(queries(p).view({n, -1}));
}

}  // namespace isoprompt
