#include <torch/torch.h>

#include "isoprompt/error.h"
#include "isoprompt/prompted.h"

namespace isoprompt {

namespace {

// Installs a stage hook for the duration of one features() call and restores the
// previous hook afterwards (also on exceptions), so the shared backbone net is left as
// it was found.
class HookGuard {
 public:
  HookGuard(SwinIR& net, SwinIRImpl::StageHook hook) : net_(net), old_(net->stage_hook()) {
    net_->set_stage_hook(std::move(hook));
  }
  ~HookGuard() { net_->set_stage_hook(old_); }
  HookGuard(const HookGuard&) = delete;
  HookGuard& operator=(const HookGuard&) = delete;

 private:
  SwinIR& net_;
  SwinIRImpl::StageHook old_;
};

}  // namespace

std::string backbone_hash(const SwinIR& net) {
  TensorMap m;
  for (const auto& kv : net->weights()) m[kv.first] = kv.second;
  return weights_hash(m);
}

PromptedModel::PromptedModel(Backbone backbone, const PromptConfig& cfg, bool with_prompts)
    : backbone_(std::move(backbone)), cfg_(cfg) {
  if (!backbone_.net) throw_error("prompted model needs a loaded backbone");
  const int64_t c = backbone_.net->config().embed_dim;
  using P = PromptConfig::Placement;
  const int64_t modules = (cfg.placement == P::Stages ? 0 : 1) +
                          (cfg.placement == P::Tail ? 0 : backbone_.net->num_stages());
  cfg_ = resolve_prompt_config(cfg, c, modules, backbone_.net->config().parameter_count());
  if (!with_prompts) return;
  const torch::Device dev = device();
  if (cfg.placement == P::Tail || cfg.placement == P::Both) {
    tail_ = PromptAttention(c, cfg_);
    tail_->to(dev);
  }
  if (cfg.placement == P::Stages || cfg.placement == P::Both) {
    for (int64_t i = 0; i < backbone_.net->num_stages(); ++i) {
      stages_.emplace_back(c, cfg_);
      stages_.back()->to(dev);
    }
  }
}

torch::Device PromptedModel::device() const {
  const auto params = backbone_.net->parameters();
  return params.empty() ? torch::Device(torch::kCPU) : params.front().device();
}

void PromptedModel::to(torch::Device device) {
  backbone_.net->to(device);
  if (tail_) tail_->to(device);
  for (auto& m : stages_) m->to(device);
}

at::Tensor PromptedModel::features(const at::Tensor& x) {
  if (stages_.empty()) return backbone_.net->features(x);
  auto mods = stages_;  // shared holders: the hook keeps them alive
  HookGuard guard(backbone_.net, [mods](int64_t stage, const at::Tensor& f) mutable -> at::Tensor {
    if (stage < 0 || stage >= static_cast<int64_t>(mods.size())) return f;
    return mods[static_cast<size_t>(stage)]->forward(f);
  });
  return backbone_.net->features(x);
}

at::Tensor PromptedModel::tail(const at::Tensor& f, int64_t H, int64_t W) {
  return backbone_.net->tail(tail_ ? tail_->forward(f) : f, H, W);
}

at::Tensor PromptedModel::forward(const at::Tensor& x) {
  if (!has_prompts()) return backbone_.net->forward(x);
  return tail(features(x), x.size(2), x.size(3));
}

TensorList PromptedModel::prompt_state() const {
  TensorList out;
  auto add = [&](const std::string& prefix, const PromptAttention& m) {
    for (const auto& p : m->named_parameters()) out.emplace_back(prefix + p.key(), p.value());
  };
  if (tail_) add("tail.", tail_);
  for (size_t i = 0; i < stages_.size(); ++i) add("stage" + std::to_string(i) + ".", stages_[i]);
  return out;
}

std::vector<at::Tensor> PromptedModel::prompt_parameters() const {
  std::vector<at::Tensor> out;
  for (auto& kv : prompt_state()) out.push_back(kv.second);
  return out;
}

int64_t PromptedModel::prompt_parameter_count() const {
  int64_t n = 0;
  for (auto& t : prompt_parameters()) n += t.numel();
  return n;
}

void PromptedModel::load_prompt_state(const TensorMap& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  const TensorList state = prompt_state();
  for (const auto& kv : state) {
    auto it = tensors.find(kv.first);
    if (it == tensors.end())
      throw CheckpointError(fmt::format("prompt file {} has no tensor '{}'", source, kv.first));
    if (it->second.sizes() != kv.second.sizes())
      throw CheckpointError(fmt::format("prompt file {}: tensor '{}' has shape [{}], expected [{}]",
                                        source, kv.first, fmt::join(it->second.sizes(), ","),
                                        fmt::join(kv.second.sizes(), ",")));
    at::Tensor dst = kv.second;
    dst.copy_(it->second);
  }
  for (const auto& kv : tensors) {
    bool known = false;
    for (const auto& s : state) known = known || s.first == kv.first;
    if (!known)
      throw CheckpointError(fmt::format("prompt file {} has an unexpected tensor '{}'", source, kv.first));
  }
}

}  // namespace isoprompt
