// Arguments shared by tune, predict and restore.
#pragma once

#include <cstdint>
#include <string>

namespace isoprompt::cli {

// "default" (or "") -> isoprompt-default.safetensors from $ISOPROMPT_MODELS, else from the
// source tree's models/ folder; anything else is a path to a model file. Throws InputError
// when the file does not exist, naming where it looked.
std::string resolve_backbone_path(const std::string& arg);

// --crop N or MIN-MAX (square crop side in px); throws InputError outside 8..4096.
void parse_crop(const std::string& text, int64_t& crop_min, int64_t& crop_max);

}  // namespace isoprompt::cli
