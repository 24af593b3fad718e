// Fused window attention against SwinIR's formulation written here in plain ATen ops.
#include "model/fast_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "isoprompt/error.h"

namespace iso = isoprompt::detail;

namespace {

using iso::AttentionKernel;

// Restores the automatic kernel choice when a test ends.
struct KernelGuard {
  explicit KernelGuard(AttentionKernel k) { iso::set_attention_kernel(k); }
  ~KernelGuard() { iso::set_attention_kernel(AttentionKernel::kAuto); }
};

// The fused kernels run with 2 intra-op threads (LibTorch defaults to 1 here), so that windows
// and tiles really split across threads; restores the previous count.
struct ThreadsGuard {
  int before = at::get_num_threads();
  explicit ThreadsGuard(int n) { at::set_num_threads(n); }
  ~ThreadsGuard() { at::set_num_threads(before); }
};

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// --- SwinIR, transcribed (network_swinir.py): window_partition / window_reverse / calculate_mask.
at::Tensor window_partition(const at::Tensor& x, int64_t ws) {  // B,H,W,C -> nW*B, ws, ws, C
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  return x.view({B, H / ws, ws, W / ws, ws, C})
      .permute({0, 1, 3, 2, 4, 5})
      .contiguous()
      .view({-1, ws, ws, C});
}

at::Tensor window_reverse(const at::Tensor& windows, int64_t ws, int64_t H, int64_t W) {
  const int64_t B = windows.size(0) / (H * W / ws / ws);
  return windows.view({B, H / ws, W / ws, ws, ws, -1})
      .permute({0, 1, 3, 2, 4, 5})
      .contiguous()
      .view({B, H, W, -1});
}

at::Tensor calculate_mask(int64_t H, int64_t W, int64_t ws, int64_t shift) {
  using at::indexing::Slice;
  at::Tensor img_mask = at::zeros({1, H, W, 1});
  const std::vector<std::pair<int64_t, int64_t>> hs = {
      {0, H - ws}, {H - ws, H - shift}, {H - shift, H}};
  const std::vector<std::pair<int64_t, int64_t>> wsl = {
      {0, W - ws}, {W - ws, W - shift}, {W - shift, W}};
  int cnt = 0;
  for (const auto& h : hs)
    for (const auto& w : wsl) {
      img_mask.index_put_({Slice(), Slice(h.first, h.second), Slice(w.first, w.second), Slice()},
                          static_cast<float>(cnt));
      ++cnt;
    }
  at::Tensor mw = window_partition(img_mask, ws).view({-1, ws * ws});
  at::Tensor am = mw.unsqueeze(1) - mw.unsqueeze(2);
  return am.masked_fill(am != 0, -100.0).masked_fill(am == 0, 0.0);
}

// WindowAttention.forward after the qkv Linear, on already partitioned windows (B_, N, 3C).
at::Tensor window_attention(const at::Tensor& qkv_w, int64_t nh, const at::Tensor& bias,
                            double scale, const c10::optional<at::Tensor>& mask) {
  const int64_t B_ = qkv_w.size(0), N = qkv_w.size(1), C = qkv_w.size(2) / 3;
  at::Tensor qkv = qkv_w.reshape({B_, N, 3, nh, C / nh}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  q = q * scale;
  at::Tensor attn = q.matmul(k.transpose(-2, -1));
  attn = attn + bias.unsqueeze(0);
  if (mask) {
    const int64_t nW = mask->size(0);
    attn = attn.view({B_ / nW, nW, nh, N, N}) + mask->unsqueeze(1).unsqueeze(0);
    attn = attn.view({-1, nh, N, N});
  }
  attn = at::softmax(attn, -1);
  return attn.matmul(v).transpose(1, 2).reshape({B_, N, C});
}

// The test's own reference for fast_window_attention's contract: roll, partition, attention,
// reverse, roll back, on a B x H x W x 3C qkv map.
at::Tensor reference(const at::Tensor& qkv, int64_t nh, int64_t ws, int64_t shift,
                     const at::Tensor& bias, double scale) {
  const int64_t H = qkv.size(1), W = qkv.size(2), C3 = qkv.size(3);
  at::Tensor x = shift ? at::roll(qkv, {-shift, -shift}, {1, 2}) : qkv;
  at::Tensor xw = window_partition(x, ws).view({-1, ws * ws, C3});
  c10::optional<at::Tensor> mask;
  if (shift) mask = calculate_mask(H, W, ws, shift);
  at::Tensor o = window_attention(xw, nh, bias, scale, mask);
  o = window_reverse(o.view({-1, ws, ws, C3 / 3}), ws, H, W);
  return shift ? at::roll(o, {shift, shift}, {1, 2}) : o;
}

// A relative-position bias laid out as the kernel wants it, built the SwinIR way from a table.
at::Tensor make_bias(int64_t nh, int64_t ws, float amplitude) {
  at::Tensor table = at::randn({(2 * ws - 1) * (2 * ws - 1), nh}) * amplitude;
  at::Tensor coords = at::stack(at::meshgrid({at::arange(ws), at::arange(ws)}, "ij"));  // 2,ws,ws
  at::Tensor flat = coords.flatten(1);
  at::Tensor rel = (flat.unsqueeze(2) - flat.unsqueeze(1)).permute({1, 2, 0}).contiguous();
  at::Tensor index = (rel.select(2, 0) + ws - 1) * (2 * ws - 1) + (rel.select(2, 1) + ws - 1);
  return table.index_select(0, index.view(-1))
      .view({ws * ws, ws * ws, nh})
      .permute({2, 0, 1})
      .contiguous();
}

struct Config {
  int64_t B, H, W, C, nh, ws, shift;
  float qkv_amp = 1.f;
};

std::string name(const Config& c) {
  return "B" + std::to_string(c.B) + " " + std::to_string(c.H) + "x" + std::to_string(c.W) + " C" +
         std::to_string(c.C) + " heads" + std::to_string(c.nh) + " ws" + std::to_string(c.ws) +
         " shift" + std::to_string(c.shift) + " amp" + std::to_string(c.qkv_amp);
}

std::vector<AttentionKernel> kernels_to_test() {
  std::vector<AttentionKernel> ks = {AttentionKernel::kPortable, AttentionKernel::kAuto};
  if (iso::attention_avx2_available())
    ks.push_back(AttentionKernel::kAvx2);
  else
    std::printf("SKIPPED: avx2 kernel (cpu lacks avx2/fma), portable kernel still tested\n");
  return ks;
}

void check_config(const Config& c, AttentionKernel k) {
  at::manual_seed(1234 + c.C + c.H);
  at::NoGradGuard no_grad;
  const at::Tensor qkv = at::randn({c.B, c.H, c.W, 3 * c.C}) * c.qkv_amp;
  const at::Tensor bias = make_bias(c.nh, c.ws, 0.5f);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.C / c.nh));
  const at::Tensor ref = reference(qkv, c.nh, c.ws, c.shift, bias, scale);
  KernelGuard guard(k);
  at::Tensor fast;
  {
    ThreadsGuard threads(2);  // the reference runs single-threaded: faster on a loaded machine
    fast = iso::fast_window_attention(qkv, c.nh, c.ws, c.shift, bias, scale);
  }
  ASSERT_EQ(fast.sizes(), (std::vector<int64_t>{c.B, c.H, c.W, c.C})) << name(c);
  EXPECT_TRUE(fast.is_contiguous());
  EXPECT_LE(max_abs_diff(fast, ref), 1e-5) << name(c) << " kernel " << static_cast<int>(k);
  // The library's own ATen path (the autograd / non-CPU fallback) gives the same function.
  EXPECT_LE(
      max_abs_diff(iso::window_attention_reference(qkv, c.nh, c.ws, c.shift, bias, scale), ref),
      1e-5)
      << name(c);
}

}  // namespace

