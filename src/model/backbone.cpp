// Model files: config inference, strict loading, isoprompt's own safetensors format.
#include <torch/nn/module.h>

#include <cmath>
#include <filesystem>
#include <regex>
#include <set>

#include "isoprompt/error.h"
#include "isoprompt/log.h"
#include "isoprompt/model.h"
#include "model/shapes.h"

namespace isoprompt {

namespace {

const at::Tensor& need(const TensorMap& sd, const std::string& key, int64_t dims, const std::string& source) {
  auto it = sd.find(key);
  if (it == sd.end()) {
    std::string some;
    int n = 0;
    for (const auto& kv : sd) {
      if (n++ == 5) { some += ", ..."; break; }
      some += (n > 1 ? ", " : "") + kv.first;
    }
    throw CheckpointError(fmt::format("{} is not a SwinIR/UniFMIR checkpoint: tensor '{}' is missing (it has {} tensors: {})",
                                      source, key, sd.size(), some));
  }
  if (it->second.dim() != dims)
    throw CheckpointError(fmt::format("tensor '{}' in {} has shape {}, expected {} dimensions", key, source,
                                      shape_str(it->second.sizes()), dims));
  return it->second;
}

}  // namespace

SwinConfig infer_config(const TensorMap& sd, const std::string& source) {
  SwinConfig c;
  const at::Tensor& cf = need(sd, "conv_first.weight", 4, source);
  c.embed_dim = cf.size(0);
  c.in_chans = cf.size(1);
  c.num_feat = need(sd, "conv_before_upsample.0.weight", 4, source).size(0);
  static const std::regex kBlock(R"(^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.)");
  std::map<int64_t, int64_t> depth;  // stage -> max block index + 1
  for (const auto& kv : sd) {
    std::smatch m;
    if (std::regex_search(kv.first, m, kBlock)) {
      // A file can claim any index: 30 digits must be an input error, not std::stoll's.
      const std::string si = m[1], bi = m[2];
      if (si.size() > 4 || bi.size() > 4)
        throw CheckpointError(fmt::format("{}: tensor '{}' has an implausible layer or block index", source, kv.first));
      const int64_t s = std::stoll(si), b = std::stoll(bi);
      depth[s] = std::max(depth[s], b + 1);
    }
  }
  if (depth.empty()) throw CheckpointError(fmt::format("{} has no Swin blocks (no layers.<i>.residual_group.blocks.<j>.* tensors)", source));
  c.depths.clear();
  c.num_heads.clear();
  const int64_t n_stages = depth.rbegin()->first + 1;
  for (int64_t s = 0; s < n_stages; ++s) {
    if (!depth.count(s)) throw CheckpointError(fmt::format("{} has no blocks for stage layers.{}", source, s));
    c.depths.push_back(depth[s]);
    const std::string pre = fmt::format("layers.{}.residual_group.blocks.0.", s);
    const at::Tensor& table = need(sd, pre + "attn.relative_position_bias_table", 2, source);
    c.num_heads.push_back(table.size(1));
    const int64_t side = std::llround(std::sqrt(double(table.size(0))));
    if (side * side != table.size(0) || side % 2 == 0)
      throw CheckpointError(fmt::format("tensor '{}attn.relative_position_bias_table' in {} has {} rows, not (2w-1)^2", pre, source, table.size(0)));
    const int64_t w = (side + 1) / 2;
    if (s > 0 && w != c.window_size)
      throw CheckpointError(fmt::format("{}: stage {} has window {} but stage 0 has window {}", source, s, w, c.window_size));
    c.window_size = w;
    if (s == 0) {
      const int64_t hidden = need(sd, pre + "mlp.fc1.weight", 2, source).size(0);
      c.mlp_ratio = double(hidden) / double(c.embed_dim);
    }
  }
  // img_size only decides the registered attn_mask buffer: nW = (img_size / window)^2.
  c.img_size = 64;
  for (const auto& kv : sd) {
    if (kv.first.size() > 10 && kv.first.compare(kv.first.size() - 10, 10, ".attn_mask") == 0 && kv.second.dim() == 3) {
      const int64_t side = std::llround(std::sqrt(double(kv.second.size(0))));
      if (side * side == kv.second.size(0)) c.img_size = side * c.window_size;
      break;
    }
  }
  try {
    c.validate();
  } catch (const CheckpointError& e) {
    throw CheckpointError(fmt::format("{}: {}", source, e.what()));
  }
  return c;
}

Backbone load_backbone(const std::string& path, torch::Device device) {
  std::map<std::string, std::string> metadata;
  TensorMap raw = read_tensor_file(path, &metadata);
  check_finite_weights(raw, path);
  TensorMap sd = normalize_state_dict_keys(raw, path);
  Backbone bb;
  bb.metadata = metadata;
  auto it = metadata.find("config");
  if (it != metadata.end() && !it->second.empty() && it->second[0] == '{') {
    try {
      bb.config = SwinConfig::from_json(it->second);
    } catch (const CheckpointError& e) {
      throw CheckpointError(fmt::format("{}: {}", path, e.what()));
    }
  } else {
    bb.config = infer_config(sd, path);
  }
  bb.net = SwinIR(bb.config);
  bb.net->load_weights(sd, path);
  bb.net->eval();
  bb.net->to(device);
  TensorMap params;
  for (const auto& [k, v] : bb.net->weights()) params.emplace(k, v);
  bb.hash = weights_hash(params);
  bb.name = std::filesystem::path(path).stem().string();
  return bb;
}

void save_backbone(const std::string& path, const SwinIR& net, std::map<std::string, std::string> metadata) {
  TensorList all;
  for (const auto& p : net->named_parameters(true)) all.emplace_back(p.key(), p.value());
  for (const auto& b : net->named_buffers(true)) all.emplace_back(b.key(), b.value());
  metadata["format"] = "pt";
  metadata["config"] = net->config().to_json();
  metadata["producer"] = "isoprompt";
  write_safetensors(path, all, metadata);
}

}  // namespace isoprompt
