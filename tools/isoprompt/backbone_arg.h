// Resolving the --backbone argument shared by tune, predict and restore.
#pragma once

#include <string>

namespace isoprompt::cli {

// "default" (or "") -> isoprompt-default.safetensors from $ISOPROMPT_MODELS, else from the
// source tree's models/ folder; anything else is a path to a model file. Throws InputError
// when the file does not exist, naming where it looked.
std::string resolve_backbone_path(const std::string& arg);

}  // namespace isoprompt::cli
