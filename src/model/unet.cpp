// The CARE U-Net (see unet.h): configuration, layers, forward pass, weights.
#include "isoprompt/unet.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "isoprompt/error.h"

namespace isoprompt {

namespace {

std::string shape_text(at::IntArrayRef s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// Keras' 'same' convolution with its default initialisation: Glorot-uniform weights
// (limit sqrt(6 / (fan_in + fan_out)), fans counting the kernel's taps), zero bias.
torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k) {
  torch::nn::Conv2d c(torch::nn::Conv2dOptions(in, out, k).padding(k / 2));
  torch::NoGradGuard g;
  const double limit = std::sqrt(6.0 / static_cast<double>((in + out) * k * k));
  c->weight.uniform_(-limit, limit);
  c->bias.zero_();
  return c;
}

int64_t conv_params(int64_t in, int64_t out, int64_t k) {
  return in * out * k * k + out;
}

}  // namespace

void UNetConfig::validate() const {
  auto bad = [&](const char* why) {
    throw CheckpointError(fmt::format("invalid U-Net configuration {}: {}", to_json(), why));
  };
  if (depth < 1 || depth > 6) bad("depth must be in 1..6");
  if (filters < 1 || filters > 1024) bad("filters must be in 1..1024");
  if (kernel < 1 || kernel > 15 || kernel % 2 == 0) bad("kernel must be odd, 1..15");
  if (convs < 1 || convs > 8) bad("convs must be in 1..8");
}

std::string UNetConfig::to_json() const {
  nlohmann::ordered_json j;
  j["depth"] = depth;
  j["filters"] = filters;
  j["kernel"] = kernel;
  j["convs"] = convs;
  j["residual"] = residual;
  return j.dump();
}

UNetConfig UNetConfig::from_json(const std::string& text) {
  UNetConfig c;
  try {
    const auto j = nlohmann::json::parse(text);
    if (!j.is_object()) throw CheckpointError("U-Net configuration is not a JSON object: " + text);
    for (const auto& [k, v] : j.items()) {
      if (k == "residual") {
        if (!v.is_boolean())
          throw CheckpointError(
              fmt::format("U-Net configuration field 'residual' is not a boolean in {}", text));
        c.residual = v.get<bool>();
        continue;
      }
      if (!v.is_number_integer())
        throw CheckpointError(
            fmt::format("U-Net configuration field '{}' is not a whole number in {}", k, text));
      if (k == "depth")
        c.depth = v.get<int64_t>();
      else if (k == "filters")
        c.filters = v.get<int64_t>();
      else if (k == "kernel")
        c.kernel = v.get<int64_t>();
      else if (k == "convs")
        c.convs = v.get<int64_t>();
      else
        throw CheckpointError(fmt::format("unknown field '{}' in U-Net configuration {}", k, text));
    }
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("malformed U-Net configuration {}: {}", text, e.what()));
  }
  c.validate();
  return c;
}

// The layer plan, shared by the constructor and parameter_count: calls f(part, level, in,
// out, kernel) for each convolution in registration order, part being 'd' (down), 'b'
// (bottom), 'u' (up) or 'o' (the 1x1 output).
template <typename F>
static void for_each_conv(const UNetConfig& c, F&& f) {
  auto width = [&](int64_t level) { return c.filters << std::max<int64_t>(0, level); };
  int64_t ch = 1;
  std::vector<int64_t> skip;
  for (int64_t l = 0; l < c.depth; ++l) {
    for (int64_t i = 0; i < c.convs; ++i, ch = width(l)) f('d', l, ch, width(l), c.kernel);
    skip.push_back(ch);
  }
  for (int64_t i = 0; i < c.convs; ++i) {
    const int64_t out = i + 1 < c.convs ? width(c.depth) : width(c.depth - 1);
    f('b', c.depth, ch, out, c.kernel);
    ch = out;
  }
  for (int64_t l = c.depth - 1; l >= 0; --l) {
    ch += skip[static_cast<size_t>(l)];  // concatenated with the skip
    for (int64_t i = 0; i < c.convs; ++i) {
      const int64_t out = i + 1 < c.convs ? width(l) : width(l - 1);
      f('u', l, ch, out, c.kernel);
      ch = out;
    }
  }
  f('o', 0, ch, 1, 1);
}

