// Fused (shifted-)window multi-head self-attention for Swin blocks at inference.
//
// SwinIR's attention does roll -> window partition -> qkv Linear -> q*scale @ k^T + bias (+ mask)
// -> softmax -> @ v -> proj Linear -> window reverse -> roll back, with each step a full copy of the
// feature map. The Linears are per-token, so they commute with the roll and the window partition.
// This kernel therefore takes the qkv Linear's output on the UNSHIFTED map, in image order, and
// returns the attention output (before proj) in image order: the caller applies proj on the full
// map. Windows are gathered by index arithmetic, the shift mask is computed from region ids on the
// fly, and bias + mask + softmax + @v happen in a per-thread buffer without temporaries.
//
// Layout contract (all float32, CPU, any strides: the input is made contiguous if needed):
//   qkv       B x H x W x 3C : token (b,y,x) at row (b*H + y)*W + x. Channels exactly as SwinIR's
//             qkv Linear output: [q_head0 .. q_head{nh-1}, k_head0 .., v_head0 ..], each head hd=C/nh
//             contiguous (i.e. the reshape(B_, N, 3, nh, hd) order).
//   rel_bias  nh x N x N with N = window*window: relative_position_bias_table gathered by
//             relative_position_index and permuted to (head, query, key), i.e.
//             table[index.view(-1)].view(N, N, nh).permute(2, 0, 1). Precompute once per block.
//   scale     hd^-0.5 (or the block's qk_scale). Applied to q before q @ k^T, as SwinIR does.
//   shift     SwinIR's shift_size (0 or window/2). The mask is SwinIR's calculate_mask: regions
//             [0, H-ws), [H-ws, H-shift), [H-shift, H) per axis, -100 between different regions.
//   returns   B x H x W x C, contiguous: exactly SwinIR's `(attn @ v).transpose(1, 2).reshape(B_, N, C)`
//             window-reversed and rolled back, i.e. the tensor to feed to `proj` (then residual).
// Requirements: H % window == 0, W % window == 0, 0 <= shift < window, C % nh == 0.
//
// Paths: a fused CPU kernel (AVX2+FMA when the CPU has it, else portable C++) when no gradient
// is needed. With autograd on CPU (float32, or float64 for the gradient tests) a custom autograd
// function: the same fused forward, saving only qkv and rel_bias, and a fused backward that
// recomputes each window's softmax and returns d qkv and d rel_bias (the caller's index_select
// of relative_position_bias_table carries the latter to the table). Other devices and dtypes take
// the same function in ATen ops (window_attention_reference), differentiable and device-agnostic.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace isoprompt::detail {

at::Tensor fast_window_attention(const at::Tensor& qkv, int64_t num_heads, int64_t window,
                                 int64_t shift, const at::Tensor& rel_bias, double scale);

// The straightforward ATen formulation (roll, partition, matmul, softmax, reverse, roll back),
// same contract. Used as the autograd / non-CPU path and as the benchmark baseline.
at::Tensor window_attention_reference(const at::Tensor& qkv, int64_t num_heads, int64_t window,
                                      int64_t shift, const at::Tensor& rel_bias, double scale);

// SwinIR's attn_mask for an H x W map (nW x N x N, 0 or -100), for the reference path and tests.
at::Tensor swin_attention_mask(int64_t H, int64_t W, int64_t window, int64_t shift,
                               const at::TensorOptions& options);

// Which kernel fast_window_attention uses on CPU. kAuto picks AVX2 when the CPU supports it.
// Tests force each one; not thread-safe, set it before running.
enum class AttentionKernel { kAuto, kPortable, kAvx2 };
void set_attention_kernel(AttentionKernel k);
// True when the AVX2+FMA kernel is compiled in and the CPU supports it.
bool attention_avx2_available();

// One SwinIR SwinTransformerBlock's weights (SwinIR state_dict names in the comments).
// All float32 on x's device; biases may be undefined tensors (no bias).
struct SwinBlockWeights {
  at::Tensor norm1_weight, norm1_bias;  // norm1.{weight,bias}: C
  at::Tensor qkv_weight, qkv_bias;      // attn.qkv: 3C x C, 3C
  at::Tensor rel_bias;                  // nh x N x N, as for fast_window_attention
  at::Tensor proj_weight, proj_bias;    // attn.proj: C x C, C
  at::Tensor norm2_weight, norm2_bias;  // norm2: C
  at::Tensor fc1_weight, fc1_bias;      // mlp.fc1: hidden x C, hidden
  at::Tensor fc2_weight, fc2_bias;      // mlp.fc2: C x hidden, C
  int64_t num_heads = 0;
  int64_t window = 0;
  int64_t shift = 0;   // the block's shift_size (0 on even blocks, window/2 on odd ones)
  double scale = 0.0;  // head_dim^-0.5
  double eps = 1e-5;   // LayerNorm eps (nn.LayerNorm default)
};

// A whole SwinTransformerBlock forward (eval; drop_path and dropouts are identity):
//   x = x + proj(attn(shift(norm1(x)))) ; x = x + fc2(GELU(fc1(norm2(x))))
// x: B x (H*W) x C tokens in row-major image order (SwinIR's block input), H and W multiples of
// window. Returns a new tensor of x's shape. On CPU without autograd it runs fused: the map is cut
// into tiles of a few windows (in the shifted frame), and each tile goes through LN, qkv, fused
// attention, proj + residual, LN, fc1, GELU, fc2 + residual while it sits in cache, one tile per
// thread (BLAS then runs single-threaded per tile). Otherwise it composes ATen ops.
at::Tensor fast_swin_block(const at::Tensor& x, int64_t H, int64_t W, const SwinBlockWeights& w);

// Windows per fused-block tile (default 4 = 256 tokens). For benchmarks; not thread-safe.
void set_block_tile_windows(int64_t n);

// LayerNorm over the last dim of a contiguous float32 CPU tensor (rows x C), one pass per row
// with float accumulation; same contract as at::layer_norm(x, {C}, weight, bias, eps).
// Falls back to at::layer_norm when a gradient is needed or the tensor is not on the CPU.
at::Tensor fast_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           double eps);

}  // namespace isoprompt::detail
