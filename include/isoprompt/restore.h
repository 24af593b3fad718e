// Reconstruction with a prompted (or plain) SwinIR backbone: the glue between infer and
// the model that `predict`, `restore`, the demo and the benchmarks all need.
//
//   PromptedModel m = load_prompt("stack.prompt.safetensors", bb).model;
//   ReconstructParams p;
//   p.factor = 4;
//   Volume iso = reconstruct_with_model(stack, p, m);
#pragma once

#include "isoprompt/infer.h"
#include "isoprompt/prompted.h"

namespace isoprompt {

// The interpolation a backbone's input was made with in pretraining: its "input_interp"
// metadata, or Keys for files without it (the first shipped backbone, UniFMIR's files).
Interp backbone_input_interp(const Backbone& backbone);
// An --interp flag: "auto" is the backbone's input interpolation, or the cubic B-spline when
// there is no backbone (interpolation only); anything else is parse_interp's.
Interp resolve_interp(const std::string& flag, const Backbone* backbone);

// True when a tuned model beat the network's input interpolation by at least 0.01 dB on the
// stack's own held-out self-supervised pairs (restore writes the interpolation otherwise).
bool model_beats_interpolation(const PromptInfo& info);

// Memory model of a SwinIR-family backbone for automatic tiling: its activations per pixel
// (widest stage) and its weights.
RestorerCost swin_cost(const SwinConfig& config);

// A SliceRestorer that runs `model` (held by reference: keep it alive), padding slices
// smaller than the model's window.
SliceRestorer model_restorer(PromptedModel& model);

// Moves `model` to params.device, sets params.cost from its configuration and
// reconstructs `input` with it (`uncertainty`: reconstruct's optional map). The network's
// z input is interpolated with params.interp (set it from backbone_input_interp: what the
// backbone was pretrained on).
Volume reconstruct_with_model(const Volume& input, ReconstructParams params, PromptedModel& model,
                              ReconstructReport* report = nullptr, Volume* uncertainty = nullptr);

// Memory model of a U-Net forward pass in inference mode (its widest level's activations
// and the skips held for the way up) and its weights; tiles are multiples of 2^depth.
RestorerCost unet_cost(const UNetConfig& config);

// A SliceRestorer that runs `net` (held by reference: keep it alive); any slice size.
SliceRestorer unet_restorer(UNet& net);

// The same for a U-Net (mode unet): moves it to params.device, sets params.cost and
// reconstructs. params.interp is the one it was trained with (the file's "interp").
Volume reconstruct_with_model(const Volume& input, ReconstructParams params, UNet& net,
                              ReconstructReport* report = nullptr, Volume* uncertainty = nullptr);

}  // namespace isoprompt
