// A 2D U-Net as CSBDeep/CARE builds it (csbdeep.nets.common_unet, the network of CARE's
// isotropic reconstruction): the from-scratch peer that `--mode unet` trains on the same
// self-supervised pairs as a prompt, so that the prompt is judged against what a biologist
// would otherwise use.
//
//   UNetConfig c;              // CARE's defaults: depth 2, 32 filters, 5×5 kernels, residual
//   UNet net(c);
//   at::Tensor y = net->forward(x);  // B×1×H×W -> B×1×H×W, any H, W
//
// Per level l (0..depth-1): `convs` convolutions with 32·2^l filters and ReLU, a skip, 2×2
// max-pool. The bottom: convs-1 convolutions with 32·2^depth filters, one with 32·2^(depth-1).
// Up, for l = depth-1..0: nearest 2× upsampling, concatenation with skip l, convs-1
// convolutions with 32·2^l filters and one with 32·2^max(0, l-1). Then a 1×1 convolution to
// one channel, linear, plus the input (residual). 'same' zero padding, no batch norm, no
// dropout, Glorot-uniform weights and zero biases (Keras' defaults, which CARE keeps).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "isoprompt/checkpoint.h"

namespace isoprompt {

struct UNetConfig {      // defaults = CARE (csbdeep.models.Config for 2D isotropic data)
  int64_t depth = 2;     // n_depth: pooling levels
  int64_t filters = 32;  // n_filter_base: filters of the first level, doubled per level
  int64_t kernel = 5;    // kern_size (odd)
  int64_t convs = 2;     // n_conv_per_depth
  bool residual = true;  // output = input + net(input)

  // Throws CheckpointError when out of range (depth 1..6, filters 1..1024, kernel odd
  // 1..15, convs 1..8).
  void validate() const;
  std::string to_json() const;                           // one line, keys as the fields
  static UNetConfig from_json(const std::string& json);  // throws CheckpointError
  int64_t parameter_count() const;
  // Inputs are padded to a multiple of this (2^depth) and cropped back.
  int64_t multiple() const { return int64_t(1) << depth; }
  bool operator==(const UNetConfig& o) const;
};

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(const UNetConfig& cfg = {});

  // B×1×H×W -> B×1×H×W for any H, W >= 1: reflect-padded (bottom/right) to a multiple of
  // 2^depth, cropped back.
  at::Tensor forward(const at::Tensor& x);

  const UNetConfig& config() const { return cfg_; }
  // Parameters in registration order, named "<layer>.weight" / "<layer>.bias" with layers
  // down<l>_<i>, bottom_<i>, up<l>_<i> and out.
  TensorList weights() const;
  // Loads tensors saved from weights(), strictly (every one present with its shape, no
  // others). Throws CheckpointError naming `source`.
  void load_weights(const TensorMap& tensors, const std::string& source);
  // The last 1×1 convolution (to zero it in tests, or inspect it).
  torch::nn::Conv2d& out_conv() { return out_; }

 private:
  UNetConfig cfg_;
  std::vector<std::vector<torch::nn::Conv2d>> down_, up_;  // [level][conv]
  std::vector<torch::nn::Conv2d> bottom_;
  torch::nn::Conv2d out_{nullptr};
};
TORCH_MODULE(UNet);

}  // namespace isoprompt
