// SwinIR (UniFMIR isotropic variant): modules, forward pass, strict weight loading.
// Layout: inside the residual stages, tokens are kept as B×H×W×C (contiguous, image order).
// Per-token layers (LayerNorm, qkv/proj/MLP linears) run on that layout directly; only the
// attention core (shift, window partition, bias + mask, softmax, ·V, reverse, unshift) sees
// windows. That core is one function, window_attention(), so that a fused kernel with the
// same contract can replace it under inference.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/init.h>

#include <cmath>
#include <mutex>

#include "isoprompt/error.h"
#include "isoprompt/log.h"
#include "isoprompt/model.h"
#include "model/shapes.h"

// The fused CPU kernels (src/model/fast_attention.{h,cpp}) are used for inference.
#include "model/fast_attention.h"
#define ISO_HAVE_FAST_BLOCK 1

namespace isoprompt {

namespace detail {

constexpr double kLnEps = 1e-5;
constexpr double kMaskValue = -100.0;

// SwinIR's relative_position_index for an N = w*w window: (dh + w-1)*(2w-1) + (dw + w-1).
at::Tensor relative_position_index(int64_t w) {
  const int64_t N = w * w;
  at::Tensor idx = at::empty({N, N}, at::kLong);
  auto a = idx.accessor<int64_t, 2>();
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const int64_t dh = i / w - j / w, dw = i % w - j % w;
      a[i][j] = (dh + w - 1) * (2 * w - 1) + (dw + w - 1);
    }
  return idx;
}

// SwinIR's calculate_mask((H, W)): nW×N×N, 0 within a region, -100 across regions.
at::Tensor shift_mask(int64_t H, int64_t W, int64_t w, int64_t s) {
  auto region = [&](int64_t p, int64_t L) { return p < L - w ? 0 : (p < L - s ? 1 : 2); };
  const int64_t nh = H / w, nw = W / w, N = w * w;
  at::Tensor m = at::zeros({nh * nw, N, N}, at::kFloat);
  auto a = m.accessor<float, 3>();
  std::vector<int64_t> id(N);
  for (int64_t wy = 0; wy < nh; ++wy)
    for (int64_t wx = 0; wx < nw; ++wx) {
      for (int64_t i = 0; i < N; ++i) id[i] = region(wy * w + i / w, H) * 3 + region(wx * w + i % w, W);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < N; ++j)
          if (id[i] != id[j]) a[wy * nw + wx][i][j] = float(kMaskValue);
    }
  return m;
}

// Window attention core on image-order qkv (B×H×W×3C, channel order [q heads, k heads, v heads]).
// rel_bias: nh×N×N; mask: nW×N×N or undefined (no shift). Returns B×H×W×C (input of proj).
at::Tensor window_attention(const at::Tensor& qkv_img, int64_t nh, int64_t w, int64_t shift, const at::Tensor& rel_bias,
                            const at::Tensor& mask, double scale) {
  const int64_t B = qkv_img.size(0), H = qkv_img.size(1), W = qkv_img.size(2), C3 = qkv_img.size(3);
  const int64_t C = C3 / 3, hd = C / nh, N = w * w, nW = (H / w) * (W / w);
  at::Tensor x = shift ? at::roll(qkv_img, {-shift, -shift}, {1, 2}) : qkv_img;
  // window partition: B, H/w, w, W/w, w, 3C -> (B*nW), N, 3, nh, hd -> 3, B_, nh, N, hd
  at::Tensor qkv = x.view({B, H / w, w, W / w, w, C3})
                       .permute({0, 1, 3, 2, 4, 5})
                       .reshape({B * nW, N, 3, nh, hd})
                       .permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0] * scale, k = qkv[1], v = qkv[2];
  at::Tensor attn = at::matmul(q, k.transpose(-2, -1));  // B_, nh, N, N
  attn = attn + rel_bias.unsqueeze(0);
  if (mask.defined()) attn = (attn.view({B, nW, nh, N, N}) + mask.unsqueeze(1).unsqueeze(0)).view({B * nW, nh, N, N});
  attn = at::softmax(attn, -1);
  at::Tensor out = at::matmul(attn, v).transpose(1, 2).reshape({B, H / w, W / w, w, w, C});
  out = out.permute({0, 1, 3, 2, 4, 5}).reshape({B, H, W, C});
  return shift ? at::roll(out, {shift, shift}, {1, 2}) : out;
}

