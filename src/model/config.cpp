// SwinConfig: validation, JSON, FLOP and parameter counts.
#include <cmath>
#include <nlohmann/json.hpp>

#include "isoprompt/error.h"
#include "isoprompt/model.h"

namespace isoprompt {

int64_t SwinConfig::num_blocks() const {
  int64_t n = 0;
  for (int64_t d : depths) n += d;
  return n;
}

void SwinConfig::validate() const {
  auto bad = [&](const std::string& why) { throw CheckpointError("invalid model configuration " + to_json() + ": " + why); };
  if (in_chans < 1) bad("in_chans must be >= 1");
  if (embed_dim < 1) bad("embed_dim must be >= 1");
  if (num_feat < 1) bad("num_feat must be >= 1");
  if (window_size < 2) bad("window_size must be >= 2");
  if (img_size <= window_size) bad("img_size must be larger than window_size (smaller disables the shift)");
  if (depths.empty()) bad("depths is empty");
  if (depths.size() != num_heads.size()) bad("depths and num_heads differ in length");
  for (size_t i = 0; i < depths.size(); ++i) {
    if (depths[i] < 1) bad("every depth must be >= 1");
    if (num_heads[i] < 1 || embed_dim % num_heads[i] != 0) bad("embed_dim must be a multiple of every num_heads");
  }
  if (!(mlp_ratio <= 64)) bad("mlp_ratio must be <= 64");
  if (!(mlp_ratio > 0) || mlp_hidden() < 1) bad("mlp_ratio must give a hidden size >= 1");
  // Upper bounds far above any real model (UniFMIR: embed 180, window 8), so that a
  // crafted configuration is refused here instead of exhausting memory when built.
  if (in_chans > 64) bad("in_chans must be <= 64");
  if (embed_dim > 8192) bad("embed_dim must be <= 8192");
  if (num_feat > 8192) bad("num_feat must be <= 8192");
  if (window_size > 64) bad("window_size must be <= 64");
  if (img_size > 8192) bad("img_size must be <= 8192");
  if (depths.size() > 64) bad("at most 64 stages");
  for (size_t i = 0; i < depths.size(); ++i) {
    if (depths[i] > 256) bad("every depth must be <= 256");
    if (num_heads[i] > embed_dim) bad("num_heads must be <= embed_dim");
  }
}

std::string SwinConfig::to_json() const {
  nlohmann::ordered_json j;
  j["in_chans"] = in_chans;
  j["embed_dim"] = embed_dim;
  j["depths"] = depths;
  j["num_heads"] = num_heads;
  j["window_size"] = window_size;
  j["mlp_ratio"] = mlp_ratio;
  j["num_feat"] = num_feat;
  j["img_size"] = img_size;
  return j.dump();
}

SwinConfig SwinConfig::from_json(const std::string& text) {
  SwinConfig c;
  try {
    const auto j = nlohmann::json::parse(text);
    if (!j.is_object()) throw CheckpointError("model configuration is not a JSON object: " + text);
    for (const auto& [k, v] : j.items()) {
      // Whole numbers only: get<int64_t>() would truncate 1e30 with undefined behaviour.
      if (k != "mlp_ratio" && !(v.is_number_integer() || v.is_array()))
        throw CheckpointError(fmt::format("model configuration field '{}' is not a whole number in {}", k, text));
      if (k == "in_chans") c.in_chans = v.get<int64_t>();
      else if (k == "embed_dim") c.embed_dim = v.get<int64_t>();
      else if (k == "depths") c.depths = v.get<std::vector<int64_t>>();
      else if (k == "num_heads") c.num_heads = v.get<std::vector<int64_t>>();
      else if (k == "window_size") c.window_size = v.get<int64_t>();
      else if (k == "mlp_ratio") c.mlp_ratio = v.get<double>();
      else if (k == "num_feat") c.num_feat = v.get<int64_t>();
      else if (k == "img_size") c.img_size = v.get<int64_t>();
      else throw CheckpointError(fmt::format("unknown field '{}' in model configuration {}", k, text));
    }
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("malformed model configuration {}: {}", text, e.what()));
  }
  c.validate();
  return c;
}

double SwinConfig::gflops(int64_t H, int64_t W) const {
  const int64_t ws = window_size;
  const double hp = double((H + ws - 1) / ws * ws), wp = double((W + ws - 1) / ws * ws);
  const double C = double(embed_dim), hid = double(mlp_hidden()), N = double(ws * ws);
  // Multiply-adds per padded pixel.
  const double per_block = 4 * C * C + 2 * C * hid + 2 * N * C;  // qkv+proj, fc1+fc2, q·kᵀ and attn·v
  const double convs = 9.0 * in_chans * C + 9.0 * C * C * double(depths.size() + 1) + 9.0 * C * num_feat +
                       9.0 * num_feat * in_chans;
  const double mac = (per_block * double(num_blocks()) + convs) * hp * wp;
  return 2.0 * mac / 1e9;
}

int64_t SwinConfig::parameter_count() const {
  const int64_t C = embed_dim, hid = mlp_hidden(), t = (2 * window_size - 1) * (2 * window_size - 1);
  int64_t n = 9 * in_chans * C + C;  // conv_first
  n += 2 * C;                          // patch_embed.norm
  for (size_t s = 0; s < depths.size(); ++s) {
    const int64_t block = 2 * C + t * num_heads[s] + 3 * C * C + 3 * C + C * C + C + 2 * C + hid * C + hid + C * hid + C;
    n += depths[s] * block + 9 * C * C + C;
  }
  n += 2 * C;                                          // norm
  n += 9 * C * C + C;                                  // conv_after_body
  n += 9 * C * num_feat + num_feat;                    // conv_before_upsample.0
  n += 9 * num_feat * in_chans + in_chans;             // conv_last
  return n;
}

bool SwinConfig::operator==(const SwinConfig& o) const {
  return in_chans == o.in_chans && embed_dim == o.embed_dim && window_size == o.window_size && num_feat == o.num_feat &&
         img_size == o.img_size && depths == o.depths && num_heads == o.num_heads && mlp_ratio == o.mlp_ratio;
}

}  // namespace isoprompt