TEST(FastAttention, MaskMatchesSwinIRSlices) {
  // Hand-checked entries on a 16x16 map, window 8, shift 4: windows 0..3 row-major.
  const at::Tensor m = iso::swin_attention_mask(16, 16, 8, 4, at::TensorOptions());
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{4, 64, 64}));
  EXPECT_EQ(m[0].abs().sum().item<float>(), 0.f);  // top-left window: one region
  // Window 1 (top-right): columns 0-3 are region 1, columns 4-7 region 2 (shifted frame).
  EXPECT_EQ(m[1][0][3].item<float>(), 0.f);
  EXPECT_EQ(m[1][0][4].item<float>(), -100.f);
  EXPECT_EQ(m[1][8 * 7 + 7][4].item<float>(), 0.f);
  // Window 2 (bottom-left): rows 0-3 vs rows 4-7.
  EXPECT_EQ(m[2][0][8 * 3].item<float>(), 0.f);
  EXPECT_EQ(m[2][0][8 * 4].item<float>(), -100.f);
  // Window 3 (bottom-right): four regions; token (0,0) only sees the 4x4 top-left block.
  EXPECT_EQ((m[3][0] == 0).sum().item<int64_t>(), 16);
  for (auto [H, W] : std::vector<std::pair<int64_t, int64_t>>{{16, 16}, {24, 40}, {72, 16}})
    EXPECT_TRUE(at::equal(iso::swin_attention_mask(H, W, 8, 4, at::TensorOptions()),
                          calculate_mask(H, W, 8, 4)))
        << H << "x" << W;
  EXPECT_TRUE(at::equal(iso::swin_attention_mask(12, 18, 6, 3, at::TensorOptions()),
                        calculate_mask(12, 18, 6, 3)));
  EXPECT_EQ(iso::swin_attention_mask(16, 16, 8, 0, at::TensorOptions()).abs().sum().item<float>(),
            0.f);
}