struct AttnImpl : torch::nn::Module {
  AttnImpl(int64_t dim, int64_t heads, int64_t w) {
    const int64_t t = (2 * w - 1) * (2 * w - 1);
    table = register_parameter("relative_position_bias_table", at::empty({t, heads}));
    index = register_buffer("relative_position_index", relative_position_index(w));
    qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
    proj = register_module("proj", torch::nn::Linear(dim, dim));
  }
  at::Tensor table, index;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};

struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t dim, int64_t hidden) {
    fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

struct BlockImpl : torch::nn::Module {
  BlockImpl(const SwinConfig& c, int64_t heads_, int64_t shift_, int64_t img)
      : dim(c.embed_dim), heads(heads_), w(c.window_size), shift(shift_),
        scale(std::pow(double(c.embed_dim / heads_), -0.5)) {
    if (shift) attn_mask = register_buffer("attn_mask", shift_mask(img, img, w, shift));
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kLnEps)));
    attn = register_module("attn", std::make_shared<AttnImpl>(dim, heads, w));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kLnEps)));
    mlp = register_module("mlp", std::make_shared<MlpImpl>(dim, c.mlp_hidden()));
  }

  // x: B×H×W×C contiguous; mask: nW×N×N for this H×W (only used when shifted).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, bool fused) {
    const int64_t N = w * w;
    at::Tensor rel_bias =
        attn->table.index_select(0, attn->index.view(-1)).view({N, N, heads}).permute({2, 0, 1}).contiguous();
#if ISO_HAVE_FAST_BLOCK
    if (fused && !at::GradMode::is_enabled() && x.device().is_cpu() && x.scalar_type() == at::kFloat) {
      // Detached views: the kernel's worker threads do not inherit this thread's no-grad mode,
      // and out= BLAS calls refuse tensors that require grad.
      SwinBlockWeights p;
      p.norm1_weight = norm1->weight.detach(); p.norm1_bias = norm1->bias.detach();
      p.qkv_weight = attn->qkv->weight.detach(); p.qkv_bias = attn->qkv->bias.detach();
      p.rel_bias = rel_bias.detach();
      p.proj_weight = attn->proj->weight.detach(); p.proj_bias = attn->proj->bias.detach();
      p.norm2_weight = norm2->weight.detach(); p.norm2_bias = norm2->bias.detach();
      p.fc1_weight = mlp->fc1->weight.detach(); p.fc1_bias = mlp->fc1->bias.detach();
      p.fc2_weight = mlp->fc2->weight.detach(); p.fc2_bias = mlp->fc2->bias.detach();
      p.num_heads = heads; p.window = w; p.shift = shift; p.scale = scale; p.eps = kLnEps;
      const int64_t B = x.size(0), H = x.size(1), W = x.size(2);
      return fast_swin_block(x.view({B, H * W, dim}), H, W, p).view({B, H, W, dim});
    }
#else
    (void)fused;
