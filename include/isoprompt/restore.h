// Reconstruction with a prompted (or plain) SwinIR backbone: the glue between infer and
// train that `predict`, `restore`, the demo and the benchmarks all need.
//
//   PromptedModel m = load_prompt("stack.prompt.safetensors", bb).model;
//   ReconstructParams p;
//   p.factor = 4;
//   Volume iso = reconstruct_with_model(stack, p, m);
#pragma once

#include "isoprompt/infer.h"
#include "isoprompt/train.h"

namespace isoprompt {

// Memory model of a SwinIR-family backbone for automatic tiling: its activations per pixel
// (widest stage) and its weights.
RestorerCost swin_cost(const SwinConfig& config);

// A SliceRestorer that runs `model` (held by reference: keep it alive), padding slices
// smaller than the model's window.
SliceRestorer model_restorer(PromptedModel& model);

// Moves `model` to params.device, sets params.cost from its configuration and
// reconstructs `input` with it. The network's z input is interpolated with params.interp
// (Keys by default: what the shipped backbone was trained on).
Volume reconstruct_with_model(const Volume& input, ReconstructParams params, PromptedModel& model,
                              ReconstructReport* report = nullptr);

}  // namespace isoprompt