int64_t UNetConfig::parameter_count() const {
  int64_t n = 0;
  for_each_conv(*this, [&](char, int64_t, int64_t in, int64_t out, int64_t k) {
    n += conv_params(in, out, k);
  });
  return n;
}

bool UNetConfig::operator==(const UNetConfig& o) const {
  return depth == o.depth && filters == o.filters && kernel == o.kernel && convs == o.convs &&
         residual == o.residual;
}

UNetImpl::UNetImpl(const UNetConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  down_.resize(static_cast<size_t>(cfg_.depth));
  up_.resize(static_cast<size_t>(cfg_.depth));
  for_each_conv(cfg_, [&](char part, int64_t level, int64_t in, int64_t out, int64_t k) {
    const auto l = static_cast<size_t>(level);
    switch (part) {
      case 'd':
        down_[l].push_back(
            register_module(fmt::format("down{}_{}", level, down_[l].size()), conv(in, out, k)));
        break;
      case 'b':
        bottom_.push_back(
            register_module(fmt::format("bottom_{}", bottom_.size()), conv(in, out, k)));
        break;
      case 'u':
        up_[l].push_back(
            register_module(fmt::format("up{}_{}", level, up_[l].size()), conv(in, out, k)));
        break;
      default:
        out_ = register_module("out", conv(in, out, k));
    }
  });
}

at::Tensor UNetImpl::forward(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 1, "U-Net input must be B x 1 x H x W, got ", x.sizes());
  const int64_t H = x.size(2), W = x.size(3), m = cfg_.multiple();
  const int64_t ph = (m - H % m) % m, pw = (m - W % m) % m;
  at::Tensor in = x;
  if (ph > 0 || pw > 0) {
    // Reflect where the slice is large enough for it, else replicate (a few-pixel slice).
    const std::vector<int64_t> pad{0, pw, 0, ph};
    in = ph < H && pw < W ? at::reflection_pad2d(x, pad) : at::replication_pad2d(x, pad);
  }
  at::Tensor h = in;
  std::vector<at::Tensor> skips;
  for (auto& level : down_) {
    for (auto& c : level) h = at::relu(c->forward(h));
    skips.push_back(h);
    h = at::max_pool2d(h, {2, 2});
  }
  for (auto& c : bottom_) h = at::relu(c->forward(h));
  for (int64_t l = cfg_.depth - 1; l >= 0; --l) {
    const std::array<int64_t, 2> up{h.size(2) * 2,
                                    h.size(3) * 2};  // IntArrayRef overload (1.13 and 2.x)
    h = at::cat({at::upsample_nearest2d(h, at::IntArrayRef(up)), skips[static_cast<size_t>(l)]}, 1);
    for (auto& c : up_[static_cast<size_t>(l)]) h = at::relu(c->forward(h));
  }
  h = out_->forward(h);
  if (cfg_.residual) h = h + in;
  if (ph > 0 || pw > 0) h = h.slice(2, 0, H).slice(3, 0, W);
  return h;
}

TensorList UNetImpl::weights() const {
  TensorList out;
  for (const auto& p : named_parameters(true)) out.emplace_back(p.key(), p.value());
  return out;
}

void UNetImpl::load_weights(const TensorMap& tensors, const std::string& source) {
  std::map<std::string, at::Tensor> params;
  for (const auto& p : named_parameters(true)) params.emplace(p.key(), p.value());
  for (const auto& kv : tensors)
    if (!params.count(kv.first))
      throw CheckpointError(
          fmt::format("unknown tensor '{}' in {}: the U-Net {} has no such parameter", kv.first,
                      source, cfg_.to_json()));
  torch::NoGradGuard g;
  for (auto& [name, p] : params) {
    const auto it = tensors.find(name);
    if (it == tensors.end())
      throw CheckpointError(fmt::format("missing tensor '{}' (expected shape {}) in {}", name,
                                        shape_text(p.sizes()), source));
    if (it->second.sizes() != p.sizes())
      throw CheckpointError(
          fmt::format("tensor '{}' in {} has shape {}, but the U-Net {} expects {}", name, source,
                      shape_text(it->second.sizes()), cfg_.to_json(), shape_text(p.sizes())));
    if (!at::isFloatingType(it->second.scalar_type()))
      throw CheckpointError(
          fmt::format("tensor '{}' in {} has type {}, expected a floating-point type", name, source,
                      c10::toString(it->second.scalar_type())));
    p.copy_(it->second);
  }
}

}  // namespace isoprompt