#endif
    at::Tensor h = at::layer_norm(x, {dim}, norm1->weight, norm1->bias, kLnEps);
    at::Tensor qkv = at::linear(h, attn->qkv->weight, attn->qkv->bias);
    // Training on the CPU: the fused kernel with its fused backward (a custom autograd function).
    at::Tensor a =
        fused && x.device().is_cpu()
            ? fast_window_attention(qkv, heads, w, shift, rel_bias, scale)
            : window_attention(qkv, heads, w, shift, rel_bias, shift ? mask : at::Tensor(), scale);
    at::Tensor y = x + at::linear(a, attn->proj->weight, attn->proj->bias);
    h = at::layer_norm(y, {dim}, norm2->weight, norm2->bias, kLnEps);
    h = at::gelu(at::linear(h, mlp->fc1->weight, mlp->fc1->bias));
    return y + at::linear(h, mlp->fc2->weight, mlp->fc2->bias);
  }

  int64_t dim, heads, w, shift;
  double scale;
  at::Tensor attn_mask;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<AttnImpl> attn;
  std::shared_ptr<MlpImpl> mlp;
};

struct GroupImpl : torch::nn::Module {
  GroupImpl() { blocks = register_module("blocks", torch::nn::ModuleList()); }
  torch::nn::ModuleList blocks{nullptr};
  std::vector<std::shared_ptr<BlockImpl>> list;
};

struct RSTBImpl : torch::nn::Module {
  RSTBImpl(const SwinConfig& c, int64_t stage) {
    group = register_module("residual_group", std::make_shared<GroupImpl>());
    for (int64_t b = 0; b < c.depths[stage]; ++b) {
      auto blk = std::make_shared<BlockImpl>(c, c.num_heads[stage], b % 2 ? c.window_size / 2 : 0, c.img_size);
      group->blocks->push_back(blk);
      group->list.push_back(blk);
    }
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.embed_dim, c.embed_dim, 3).padding(1)));
  }
  std::shared_ptr<GroupImpl> group;
  torch::nn::Conv2d conv{nullptr};
};

namespace {
// The pieces of SwinIR that are not stages, registered under their state_dict names.
struct PatchEmbedImpl : torch::nn::Module {
  explicit PatchEmbedImpl(int64_t dim) {
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kLnEps)));
  }
  torch::nn::LayerNorm norm{nullptr};
};

// Masks are pure functions of (H, W, window, shift): computed once per padded size.
struct MaskCache {
  std::mutex mu;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, std::string>, at::Tensor> masks;
  at::Tensor get(int64_t H, int64_t W, int64_t w, int64_t s, const at::Device& dev) {
    std::lock_guard<std::mutex> lock(mu);
    auto key = std::make_tuple(H, W, w, s, dev.str());
    auto it = masks.find(key);
    if (it != masks.end()) return it->second;
    if (masks.size() > 32) masks.clear();
    at::Tensor m = shift_mask(H, W, w, s).to(dev);
    masks.emplace(key, m);
    return m;
  }
};
MaskCache& mask_cache() {
  static MaskCache c;
  return c;
}
}  // namespace

}  // namespace detail

// ---------------------------------------------------------------------------------------------

