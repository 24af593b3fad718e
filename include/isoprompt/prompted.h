// The prompted model (a frozen backbone plus prompt modules) and the files that hold a
// tuned state: what inference needs of a tuning, without the training code (train.h).
//
//   Backbone bb = load_backbone("models/isoprompt-default.safetensors");
//   LoadedPrompt lp = load_prompt("stack.prompt.safetensors", bb);  // refuses another backbone
//   at::Tensor y = lp.model.forward(x);  // B×1×H×W, x normalised with lp.info.norm
//   LoadedPrompt lu = load_unet("stack.unet.safetensors");           // lu.unet
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "isoprompt/checkpoint.h"
#include "isoprompt/model.h"
#include "isoprompt/ops.h"
#include "isoprompt/prompt.h"
#include "isoprompt/unet.h"

namespace isoprompt {

// What a tuning trained. Full: every backbone weight (baseline). UNet: CARE's U-Net from
// scratch on the same pairs (the peer a biologist would pick; no backbone, L1 loss).
enum class TuneMode { Prompt, Full, UNet };

const char* mode_name(TuneMode m);                       // "prompt", "full", "unet"
TuneMode parse_tune_mode(const std::string& s);          // throws InputError
const char* degrade_model_name(DegradeParams::Model m);  // "average", "psf"

// ---- The prompted model ------------------------------------------------------------

// A frozen backbone plus its prompt modules: one between features() and tail() (Tail),
// one after each residual Swin stage (Stages), or both. With `with_prompts` false it is
// the bare backbone (zero-shot, or a fully fine-tuned backbone).
// Copies are shallow: they share the backbone net and the modules.
class PromptedModel {
 public:
  PromptedModel() = default;
  PromptedModel(Backbone backbone, const PromptConfig& cfg, bool with_prompts = true);

  // x: B×1×H×W normalised slices -> B×1×H×W.
  at::Tensor forward(const at::Tensor& x);
  // The backbone's features with the stage modules (if any) applied: B×C×Hp×Wp.
  at::Tensor features(const at::Tensor& x);
  // The tail module (if any), then the backbone's tail, cropped to H×W.
  at::Tensor tail(const at::Tensor& f, int64_t H, int64_t W);

  bool has_prompts() const { return tail_ || !stages_.empty(); }
  const PromptConfig& config() const { return cfg_; }
  Backbone& backbone() { return backbone_; }
  const Backbone& backbone() const { return backbone_; }
  PromptAttention tail_module() const { return tail_; }  // null unless Tail/Both
  const std::vector<PromptAttention>& stage_modules() const { return stages_; }

  // Trainable tensors, named "tail.<param>" and "stage<i>.<param>" (see prompt.h).
  TensorList prompt_state() const;
  std::vector<at::Tensor> prompt_parameters() const;
  int64_t prompt_parameter_count() const;
  // Loads tensors saved by prompt_state(); every module tensor must be present with its
  // shape. Throws CheckpointError naming `source`.
  void load_prompt_state(const TensorMap& tensors, const std::string& source);

  void to(torch::Device device);
  torch::Device device() const;

 private:
  Backbone backbone_;
  PromptConfig cfg_;
  PromptAttention tail_{nullptr};
  std::vector<PromptAttention> stages_;
};

// Everything a prompt file records besides the tensors.
struct PromptInfo {
  std::string backbone_name, backbone_hash;  // empty for a U-Net
  TuneMode mode = TuneMode::Prompt;
  double factor = 1.0;
  DegradeParams degrade;
  Interp interp = Interp::Keys;  // the backbone was pretrained on Keys-upsampled inputs
  Normalizer norm;
  double pmin = 1.0, pmax = 99.8;
  PromptConfig prompt;    // Prompt mode (written for Full too)
  UNetConfig unet;        // UNet mode
  int64_t steps = 0;      // optimiser steps in total (resumed runs add up)
  int64_t best_step = 0;  // step of the kept state (0 = the untuned start)
  // dB on the validation pairs (held-out planes, or every plane when val_in_sample). For a
  // U-Net, zero_shot_psnr is its untrained (random) start.
  double val_psnr = 0, zero_shot_psnr = 0, interp_psnr = 0;
  bool val_in_sample = false;  // those pairs came from the training planes (a thin stack)
  double seconds = 0;
  std::string version;  // isoprompt version that wrote it

  std::map<std::string, std::string> to_metadata() const;
  // Throws CheckpointError naming `source` for missing or malformed keys.
  static PromptInfo from_metadata(const std::map<std::string, std::string>& m,
                                  const std::string& source);
};

// Which pairs judged a tuning: "held-out" or "in-sample" (a stack too thin to hold planes
// out); the prompt file's "validation" metadata says the same.
const char* validation_kind(const PromptInfo& info);

// ---- Prompt files ------------------------------------------------------------------

// Write a tuned state, atomically: Prompt mode -> safetensors with the module tensors and
// PromptInfo metadata (kilobytes); Full mode -> a model file (save_backbone) with the same
// metadata; a U-Net -> safetensors with its weights, the metadata and its configuration
// ("unet_config", JSON).
void save_prompt(const std::string& path, const PromptedModel& model, const PromptInfo& info);
void save_unet(const std::string& path, const UNet& unet, const PromptInfo& info);

struct LoadedPrompt {
  PromptedModel model;
  UNet unet{nullptr};  // a U-Net file (load_unet); `model` is empty then
  PromptInfo info;
};
// Loads a prompt file for `backbone`. Throws CheckpointError when it was tuned for a
// different backbone: "prompt X was tuned for backbone A (hash …), not B (hash …)".
// A U-Net file is refused too ("... holds a U-Net (mode unet), which needs no backbone").
LoadedPrompt load_prompt(const std::string& path, const Backbone& backbone);
// Loads a U-Net file onto `device`. Throws CheckpointError for a prompt or full file ("X
// holds a prompt for backbone B, not a U-Net").
LoadedPrompt load_unet(const std::string& path, torch::Device device = torch::kCPU);
// The metadata alone (for `info`-style listings); throws CheckpointError.
PromptInfo read_prompt_info(const std::string& path);

// Backbone identity helper: weights_hash() of the net's parameters.
std::string backbone_hash(const SwinIR& net);

}  // namespace isoprompt
