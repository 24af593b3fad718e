// The UniFMIR-compatible SwinIR backbone (isotropic task: swinir(upscale=1, in_chans=1)),
// its configuration, and model files. Spec: ../shared/docs/UNIFMIR.md.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "isoprompt/checkpoint.h"
#include "isoprompt/volume.h"

namespace isoprompt {

struct SwinConfig {  // defaults = UniFMIR isotropic swinir(upscale=1, in_chans=1)
  int64_t in_chans = 1, embed_dim = 90, window_size = 8, num_feat = 32, img_size = 64;
  std::vector<int64_t> depths{6, 6, 6}, num_heads{6, 6, 6};
  double mlp_ratio = 2.0;

  int64_t mlp_hidden() const { return static_cast<int64_t>(embed_dim * mlp_ratio); }
  int64_t num_blocks() const;  // sum of depths
  // Throws CheckpointError when inconsistent (embed_dim % heads, depths/heads sizes, ...).
  void validate() const;
  std::string to_json() const;  // one line, keys as the fields above
  static SwinConfig from_json(const std::string& json);  // throws CheckpointError
  // Forward FLOPs (2 per multiply-add: convs, linears, q·kᵀ and attn·v; not norms,
  // softmax, GELU) for one single-channel H×W slice, after padding to the window size.
  double gflops(int64_t H, int64_t W) const;
  int64_t parameter_count() const;  // learnable parameters (buffers excluded)
  bool operator==(const SwinConfig& o) const;
  bool operator!=(const SwinConfig& o) const { return !(*this == o); }
};

namespace detail {
struct RSTBImpl;  // one residual Swin stage; defined in src/model
}

class SwinIRImpl : public torch::nn::Module {
 public:
  explicit SwinIRImpl(const SwinConfig& cfg = {});

  // B×1×H×W -> B×1×H×W (any H, W >= 1; reflect padding needs H, W > pad amount).
  at::Tensor forward(const at::Tensor& x);
  // f = conv_after_body(norm(stages(patch_norm(f0)))) + f0, f0 = conv_first(reflect-pad(x)).
  // B×embed_dim×Hp×Wp (padded to a multiple of window_size).
  at::Tensor features(const at::Tensor& x);
  // conv_before_upsample, LeakyReLU(0.01), conv_last, crop to H×W. f: B×embed_dim×Hp×Wp.
  at::Tensor tail(const at::Tensor& f, int64_t H, int64_t W);

  // Called after each residual Swin stage (RSTB) with the stage output in B×C×Hp×Wp
  // layout; returns the (possibly modified) map. Empty function = no hook.
  using StageHook = std::function<at::Tensor(int64_t stage, const at::Tensor& x_bchw)>;
  void set_stage_hook(StageHook hook);
  const StageHook& stage_hook() const { return hook_; }

  // Inference (no autograd, CPU, float32) runs each Swin block through the fused CPU kernel
  // when it is built in (fused_kernels_available()); training on the CPU runs the window
  // attention through its fused kernel and fused backward (the other block ops stay ATen's).
  // Off = the plain ATen ops and autograd everywhere (tests, benchmarks). Both give the
  // reference output, and training the reference gradients, to ~1e-6 relative.
  void set_fused_kernels(bool on);
  bool fused_kernels() const { return fused_; }
  static bool fused_kernels_available();

  const SwinConfig& config() const { return cfg_; }
  int64_t num_stages() const { return static_cast<int64_t>(cfg_.depths.size()); }

  // Loads a (normalized) state_dict strictly: every parameter must be present with the
  // right shape; unknown keys are errors; buffers (relative_position_index, attn_mask),
  // when present, must equal the recomputed ones. `source` names the file in errors.
  void load_weights(const TensorMap& sd, const std::string& source);
  // Parameters in state_dict order (no buffers).
  TensorList weights() const;

 private:
  at::Tensor body(at::Tensor f0);  // patch norm, stages (+hook), final norm, conv_after_body

  SwinConfig cfg_;
  StageHook hook_;
  bool fused_ = true;
  // Handles to the registered parameters (same storage as named_parameters()).
  at::Tensor conv_first_w_, conv_first_b_, pe_norm_w_, pe_norm_b_, norm_w_, norm_b_;
  at::Tensor conv_after_body_w_, conv_after_body_b_, conv_bu_w_, conv_bu_b_, conv_last_w_,
      conv_last_b_;
  std::vector<std::shared_ptr<detail::RSTBImpl>> stages_;
};
TORCH_MODULE(SwinIR);

struct Backbone {
  SwinIR net{nullptr};
  SwinConfig config;
  std::string name;  // file stem
  std::string hash;  // weights_hash() of the parameters (sha256 hex)
  std::map<std::string, std::string> metadata;  // safetensors __metadata__ (empty for .pt)
};

// Infers the configuration from state_dict shapes (normalized keys); throws CheckpointError.
SwinConfig infer_config(const TensorMap& sd, const std::string& source);

// Loads a model file (.safetensors with or without "config" metadata, or a torch .pt/.pth),
// strictly. The config comes from __metadata__["config"] when present, else from shapes.
// The net is in eval mode on `device`.
Backbone load_backbone(const std::string& path, torch::Device device = torch::kCPU);

// Writes an isoprompt model file: safetensors with the parameters, then the buffers,
// __metadata__ = `metadata` + format=pt + config=<json>. Atomic.
void save_backbone(const std::string& path, const SwinIR& net,
                   std::map<std::string, std::string> metadata = {});

// ---------------------------------------------------------------------------------------------
// Plane-wise application (the `isoprompt model apply` command).

// Applies the raw network (no normalisation, no resampling) to every plane of orientation
// `plane` of `v` (XY: y×x images, XZ: z×x, YZ: z×y; see volume.h), `batch` planes per call,
// on the net's device. Returns a float32 volume of the same shape, voxel size and unit.
// Reports progress through Progress (label "model apply") and stops on Ctrl-C (Cancelled).
Volume apply_planewise(SwinIR& net, const Volume& v, Plane plane, int64_t batch = 4);

}  // namespace isoprompt