SwinIRImpl::SwinIRImpl(const SwinConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t C = cfg_.embed_dim;
  namespace nn = torch::nn;
  auto conv = [&](const char* name, int64_t cin, int64_t cout) {
    return register_module(name, nn::Conv2d(nn::Conv2dOptions(cin, cout, 3).padding(1)));
  };
  auto conv_first = conv("conv_first", cfg_.in_chans, C);
  auto pe = register_module("patch_embed", std::make_shared<detail::PatchEmbedImpl>(C));
  auto layers = register_module("layers", nn::ModuleList());
  for (int64_t s = 0; s < num_stages(); ++s) {
    auto st = std::make_shared<detail::RSTBImpl>(cfg_, s);
    layers->push_back(st);
    stages_.push_back(st);
  }
  auto norm = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({C}).eps(detail::kLnEps)));
  auto cab = conv("conv_after_body", C, C);
  auto cbu_list = register_module("conv_before_upsample", nn::ModuleList());
  auto cbu = nn::Conv2d(nn::Conv2dOptions(C, cfg_.num_feat, 3).padding(1));
  cbu_list->push_back(cbu);
  auto last = conv("conv_last", cfg_.num_feat, cfg_.in_chans);

  conv_first_w_ = conv_first->weight; conv_first_b_ = conv_first->bias;
  pe_norm_w_ = pe->norm->weight; pe_norm_b_ = pe->norm->bias;
  norm_w_ = norm->weight; norm_b_ = norm->bias;
  conv_after_body_w_ = cab->weight; conv_after_body_b_ = cab->bias;
  conv_bu_w_ = cbu->weight; conv_bu_b_ = cbu->bias;
  conv_last_w_ = last->weight; conv_last_b_ = last->bias;

  // UniFMIR's _init_weights: Linear weight ~ N(0, 0.02) (timm trunc_normal_ with bounds ±2),
  // Linear bias 0, LayerNorm 1/0 (already), relative_position_bias_table ~ N(0, 0.02).
  // Convs keep PyTorch's default (kaiming-uniform) init.
  torch::NoGradGuard ng;
  for (auto& st : stages_)
    for (auto& b : st->group->list) {
      for (auto* lin : {&b->attn->qkv, &b->attn->proj, &b->mlp->fc1, &b->mlp->fc2}) {
        (*lin)->weight.normal_(0, 0.02).clamp_(-2, 2);
        (*lin)->bias.zero_();
      }
      b->attn->table.normal_(0, 0.02).clamp_(-2, 2);
    }
}

void SwinIRImpl::set_stage_hook(StageHook hook) { hook_ = std::move(hook); }

void SwinIRImpl::set_fused_kernels(bool on) { fused_ = on; }

bool SwinIRImpl::fused_kernels_available() { return ISO_HAVE_FAST_BLOCK != 0; }

at::Tensor SwinIRImpl::body(at::Tensor f0) {
  const int64_t B = f0.size(0), C = cfg_.embed_dim, H = f0.size(2), W = f0.size(3);
  const int64_t w = cfg_.window_size;
  at::Tensor mask = detail::mask_cache().get(H, W, w, w / 2, f0.device());
  at::Tensor t = f0.permute({0, 2, 3, 1}).contiguous();  // B×H×W×C
  t = at::layer_norm(t, {C}, pe_norm_w_, pe_norm_b_, detail::kLnEps);
  for (int64_t s = 0; s < num_stages(); ++s) {
    auto& st = stages_[size_t(s)];
    at::Tensor y = t;
    for (auto& blk : st->group->list) y = blk->forward(y, mask, fused_);
    // RSTB conv on the B×C×H×W view of the tokens (channels-last strides, no copy), then residual.
    at::Tensor c = at::conv2d(y.permute({0, 3, 1, 2}), st->conv->weight, st->conv->bias, 1, 1);
    t = c.permute({0, 2, 3, 1}) + t;
    if (hook_) {
      at::Tensor out = hook_(s, t.permute({0, 3, 1, 2}));
      if (!out.defined() || out.dim() != 4 || out.size(0) != B || out.size(1) != C || out.size(2) != H || out.size(3) != W)
        throw_error("stage hook returned a tensor of shape {} for stage {}, expected [{}, {}, {}, {}]",
                    out.defined() ? shape_str(out.sizes()) : "undefined", s, B, C, H, W);
      t = out.permute({0, 2, 3, 1});
    }
    t = t.contiguous();
  }
  t = at::layer_norm(t, {C}, norm_w_, norm_b_, detail::kLnEps);
  return at::conv2d(t.permute({0, 3, 1, 2}), conv_after_body_w_, conv_after_body_b_, 1, 1) + f0;
}

