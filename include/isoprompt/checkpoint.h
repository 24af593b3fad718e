// Tensor files: safetensors (read/write) and torch.save zip checkpoints (.pt/.pth, read).
// No <torch/torch.h> here: ATen only.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace isoprompt {

using TensorMap = std::map<std::string, at::Tensor>;                   // sorted by name
using TensorList = std::vector<std::pair<std::string, at::Tensor>>;   // file / state_dict order

// Reads a .safetensors file (F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL) into CPU tensors.
// `metadata` receives the "__metadata__" strings; `order`, if given, the names in data order.
// Throws CheckpointError for a missing, truncated or malformed file.
TensorMap read_safetensors(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr,
                           std::vector<std::string>* order = nullptr);

// Writes tensors (any device; made contiguous on CPU) in the given order, atomically
// (temp file + rename). Throws Error if it cannot write, InputError for a bad path.
// The same, from the file's bytes in memory; `source` names it in error messages.
TensorMap parse_safetensors(const std::string& bytes, const std::string& source,
                            std::map<std::string, std::string>* metadata = nullptr,
                            std::vector<std::string>* order = nullptr);

void write_safetensors(const std::string& path, const TensorList& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads a torch.save zip checkpoint (.pt/.pth) holding tensors: a bare state_dict, or one
// wrapped as {'state_dict': ...}, {'params': ...}, {'params_ema': ...} or {'model': ...}.
// Keys are returned as stored (see normalize_state_dict_keys). `order` receives the
// state_dict order. Throws CheckpointError for a truncated file, the legacy (pre-1.6)
// non-zip format, a pickled whole module, or a pickle without tensors.
TensorMap read_torch_checkpoint(const std::string& path, std::vector<std::string>* order = nullptr);

// Reads .safetensors or a torch zip checkpoint, chosen by content (not extension).
TensorMap read_tensor_file(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr,
                           std::vector<std::string>* order = nullptr);

// Maps checkpoint keys onto SwinIR names: strips a leading "module." (DataParallel), applies
// the UniModel task-3 renames (conv_firstiso. -> conv_first., conv_before_upsample0. ->
// conv_before_upsample., conv_last0. -> conv_last.) and drops the other UniModel tasks'
// heads/tails (conv_firstsr., upsamplesr., conv_firstdT., conv_firstproj., conv_firstv.,
// conv_before_upsamplev., conv_lastv., conv_first0., project.), but only when the file is a
// UniModel file (has conv_firstiso.*). `path` is used in error messages (duplicate keys).
TensorMap normalize_state_dict_keys(const TensorMap& in, const std::string& path = "");

// Throws CheckpointError naming `source`, the first tensor with NaN or Inf values, their
// count and the first position: non-finite weights make every output NaN or zero.
void check_finite_weights(const TensorMap& tensors, const std::string& source);

// SHA-256 of bytes, as 64 lowercase hex digits.
std::string sha256_hex(const void* data, size_t n);
// Identity of a set of weights: SHA-256 over every tensor in sorted-name order
// (name, dtype, shape, then the little-endian bytes). Equal weights give equal hashes,
// whatever file format or key order they came from.
std::string weights_hash(const TensorMap& tensors);

}  // namespace isoprompt