TEST(FastAttention, MatchesReferenceUniFMIRShapes) {
  for (AttentionKernel k : kernels_to_test()) {
    check_config({1, 32, 32, 90, 6, 8, 0}, k);
    check_config({1, 32, 32, 90, 6, 8, 4}, k);
    check_config({2, 24, 40, 90, 6, 8, 4}, k);
    check_config({2, 16, 72, 90, 6, 8, 4}, k);
    check_config({1, 8, 8, 90, 6, 8, 4}, k);  // one window: every region inside it
  }
}

TEST(FastAttention, MatchesReferenceOtherHeadDims) {
  for (AttentionKernel k : kernels_to_test()) {
    check_config({1, 16, 24, 12, 2, 8, 4}, k);   // hd 6
    check_config({2, 16, 16, 16, 2, 8, 4}, k);   // hd 8: one vector, no tail
    check_config({1, 16, 16, 64, 4, 8, 4}, k);   // hd 16
    check_config({1, 16, 16, 72, 3, 8, 0}, k);   // hd 24
    check_config({1, 16, 16, 64, 2, 8, 4}, k);   // hd 32, the largest avx2 head
    check_config({1, 16, 16, 180, 6, 8, 4}, k);  // SwinIR-classical width (hd 30)
  }
}

TEST(FastAttention, MatchesReferenceOtherWindows) {
  for (AttentionKernel k : {AttentionKernel::kPortable, AttentionKernel::kAuto}) {
    check_config({1, 16, 24, 24, 2, 4, 2}, k);   // N = 16: partial score blocks
    check_config({1, 32, 16, 32, 2, 16, 8}, k);  // N = 256: several 64-wide blocks
    check_config({1, 12, 18, 24, 2, 6, 3}, k);   // N = 36: portable kernel only
    check_config({1, 16, 16, 80, 2, 8, 4}, k);   // hd 40: portable kernel only
  }
}

TEST(FastAttention, LargeLogitsAndMaskedRows) {
  // Logits spread over several hundred: exp underflows (the kernel flushes exp(<-87) to 0) and
  // float32 rounding of the logits is amplified by the softmax, so no float32 code matches a
  // float32 reference to 1e-5 here. The bar: the kernel is as close to a float64 reference as
  // PyTorch's own float32 path is.
  for (AttentionKernel k : kernels_to_test()) {
    for (const Config& c :
         {Config{1, 16, 16, 90, 6, 8, 4, 6.f}, Config{1, 16, 16, 12, 2, 8, 4, 10.f}}) {
      at::manual_seed(99);
      at::NoGradGuard no_grad;
      const at::Tensor qkv = at::randn({c.B, c.H, c.W, 3 * c.C}) * c.qkv_amp;
      const at::Tensor bias = make_bias(c.nh, c.ws, 0.5f);
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.C / c.nh));
      const at::Tensor ref64 =
          reference(qkv.to(at::kDouble), c.nh, c.ws, c.shift, bias.to(at::kDouble), scale);
      const at::Tensor ref32 = reference(qkv, c.nh, c.ws, c.shift, bias, scale);
      KernelGuard guard(k);
      const at::Tensor fast = iso::fast_window_attention(qkv, c.nh, c.ws, c.shift, bias, scale);
      const double err_torch = max_abs_diff(ref32.to(at::kDouble), ref64);
      const double err_fast = max_abs_diff(fast.to(at::kDouble), ref64);
      EXPECT_GT(err_torch, 0.0) << name(c);
      EXPECT_LE(err_fast, std::max(1e-5, 2 * err_torch))
          << name(c) << " kernel " << static_cast<int>(k);
    }
  }
}