at::Tensor SwinIRImpl::features(const at::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != cfg_.in_chans)
    throw_input("model input must be B×{}×H×W, got {}", cfg_.in_chans, shape_str(x.sizes()));
  const int64_t H = x.size(2), W = x.size(3), w = cfg_.window_size;
  const int64_t ph = (w - H % w) % w, pw = (w - W % w) % w;
  if ((ph && ph >= H) || (pw && pw >= W))
    throw_input("slice of {}×{} pixels is too small: reflect padding to a multiple of {} needs each side larger than {}",
                H, W, w, std::max(ph, pw));
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor xp = (ph || pw) ? at::reflection_pad2d(xf, {0, pw, 0, ph}) : xf;
  at::Tensor f0 = at::conv2d(xp, conv_first_w_, conv_first_b_, 1, 1);
  return body(f0).contiguous();
}

at::Tensor SwinIRImpl::tail(const at::Tensor& f, int64_t H, int64_t W) {
  at::Tensor y = at::leaky_relu(at::conv2d(f, conv_bu_w_, conv_bu_b_, 1, 1), 0.01);
  y = at::conv2d(y, conv_last_w_, conv_last_b_, 1, 1);
  return y.slice(2, 0, H).slice(3, 0, W).contiguous();
}

at::Tensor SwinIRImpl::forward(const at::Tensor& x) {
  const int64_t H = x.dim() == 4 ? x.size(2) : 0, W = x.dim() == 4 ? x.size(3) : 0;
  return tail(features(x), H, W);
}

TensorList SwinIRImpl::weights() const {
  TensorList out;
  for (const auto& p : named_parameters(true)) out.emplace_back(p.key(), p.value());
  return out;
}

void SwinIRImpl::load_weights(const TensorMap& sd, const std::string& source) {
  std::map<std::string, at::Tensor> params, buffers;
  for (const auto& p : named_parameters(true)) params.emplace(p.key(), p.value());
  for (const auto& b : named_buffers(true)) buffers.emplace(b.key(), b.value());
  const std::string cfg = cfg_.to_json();
  // 1. Unknown keys.
  std::vector<std::string> unknown;
  for (const auto& kv : sd)
    if (!params.count(kv.first) && !buffers.count(kv.first)) unknown.push_back(kv.first);
  if (!unknown.empty())
    throw CheckpointError(fmt::format("unknown tensor '{}' (shape {}) in {}: the model {} has no such parameter{}",
                                      unknown[0], shape_str(sd.at(unknown[0]).sizes()), source, cfg,
                                      unknown.size() > 1 ? fmt::format(" ({} unknown tensors in all)", unknown.size()) : ""));
  // 2. Missing parameters.
  std::vector<std::string> missing;
  for (const auto& kv : params)
    if (!sd.count(kv.first)) missing.push_back(kv.first);
  if (!missing.empty())
    throw CheckpointError(fmt::format("missing tensor '{}' (expected shape {}) in {}{}", missing[0],
                                      shape_str(params.at(missing[0]).sizes()), source,
                                      missing.size() > 1 ? fmt::format(" ({} missing tensors in all)", missing.size()) : ""));
  // 3. Shapes and dtypes, then buffers' values.
  for (const auto& [name, t] : sd) {
    const bool is_param = params.count(name) > 0;
    const at::Tensor& target = is_param ? params.at(name) : buffers.at(name);
    if (t.sizes() != target.sizes())
      throw CheckpointError(fmt::format("tensor '{}' in {} has shape {}, but the model {} expects {}", name, source,
                                        shape_str(t.sizes()), cfg, shape_str(target.sizes())));
    if (is_param && !at::isFloatingType(t.scalar_type()))
      throw CheckpointError(fmt::format("tensor '{}' in {} has type {}, expected a floating-point type", name, source,
                                        c10::toString(t.scalar_type())));
    if (!is_param && !at::equal(t.to(target.scalar_type()).to(at::kCPU), target.to(at::kCPU)))
      throw CheckpointError(fmt::format("buffer '{}' in {} differs from the one this model computes for {}", name, source,
                                        cfg));
  }
  torch::NoGradGuard ng;
  for (auto& [name, p] : params) p.copy_(sd.at(name));
}

}  // namespace isoprompt
