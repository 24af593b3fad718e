// The prompt patch-attention module: a small learnable block that adapts a frozen
// restoration backbone to one volume (see docs/method.md).
//
// Given a feature map F (B×C×H×W) it cuts F into non-overlapping 4×4 patches
// (L = HW/16 tokens of dimension D = 16·C), computes a query per patch (a linear map
// D→d), attends over N learnable prompts (softmax(QKᵀ/√d)) and adds the attention-
// weighted prompt values, folded back to B×C×H×W, to F:  out = F + fold(softmax(QKᵀ/√d)·V).
//
// Parametrisation (equivalent to the method's, with fewer parameters):
//  - keys (N×d) and values (N×D) are learnable tensors themselves. In the method they
//    are projections K = P·Wk, V = P·Wv of N learnable prompt patches P, but a linear
//    map of a free learnable tensor spans exactly the same set of keys/values, so the
//    projection adds parameters without adding expressiveness.
//  - the query map D→d is factorised (query_rank r > 0): a per-pixel channel reduction
//    C→r followed by a linear map of the reduced 4×4 patch (16·r → d). It is still a
//    linear map of the patch (of rank ≤ 16·r). query_rank = 0 uses the dense D→d map.
//  - the output projection is a per-channel gain, initialised to ZERO: at initialisation
//    the module adds exactly 0 and the prompted model equals the backbone bit for bit.
//
// Sizes that are not multiples of 4 are padded (replicate) to the next multiple and the
// result is cropped back.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

namespace isoprompt {

struct PromptConfig {
  // Where the modules go: between the backbone's features() and tail() (Tail), after
  // each residual Swin stage (Stages), or both.
  enum class Placement { Tail, Stages, Both };

  // 0 = auto. A module on its own then takes the method's sizes (kMethodPrompts,
  // kMethodAttnDim). A PromptedModel starts there and halves both until its modules hold
  // at most 10% of the backbone's parameters (resolve_prompt_config): the method's module
  // is 2% of UniFMIR but 17% of the small default backbone.
  int64_t num_prompts = 0;  // N
  int64_t attn_dim = 0;     // d
  int64_t query_rank = 8;    // r: channels kept per pixel before the query map; 0 = dense D→d
  Placement placement = Placement::Tail;
};

const char* placement_name(PromptConfig::Placement p);        // "tail", "stages", "both"
PromptConfig::Placement parse_placement(const std::string& s);  // throws InputError

constexpr int64_t kMethodPrompts = 16, kMethodAttnDim = 64;

// Trainable parameters of one module on `channels` feature channels.
int64_t prompt_module_parameters(int64_t channels, const PromptConfig& cfg);

// Fills the auto (0) sizes of `cfg` for `modules` modules on `channels` channels beside a
// backbone of `backbone_parameters`: the method's 16 prompts and d 64, halved together
// (at least 4 and 16) while the modules exceed 10% of the backbone. Sizes given stay.
PromptConfig resolve_prompt_config(PromptConfig cfg, int64_t channels, int64_t modules,
                                   int64_t backbone_parameters);

class PromptAttentionImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kPatch = 4;

  PromptAttentionImpl(int64_t channels, const PromptConfig& cfg = {});

  // F + delta(F). Any float dtype/device the parameters have been moved to.
  at::Tensor forward(const at::Tensor& f);
  // The added term alone, B×C×H×W.
  at::Tensor delta(const at::Tensor& f);
  // Attention weights over the prompts, B×N×ceil(H/4)×ceil(W/4) (rows sum to 1 over N).
  at::Tensor attention(const at::Tensor& f);

  // Initialises prompts from the volume's own features (B×C×H×W, H,W ≥ 4): N random
  // 4×4 patches become the values, and their queries the keys, so each prompt starts
  // out attending to features like itself. The output gain stays as it is (zero after
  // construction), so the model output is unchanged.
  void init_from_features(const at::Tensor& features, uint64_t seed);

  int64_t channels() const { return channels_; }
  const PromptConfig& config() const { return cfg_; }
  int64_t parameter_count() const;

  // Parameters (names used in prompt files): "reduce" (r×C×1×1, only when r > 0),
  // "query_weight" (d×r×4×4 or d×C×4×4), "query_bias" (d), "keys" (N×d),
  // "values" (N×C×4×4), "gain" (C).
  at::Tensor reduce, query_weight, query_bias, keys, values, gain;

 private:
  at::Tensor queries(const at::Tensor& padded);  // B×d×h×w
  at::Tensor pad(const at::Tensor& f) const;

  int64_t channels_;
  PromptConfig cfg_;
};
TORCH_MODULE(PromptAttention);

}  // namespace isoprompt