TEST(FastAttention, NonContiguousInputAndBatchIndependence) {
  at::manual_seed(7);
  at::NoGradGuard no_grad;
  const at::Tensor base = at::randn({2, 3 * 30, 16, 24});  // channels-first, permuted to B,H,W,3C
  const at::Tensor qkv = base.permute({0, 2, 3, 1});
  ASSERT_FALSE(qkv.is_contiguous());
  const at::Tensor bias = make_bias(3, 8, 0.3f);
  const at::Tensor out = iso::fast_window_attention(qkv, 3, 8, 4, bias, 0.3);
  EXPECT_LE(max_abs_diff(out, reference(qkv.contiguous(), 3, 8, 4, bias, 0.3)), 1e-5);
  // Batch item 1 alone gives the same as inside the batch.
  const at::Tensor one = iso::fast_window_attention(qkv.narrow(0, 1, 1), 3, 8, 4, bias, 0.3);
  EXPECT_LE(max_abs_diff(one, out.narrow(0, 1, 1)), 1e-6);
}

// SwinIR applies qkv and proj per window, between roll/partition and reverse/roll. Both are
// per-token Linears, so the fast path applies them on the full map in image order.
TEST(FastAttention, LinearsCommuteWithShiftAndPartition) {
  at::manual_seed(42);
  at::NoGradGuard no_grad;
  const int64_t B = 2, H = 24, W = 32, C = 90, nh = 6, ws = 8, shift = 4;
  const at::Tensor x = at::randn({B, H, W, C});
  const at::Tensor wqkv = at::randn({3 * C, C}) * 0.1, bqkv = at::randn({3 * C}) * 0.1;
  const at::Tensor wp = at::randn({C, C}) * 0.1, bp = at::randn({C}) * 0.1;
  const at::Tensor bias = make_bias(nh, ws, 0.5f);
  const double scale = 1.0 / std::sqrt(15.0);
  for (int64_t s : {int64_t{0}, shift}) {
    // SwinTransformerBlock order: roll, partition, qkv, attention, proj, reverse, roll back.
    at::Tensor xs = s ? at::roll(x, {-s, -s}, {1, 2}) : x;
    at::Tensor xw = window_partition(xs, ws).view({-1, ws * ws, C});
    c10::optional<at::Tensor> mask;
    if (s) mask = calculate_mask(H, W, ws, s);
    at::Tensor a = window_attention(at::linear(xw, wqkv, bqkv), nh, bias, scale, mask);
    a = at::linear(a, wp, bp);
    a = window_reverse(a.view({-1, ws, ws, C}), ws, H, W);
    const at::Tensor swinir = s ? at::roll(a, {s, s}, {1, 2}) : a;
    // Fast order: qkv on the full map, fused attention, proj on the full map.
    const at::Tensor fast = at::linear(
        iso::fast_window_attention(at::linear(x, wqkv, bqkv), nh, ws, s, bias, scale), wp, bp);
    EXPECT_LE(max_abs_diff(fast, swinir), 1e-5) << "shift " << s;
  }
}

TEST(FastAttention, AutogradFallsBackToDifferentiablePath) {
  at::manual_seed(3);
  const at::Tensor qkv = at::randn({1, 16, 16, 36}).requires_grad_(true);
  const at::Tensor bias = make_bias(2, 8, 0.5f);
  const at::Tensor out = iso::fast_window_attention(qkv, 2, 8, 4, bias, 0.4);
  ASSERT_TRUE(out.requires_grad());
  out.sum().backward();
  ASSERT_TRUE(qkv.grad().defined());
  const at::Tensor q2 = qkv.detach().clone().requires_grad_(true);
  reference(q2, 2, 8, 4, bias, 0.4).sum().backward();
  EXPECT_LE(max_abs_diff(qkv.grad(), q2.grad()), 1e-5);
  EXPECT_LE(max_abs_diff(out.detach(), reference(qkv.detach(), 2, 8, 4, bias, 0.4)), 1e-5);
}

