// Internal helpers shared by the model sources.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace isoprompt {

std::string shape_str(at::IntArrayRef s);            // "[90, 1, 3, 3]"
bool is_safetensors_bytes(const std::string& head);  // first bytes of a file

}  // namespace isoprompt
