// Arguments shared by several subcommands: one parser and one error message for each.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>
#include <c10/core/Device.h>

#include "isoprompt/train.h"

namespace isoprompt::cli {

// "default" (or "") -> isoprompt-default.safetensors from $ISOPROMPT_MODELS, else from the
// source tree's models/ folder; anything else is a path to a model file. Throws InputError
// when the file does not exist, naming where it looked.
std::string resolve_backbone_path(const std::string& arg);

// --crop N or MIN-MAX (square crop side in px); throws InputError outside 8..4096.
void parse_crop(const std::string& text, int64_t& crop_min, int64_t& crop_max);

// --factor: "auto" (returns 0: take z-step / xy-pixel from the voxel size) or a number in
// 1..1000; throws InputError otherwise.
double parse_factor(const std::string& text);

// --device: cpu, cuda or cuda:N; throws InputError otherwise, and when this LibTorch has
// no CUDA or no such GPU is visible (instead of an internal error at the first tensor).
c10::Device parse_device(const std::string& text);

// --nan refuse|replace (default refuse) for the commands that compute on the voxels.
void add_nan_flag(CLI::App* command, std::string& policy);

// For --seed: digits only. (CLI11 reads "-1" into an unsigned seed as 2^64 - 1.)
const CLI::Validator& seed_validator();

// The tuning flags `tune` and `restore` share: registered, worded and checked once.
struct TuneFlags {
  std::string crop = "64-128", prompt_at = "tail", degrade = "average", resume;
  double psf_fwhm = 0, psf_sigma = 0;
};
// `batch_flag` names the crops-per-step flag ("--batch" in tune; "--train-batch" in restore,
// whose --batch is the inference batch).
void add_tune_flags(CLI::App* command, TuneParams& params, TuneFlags& flags, const std::string& batch_flag);
// Validates the text flags and writes them into `params` (crop range, placement,
// degradation model, resume file). Throws InputError naming the flag and value.
void apply_tune_flags(const TuneFlags& flags, TuneParams& params);

}  // namespace isoprompt::cli