TEST(FastAttention, RejectsBadShapesWithClearMessages) {
  at::NoGradGuard no_grad;
  const at::Tensor bias = make_bias(6, 8, 0.1f);
  auto msg = [&](const at::Tensor& qkv, int64_t nh, int64_t ws, int64_t shift,
                 const at::Tensor& b) {
    try {
      iso::fast_window_attention(qkv, nh, ws, shift, b, 0.25);
    } catch (const isoprompt::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(msg(at::zeros({1, 20, 16, 270}), 6, 8, 4, bias),
            "window attention: map 20x16 is not a multiple of window 8");
  EXPECT_EQ(msg(at::zeros({1, 16, 16, 270}), 6, 8, 8, bias),
            "window attention: shift 8 outside [0, window 8)");
  EXPECT_EQ(msg(at::zeros({1, 16, 16, 271}), 6, 8, 4, bias),
            "window attention: qkv channels 271 are not 3 x heads (6) x head dim");
  EXPECT_EQ(msg(at::zeros({1, 16, 16, 270}), 6, 8, 4, make_bias(5, 8, 0.1f)),
            "window attention: rel_bias must be 6 x 64 x 64, got 5 x 64 x 64");
  EXPECT_EQ(msg(at::zeros({16, 16, 270}), 6, 8, 4, bias),
            "window attention: qkv must be B x H x W x 3C, got 3 dims");
  if (iso::attention_avx2_available()) {
    KernelGuard guard(AttentionKernel::kAvx2);
    EXPECT_EQ(msg(at::zeros({1, 12, 12, 72}), 2, 6, 3, make_bias(2, 6, 0.1f)),
              "window attention: the avx2 kernel was forced but is unavailable for this shape");
  }
}

TEST(FastLayerNorm, MatchesAtenLayerNorm) {
  at::manual_seed(5);
  at::NoGradGuard no_grad;
  for (AttentionKernel k : {AttentionKernel::kPortable, AttentionKernel::kAuto}) {
    KernelGuard guard(k);  // kAuto: the AVX2 row loop where the CPU has it
    for (int64_t C : {90, 12, 180, 7}) {
      const at::Tensor x = at::randn({3, 17, C}) * 3 + 1.5;
      const at::Tensor w = at::randn({C}), b = at::randn({C});
      const at::Tensor ref = at::layer_norm(x, {C}, w, b, 1e-5);
      const at::Tensor got = iso::fast_layer_norm(x, w, b, 1e-5);
      ASSERT_EQ(got.sizes(), x.sizes());
      EXPECT_LE(max_abs_diff(got, ref), 1e-5) << "C " << C << " kernel " << static_cast<int>(k);
    }
  }
  // Hand-computed: row (1, 2, 3) has mean 2, variance 2/3.
  const at::Tensor x = at::tensor({1.f, 2.f, 3.f}).view({1, 3});
  const at::Tensor y = iso::fast_layer_norm(x, at::ones({3}), at::zeros({3}), 0.0);
  const float r = 1.f / std::sqrt(2.f / 3.f);
  EXPECT_NEAR(y[0][0].item<float>(), -r, 1e-6);
  EXPECT_NEAR(y[0][1].item<float>(), 0.f, 1e-6);
  EXPECT_NEAR(y[0][2].item<float>(), r, 1e-6);
}

// ------------------------------------------------------------------------------------------------
// Whole SwinTransformerBlock: fused tiles vs SwinIR's forward transcribed in ATen ops.
namespace {

iso::SwinBlockWeights random_block(int64_t C, int64_t nh, int64_t ws, int64_t shift, int64_t hidden,
                                   bool biases) {
  iso::SwinBlockWeights p;
  auto r = [](std::vector<int64_t> s, double a) { return at::randn(s) * a; };
  p.norm1_weight = 1 + r({C}, 0.2);
  p.norm1_bias = r({C}, 0.2);
  p.norm2_weight = 1 + r({C}, 0.2);
  p.norm2_bias = r({C}, 0.2);
  p.qkv_weight = r({3 * C, C}, 0.15);
  p.proj_weight = r({C, C}, 0.15);
  p.fc1_weight = r({hidden, C}, 0.15);
  p.fc2_weight = r({C, hidden}, 0.15);
  if (biases) {
    p.qkv_bias = r({3 * C}, 0.1);
    p.proj_bias = r({C}, 0.1);
    p.fc1_bias = r({hidden}, 0.1);
    p.fc2_bias = r({C}, 0.1);
  }
  p.rel_bias = make_bias(nh, ws, 0.5f);
  p.num_heads = nh;
  p.window = ws;
  p.shift = shift;
  p.scale = 1.0 / std::sqrt(double(C / nh));
  return p;
}

// SwinTransformerBlock.forward (network_swinir.py), x: B x L x C.
at::Tensor swinir_block(const at::Tensor& x, int64_t H, int64_t W, const iso::SwinBlockWeights& p) {
  const int64_t B = x.size(0), C = x.size(2), ws = p.window, s = p.shift;
  const at::Tensor shortcut = x;
  at::Tensor h = at::layer_norm(x, {C}, p.norm1_weight, p.norm1_bias, 1e-5).view({B, H, W, C});
  if (s) h = at::roll(h, {-s, -s}, {1, 2});
  at::Tensor xw = window_partition(h, ws).view({-1, ws * ws, C});
  c10::optional<at::Tensor> mask;
  if (s) mask = calculate_mask(H, W, ws, s);
  at::Tensor a = window_attention(at::linear(xw, p.qkv_weight, p.qkv_bias), p.num_heads, p.rel_bias,
                                  p.scale, mask);
  a = at::linear(a, p.proj_weight, p.proj_bias);
  h = window_reverse(a.view({-1, ws, ws, C}), ws, H, W);
  if (s) h = at::roll(h, {s, s}, {1, 2});
  at::Tensor y = shortcut + h.view({B, H * W, C});
  at::Tensor m = at::layer_norm(y, {C}, p.norm2_weight, p.norm2_bias, 1e-5);
  return y +
         at::linear(at::gelu(at::linear(m, p.fc1_weight, p.fc1_bias)), p.fc2_weight, p.fc2_bias);
}

struct TileGuard {
  explicit TileGuard(int64_t n) { iso::set_block_tile_windows(n); }
  ~TileGuard() { iso::set_block_tile_windows(4); }
};

}  // namespace

TEST(FastSwinBlock, MatchesSwinIRBlock) {
  struct Case {
    int64_t B, H, W, C, nh, shift, tile;
    bool biases;
  };
  const std::vector<Case> cases = {
      {1, 32, 32, 90, 6, 0, 4, true},   {1, 32, 32, 90, 6, 4, 4, true},
      {2, 24, 40, 90, 6, 4, 4, true},  // 5 windows per row: last tile has 1 window
      {2, 16, 72, 90, 6, 4, 2, true},   {1, 40, 16, 90, 6, 4, 1, true},
      {1, 16, 24, 12, 2, 4, 100, true},  // tile wider than the map
      {1, 16, 24, 12, 2, 0, 3, false},   // no biases anywhere
  };
  for (AttentionKernel k : kernels_to_test()) {
    for (const Case& c : cases) {
      at::manual_seed(11 + c.C + c.H);
      at::NoGradGuard no_grad;
      const auto p = random_block(c.C, c.nh, 8, c.shift, 2 * c.C, c.biases);
      const at::Tensor x = at::randn({c.B, c.H * c.W, c.C});
      const at::Tensor ref = swinir_block(x, c.H, c.W, p);
      KernelGuard kg(k);
      TileGuard tg(c.tile);
      ThreadsGuard threads(2);
      const at::Tensor got = iso::fast_swin_block(x, c.H, c.W, p);
      ASSERT_EQ(got.sizes(), x.sizes());
      // float32 sums of C = 90 products of O(1-10) terms: 1.0e-5 was seen on a loaded machine.
      EXPECT_LE(max_abs_diff(got, ref), 2e-5)
          << "B" << c.B << " " << c.H << "x" << c.W << " C" << c.C << " shift " << c.shift
          << " tile " << c.tile << " kernel " << static_cast<int>(k);
    }
  }
}

TEST(FastSwinBlock, AutogradFallsBackToComposedOps) {
  at::manual_seed(8);
  const auto p = random_block(12, 2, 8, 4, 24, true);
  const at::Tensor x = at::randn({1, 16 * 16, 12}).requires_grad_(true);
  const at::Tensor out = iso::fast_swin_block(x, 16, 16, p);
  ASSERT_TRUE(out.requires_grad());
  out.pow(2).sum().backward();
  const at::Tensor x2 = x.detach().clone().requires_grad_(true);
  const at::Tensor ref = swinir_block(x2, 16, 16, p);
  ref.pow(2).sum().backward();
  EXPECT_LE(max_abs_diff(out.detach(), ref.detach()), 1e-5);
  EXPECT_LE(max_abs_diff(x.grad(), x2.grad()), 1e-4);
}

TEST(FastSwinBlock, RejectsBadWeightsWithClearMessages) {
  at::NoGradGuard no_grad;
  auto msg = [](const at::Tensor& x, int64_t H, int64_t W, const iso::SwinBlockWeights& p) {
    try {
      iso::fast_swin_block(x, H, W, p);
    } catch (const isoprompt::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const at::Tensor x = at::zeros({1, 256, 12});
  auto p = random_block(12, 2, 8, 4, 24, true);
  EXPECT_EQ(msg(at::zeros({1, 250, 12}), 16, 16, p),
            "swin block: x must be B x 256 x C for a 16x16 map, got 1 x 250 x 12");
  p.fc2_weight = at::zeros({12, 23});
  EXPECT_EQ(msg(x, 16, 16, p), "swin block: fc2 weight must be 12 x 24, got 12 x 23");
  p = random_block(12, 2, 8, 4, 24, true);
  p.norm2_bias = at::Tensor();
  EXPECT_EQ(msg(x, 16, 16, p), "swin block: norm2 bias is missing");
  p = random_block(12, 2, 8, 4, 24, true);
  p.rel_bias = at::Tensor();
  EXPECT_EQ(msg(x, 16, 16, p), "window attention: rel_bias must be 2 x 64 x 64, got none");
  EXPECT_EQ(msg(at::zeros({1, 240, 12}), 12, 20, random_block(12, 2, 8, 4, 24, true)),
            "window attention: map 12x20 is not a multiple of window 8");
}

// ------------------------------------------------------------------------------------------------
// Training: fast_window_attention with autograd runs the fused backward (a custom autograd
// function). Its gradients must be autograd's through the ATen formulation.
namespace {

struct Grads {
  at::Tensor out, dqkv, dbias;
};

// out, d(sum(out * g))/dqkv and /dbias through fast_window_attention or the ATen reference.
Grads attention_grads(const at::Tensor& qkv0, const at::Tensor& bias0, const at::Tensor& g,
                      int64_t nh, int64_t ws, int64_t shift, double scale, bool fused) {
  const at::Tensor qkv = qkv0.detach().clone().requires_grad_(true);
  const at::Tensor bias = bias0.detach().clone().requires_grad_(true);
  const at::Tensor out = fused ? iso::fast_window_attention(qkv, nh, ws, shift, bias, scale)
                               : reference(qkv, nh, ws, shift, bias, scale);
  (out * g).sum().backward();
  return {out.detach(), qkv.grad(), bias.grad()};
}

// max |a - b| relative to max |b| (the gradient's scale).
double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return max_abs_diff(a, b) / std::max(b.abs().max().item<double>(), 1e-30);
}

}  // namespace

TEST(FastAttentionTrain, GradientsMatchAutogradFloat) {
  // Shapes of the default backbone (head dim 8), the next default (C 48, 6 heads), UniFMIR
  // (head dim 15: the avx2 kernel pads it), odd head dims, 4x4 and 8x8 windows, non-square maps.
  const std::vector<Config> configs = {
      {2, 16, 24, 32, 4, 8, 0}, {2, 16, 24, 32, 4, 8, 4}, {1, 16, 16, 48, 6, 8, 4},
      {1, 16, 32, 90, 6, 8, 4}, {1, 8, 12, 12, 2, 4, 2},  {1, 16, 16, 20, 4, 8, 4, 4.f},
  };
  for (AttentionKernel k : kernels_to_test()) {
    KernelGuard kg(k);
    for (const Config& c : configs) {
      if (k == AttentionKernel::kAvx2 && (c.ws * c.ws) % 8 != 0) continue;  // avx2 needs N % 8
      at::manual_seed(77 + c.C + c.shift);
      const at::Tensor qkv = at::randn({c.B, c.H, c.W, 3 * c.C}) * c.qkv_amp;
      const at::Tensor bias = make_bias(c.nh, c.ws, 0.5f);
      const at::Tensor g = at::randn({c.B, c.H, c.W, c.C});
      const double scale = 1.0 / std::sqrt(double(c.C / c.nh));
      ThreadsGuard threads(2);
      const Grads ref = attention_grads(qkv, bias, g, c.nh, c.ws, c.shift, scale, false);
      const Grads got = attention_grads(qkv, bias, g, c.nh, c.ws, c.shift, scale, true);
      const std::string what = name(c) + " kernel " + std::to_string(static_cast<int>(k));
      EXPECT_LE(rel_diff(got.out, ref.out), 1e-5) << what;  // amp 4: logits up to ~100
      EXPECT_LE(rel_diff(got.dqkv, ref.dqkv), 1e-5) << what;
      EXPECT_LE(rel_diff(got.dbias, ref.dbias), 1e-5) << what;
    }
  }
}

TEST(FastAttentionTrain, GradientsMatchAutogradDouble) {
  // In double the fused backward (portable kernel) is autograd's to rounding.
  for (int64_t shift : {0, 4}) {
    at::manual_seed(5 + shift);
    const at::Tensor qkv = at::randn({2, 16, 24, 36}, at::kDouble);
    const at::Tensor bias = make_bias(3, 8, 0.5f).to(at::kDouble);
    const at::Tensor g = at::randn({2, 16, 24, 12}, at::kDouble);
    const Grads ref = attention_grads(qkv, bias, g, 3, 8, shift, 0.5, false);
    const Grads got = attention_grads(qkv, bias, g, 3, 8, shift, 0.5, true);
    EXPECT_EQ(got.dqkv.scalar_type(), at::kDouble);
    EXPECT_LE(rel_diff(got.out, ref.out), 1e-12) << "shift " << shift;
    EXPECT_LE(rel_diff(got.dqkv, ref.dqkv), 1e-12) << "shift " << shift;
    EXPECT_LE(rel_diff(got.dbias, ref.dbias), 1e-12) << "shift " << shift;
  }
}

TEST(FastAttentionTrain, GradientsMatchFiniteDifferences) {
  // Central differences in double on a tiny shifted map (4x4 windows, 2 heads, every region of
  // the mask present): every qkv and bias entry.
  at::manual_seed(21);
  const int64_t nh = 2, ws = 4, shift = 2;
  const at::Tensor qkv = at::randn({1, 8, 8, 12}, at::kDouble);
  const at::Tensor bias = make_bias(nh, ws, 0.5f).to(at::kDouble);
  const at::Tensor g = at::randn({1, 8, 8, 4}, at::kDouble);
  const Grads got = attention_grads(qkv, bias, g, nh, ws, shift, 0.7, true);
  auto loss = [&](const at::Tensor& q, const at::Tensor& b) {
    at::NoGradGuard ng;
    return (iso::fast_window_attention(q, nh, ws, shift, b, 0.7) * g).sum().item<double>();
  };
  const double h = 1e-6;
  auto check = [&](const at::Tensor& param, const at::Tensor& grad, bool is_qkv) {
    double worst = 0;
    const at::Tensor flat = param.view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double v = flat[i].item<double>();
      flat[i] = v + h;
      const double up = is_qkv ? loss(param, bias) : loss(qkv, param);
      flat[i] = v - h;
      const double down = is_qkv ? loss(param, bias) : loss(qkv, param);
      flat[i] = v;
      worst = std::max(worst, std::abs((up - down) / (2 * h) - grad.view(-1)[i].item<double>()));
    }
    return worst;
  };
  at::Tensor q = qkv.clone(), b = bias.clone();
  EXPECT_LE(check(q, got.dqkv, true), 1e-7);
  EXPECT_LE(check(b, got.dbias, false), 1e-7);
}
