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
// is needed; otherwise (autograd on, or a non-CPU tensor) the same function in ATen ops, which is
// differentiable and device-agnostic.
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

// LayerNorm over the last dim of a contiguous float32 CPU tensor (rows x C), one pass per row
// with float accumulation; same contract as at::layer_norm(x, {C}, weight, bias, eps).
// Falls back to at::layer_norm when a gradient is needed or the tensor is not on the CPU.
at::Tensor fast_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           double eps);

}  // namespace isoprompt::detail
