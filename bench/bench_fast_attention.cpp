// Fused window attention vs SwinIR's ATen formulation, and a whole Swin block both ways, at the
// UniFMIR isotropic configuration (C=90, 6 heads, window 8) on one 256x256 slice.
//
//   cmake --build build -j2 --target bench_fast_attention && ./build/bench/bench_fast_attention
//   (ISO_BENCH_THREADS=1 for single-thread numbers; default 2)
//
// Every benchmark runs 1 untimed warm-up call, then 7 repetitions of 1 call; read the _median rows.
// Reference and fast variants are interleaved at random (the machine is shared, so load drifts).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../src/model/fast_attention.h"
#include "isoprompt/runtime.h"

namespace iso = isoprompt::detail;

namespace {

constexpr int64_t kC = 90, kHeads = 6, kWs = 8, kN = kWs * kWs, kHW = 256;
constexpr int kReps = 7;

// SwinIR's relative-position bias (table gathered by index), heads x N x N.
at::Tensor make_bias(int64_t nh, int64_t ws) {
  at::Tensor table = at::randn({(2 * ws - 1) * (2 * ws - 1), nh}) * 0.02;
  at::Tensor c = at::stack(at::meshgrid({at::arange(ws), at::arange(ws)}, "ij")).flatten(1);
  at::Tensor rel = (c.unsqueeze(2) - c.unsqueeze(1)).permute({1, 2, 0});
  at::Tensor index = (rel.select(2, 0) + ws - 1) * (2 * ws - 1) + (rel.select(2, 1) + ws - 1);
  return table.index_select(0, index.reshape(-1)).view({ws * ws, ws * ws, nh}).permute({2, 0, 1}).contiguous();
}

at::Tensor window_partition(const at::Tensor& x, int64_t ws) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  return x.view({B, H / ws, ws, W / ws, ws, C}).permute({0, 1, 3, 2, 4, 5}).contiguous().view({-1, ws * ws, C});
}

at::Tensor window_reverse(const at::Tensor& w, int64_t ws, int64_t B, int64_t H, int64_t W) {
  return w.view({B, H / ws, W / ws, ws, ws, -1}).permute({0, 1, 3, 2, 4, 5}).contiguous().view({B, H, W, -1});
}

// One SwinTransformerBlock's parameters (random; speed does not depend on the values).
struct Block {
  int64_t C, nh, ws, shift;
  double scale;
  at::Tensor n1w, n1b, wqkv, bqkv, wproj, bproj, n2w, n2b, w1, b1, w2, b2, bias, mask;
  Block(int64_t C_, int64_t nh_, int64_t ws_, int64_t shift_, int64_t H, int64_t W)
      : C(C_), nh(nh_), ws(ws_), shift(shift_), scale(1.0 / std::sqrt(double(C_ / nh_))) {
    auto r = [](std::vector<int64_t> s, double a) { return at::randn(s) * a; };
    n1w = 1 + r({C}, 0.1), n1b = r({C}, 0.1), n2w = 1 + r({C}, 0.1), n2b = r({C}, 0.1);
    wqkv = r({3 * C, C}, 0.1), bqkv = r({3 * C}, 0.02), wproj = r({C, C}, 0.1), bproj = r({C}, 0.02);
    w1 = r({2 * C, C}, 0.1), b1 = r({2 * C}, 0.02), w2 = r({C, 2 * C}, 0.1), b2 = r({C}, 0.02);
    bias = make_bias(nh, ws);
    // The reference gets its mask precomputed (SwinIR recomputes it per call at non-64x64 sizes).
    if (shift) mask = iso::swin_attention_mask(H, W, ws, shift, at::TensorOptions());
  }
};

iso::SwinBlockWeights weights(const Block& p) {
  iso::SwinBlockWeights w;
  w.norm1_weight = p.n1w, w.norm1_bias = p.n1b, w.norm2_weight = p.n2w, w.norm2_bias = p.n2b;
  w.qkv_weight = p.wqkv, w.qkv_bias = p.bqkv, w.proj_weight = p.wproj, w.proj_bias = p.bproj;
  w.fc1_weight = p.w1, w.fc1_bias = p.b1, w.fc2_weight = p.w2, w.fc2_bias = p.b2;
  w.rel_bias = p.bias, w.num_heads = p.nh, w.window = p.ws, w.shift = p.shift, w.scale = p.scale;
  return w;
}

// SwinIR's SwinTransformerBlock.forward, x: B x L x C.
at::Tensor block_reference(const Block& p, const at::Tensor& x, int64_t H, int64_t W) {
  const int64_t B = x.size(0), C = p.C, N = p.ws * p.ws, hd = C / p.nh;
  at::Tensor h = at::layer_norm(x, {C}, p.n1w, p.n1b).view({B, H, W, C});
  if (p.shift) h = at::roll(h, {-p.shift, -p.shift}, {1, 2});
  at::Tensor xw = window_partition(h, p.ws);
  const int64_t B_ = xw.size(0);
  at::Tensor qkv = at::linear(xw, p.wqkv, p.bqkv).reshape({B_, N, 3, p.nh, hd}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0] * p.scale, k = qkv[1], v = qkv[2];
  at::Tensor attn = q.matmul(k.transpose(-2, -1)) + p.bias.unsqueeze(0);
  if (p.shift) {
    const int64_t nW = p.mask.size(0);
    attn = (attn.view({B_ / nW, nW, p.nh, N, N}) + p.mask.unsqueeze(1).unsqueeze(0)).view({-1, p.nh, N, N});
  }
  attn = at::softmax(attn, -1);
  at::Tensor a = at::linear(attn.matmul(v).transpose(1, 2).reshape({B_, N, C}), p.wproj, p.bproj);
  a = window_reverse(a, p.ws, B, H, W);
  if (p.shift) a = at::roll(a, {p.shift, p.shift}, {1, 2});
  at::Tensor y = x + a.view({B, H * W, C});
  return y + at::linear(at::gelu(at::linear(at::layer_norm(y, {C}, p.n2w, p.n2b), p.w1, p.b1)), p.w2, p.b2);
}

// Per-part wall times of the fast block, seconds.
struct Parts {
  double ln1 = 0, qkv = 0, attn = 0, proj = 0, ln2 = 0, fc1 = 0, gelu = 0, fc2 = 0;
};

// The fast block: per-token ops on the full map in image order, fused attention.
// fused_ln: use fast_layer_norm instead of at::layer_norm. parts: optional timing breakdown.
at::Tensor block_fast(const Block& p, const at::Tensor& x, int64_t H, int64_t W, bool fused_ln,
                      Parts* parts = nullptr) {
  // With 1 thread, parts are timed in thread CPU time (robust on a loaded machine), else wall.
  const bool cpu_clock = at::get_num_threads() == 1;
  auto now_s = [cpu_clock] {
    timespec ts{};
    clock_gettime(cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  double t = now_s();
  auto lap = [&](double* acc) {
    if (!parts) return;
    const double now = now_s();
    *acc += now - t;
    t = now;
  };
  Parts dummy;
  Parts& P = parts ? *parts : dummy;
  const int64_t B = x.size(0), C = p.C;
  auto ln = [&](const at::Tensor& in, const at::Tensor& w, const at::Tensor& b) {
    return fused_ln ? iso::fast_layer_norm(in, w, b, 1e-5) : at::layer_norm(in, {C}, w, b, 1e-5);
  };
  const at::Tensor x2 = x.view({-1, C});
  at::Tensor h = ln(x2, p.n1w, p.n1b);
  lap(&P.ln1);
  at::Tensor qkv = at::linear(h, p.wqkv, p.bqkv).view({B, H, W, 3 * C});
  lap(&P.qkv);
  at::Tensor a = iso::fast_window_attention(qkv, p.nh, p.ws, p.shift, p.bias, p.scale);
  lap(&P.attn);
  at::Tensor y = at::addmm(x2, a.view({-1, C}), p.wproj.t()).add_(p.bproj);  // x + proj(a)
  lap(&P.proj);
  h = ln(y, p.n2w, p.n2b);
  lap(&P.ln2);
  h = at::linear(h, p.w1, p.b1);
  lap(&P.fc1);
  h = at::gelu(h);
  lap(&P.gelu);
  y = at::addmm(y, h, p.w2.t()).add_(p.b2);  // y + fc2(h)
  lap(&P.fc2);
  return y.view({B, H * W, C});
}

double block_gflop(int64_t tokens, int64_t C) {
  return double(tokens) * (16.0 * C * C + 4.0 * kN * C) * 1e-9;
}
double attention_gflop(int64_t tokens, int64_t C) { return double(tokens) * 4.0 * kN * C * 1e-9; }

void set_rate(benchmark::State& st, double gflop) {
  st.counters["GFLOP/s"] = benchmark::Counter(gflop * 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// --- attention only: qkv map 1 x 256 x 256 x 270 in, attention output (before proj) out.
void BM_Attention(benchmark::State& st) {
  const bool fast = st.range(0);
  const int64_t shift = st.range(1);
  at::manual_seed(0);
  at::NoGradGuard ng;
  const at::Tensor qkv = at::randn({1, kHW, kHW, 3 * kC});
  const at::Tensor bias = make_bias(kHeads, kWs);
  const double scale = 1.0 / std::sqrt(15.0);
  auto run = [&] {
    return fast ? iso::fast_window_attention(qkv, kHeads, kWs, shift, bias, scale)
                : iso::window_attention_reference(qkv, kHeads, kWs, shift, bias, scale);
  };
  at::Tensor out = run();  // warm-up
  if (fast)
    st.counters["maxdiff_vs_ref"] = (out - iso::window_attention_reference(qkv, kHeads, kWs, shift, bias, scale))
                                        .abs().max().item<double>();
  for (auto _ : st) benchmark::DoNotOptimize(out = run());
  set_rate(st, attention_gflop(kHW * kHW, kC));
}

// --- whole Swin block, x: 1 x 65536 x 90. variant 0 = SwinIR reference, 1 = full-map ATen ops +
// fused attention, 2 = same + fast_layer_norm, 3 = fast_swin_block (tiled, all fused).
void BM_SwinBlock(benchmark::State& st) {
  const int variant = static_cast<int>(st.range(0));
  const int64_t shift = st.range(1);
  at::manual_seed(1);
  at::NoGradGuard ng;
  const Block p(kC, kHeads, kWs, shift, kHW, kHW);
  const at::Tensor x = at::randn({1, kHW * kHW, kC});
  const iso::SwinBlockWeights w = weights(p);
  auto run = [&] {
    if (variant == 3) return iso::fast_swin_block(x, kHW, kHW, w);
    return variant == 0 ? block_reference(p, x, kHW, kHW) : block_fast(p, x, kHW, kHW, variant == 2);
  };
  at::Tensor out = run();
  if (variant != 0) st.counters["maxdiff_vs_ref"] = (out - block_reference(p, x, kHW, kHW)).abs().max().item<double>();
  for (auto _ : st) benchmark::DoNotOptimize(out = run());
  set_rate(st, block_gflop(kHW * kHW, kC));
}

// --- fast_swin_block's tile width (windows per tile), shift 4.
void BM_FusedBlockTile(benchmark::State& st) {
  at::manual_seed(1);
  at::NoGradGuard ng;
  const Block p(kC, kHeads, kWs, 4, kHW, kHW);
  const at::Tensor x = at::randn({1, kHW * kHW, kC});
  const iso::SwinBlockWeights w = weights(p);
  iso::set_block_tile_windows(st.range(0));
  at::Tensor out = iso::fast_swin_block(x, kHW, kHW, w);
  for (auto _ : st) benchmark::DoNotOptimize(out = iso::fast_swin_block(x, kHW, kHW, w));
  iso::set_block_tile_windows(4);
  set_rate(st, block_gflop(kHW * kHW, kC));
}

// --- where the fast block's time goes (ms per call, per part).
void BM_FastBlockParts(benchmark::State& st) {
  const bool fused_ln = st.range(0);
  at::manual_seed(1);
  at::NoGradGuard ng;
  const Block p(kC, kHeads, kWs, 4, kHW, kHW);
  const at::Tensor x = at::randn({1, kHW * kHW, kC});
  block_fast(p, x, kHW, kHW, fused_ln);
  Parts parts;
  for (auto _ : st) benchmark::DoNotOptimize(block_fast(p, x, kHW, kHW, fused_ln, &parts));
  const double n = double(st.iterations());
  const std::pair<const char*, double> rows[] = {{"ln1", parts.ln1}, {"qkv", parts.qkv}, {"attn", parts.attn},
                                                 {"proj+res", parts.proj}, {"ln2", parts.ln2}, {"fc1", parts.fc1},
                                                 {"gelu", parts.gelu}, {"fc2+res", parts.fc2}};
  for (const auto& r : rows) st.counters[std::string("ms_") + r.first] = 1e3 * r.second / n;
  st.counters["ms_blas"] = 1e3 * (parts.qkv + parts.proj + parts.fc1 + parts.fc2) / n;
}

// --- BLAS alone: Linear on M tokens, K -> N, whole map at once or in row tiles of `tile`.
void BM_Linear(benchmark::State& st) {
  const int64_t K = st.range(0), N = st.range(1), tile = st.range(2), M = kHW * kHW;
  at::NoGradGuard ng;
  const at::Tensor x = at::randn({M, K}), w = at::randn({N, K}) * 0.1, b = at::randn({N});
  at::Tensor out = at::empty({M, N});
  auto run = [&] {
    if (tile == 0) return at::linear(x, w, b);
    for (int64_t r = 0; r < M; r += tile)
    {
      at::Tensor o = out.narrow(0, r, tile);
      at::addmm_out(o, b, x.narrow(0, r, tile), w.t());
    }
    return out;
  };
  run();
  for (auto _ : st) benchmark::DoNotOptimize(run());
  set_rate(st, 2.0 * M * K * N * 1e-9);
}

// --- elementwise: exact GELU on the fc1 output (65536 x 180).
void BM_Gelu(benchmark::State& st) {
  at::NoGradGuard ng;
  const at::Tensor x = at::randn({kHW * kHW, 2 * kC});
  for (auto _ : st) benchmark::DoNotOptimize(at::gelu(x));
}

// --- the network's other big op, for the whole-slice estimate: Conv2d(90, 90, 3, pad 1).
void BM_Conv90(benchmark::State& st) {
  at::NoGradGuard ng;
  const at::Tensor x = at::randn({1, kC, kHW, kHW});
  const at::Tensor w = at::randn({kC, kC, 3, 3}) * 0.05, b = at::zeros({kC});
  at::Tensor out = at::conv2d(x, w, b, 1, 1);
  for (auto _ : st) benchmark::DoNotOptimize(out = at::conv2d(x, w, b, 1, 1));
  set_rate(st, double(kHW * kHW) * kC * kC * 9 * 2 * 1e-9);
}

// --- the whole UniFMIR isotropic network (swinir upscale 1, in_chans 1, C 90, 3 x 6 blocks) on one
// 256x256 slice, random weights: variant 0 = SwinIR-order reference blocks, 1 = fast_swin_block,
// 2 = fast_swin_block with the feature map kept channels-last (B x H x W x C = the token layout),
// so the token <-> image transposes around every conv are free views.
// Same convs, norms and residuals in both; no padding/crop needed at 256. 221.8 GFLOP per slice.
void BM_UniFMIRSlice(benchmark::State& st) {
  const int variant = static_cast<int>(st.range(0));
  const bool fast = variant >= 1;
  bool cl = false;  // set below; the lambdas read it by reference
  at::manual_seed(2);
  at::NoGradGuard ng;
  const int64_t H = kHW, W = kHW, C = kC;
  std::vector<Block> blocks;
  for (int i = 0; i < 18; ++i) blocks.emplace_back(C, kHeads, kWs, (i % 2) ? kWs / 2 : 0, H, W);
  std::vector<iso::SwinBlockWeights> bw;
  for (const Block& b : blocks) bw.push_back(weights(b));
  auto conv_w = [](int64_t o, int64_t i) { return at::randn({o, i, 3, 3}) * (1.0 / std::sqrt(9.0 * i)); };
  const at::Tensor w_first = conv_w(C, 1), w_body = conv_w(C, C), w_up = conv_w(32, C), w_last = conv_w(1, 32);
  std::vector<at::Tensor> w_stage = {conv_w(C, C), conv_w(C, C), conv_w(C, C)};
  const at::Tensor z = at::zeros({C}), ones = at::ones({C});
  const at::Tensor img = at::rand({1, 1, H, W});
  // channels-last: an NCHW view of the B x L x C tokens, and back (a view when f is channels-last)
  auto tokens = [&](const at::Tensor& f) {
    return cl ? f.permute({0, 2, 3, 1}).reshape({1, H * W, f.size(1)}) : f.flatten(2).transpose(1, 2).contiguous();
  };
  auto image = [&](const at::Tensor& t) {
    return cl ? t.view({1, H, W, C}).permute({0, 3, 1, 2}) : t.transpose(1, 2).reshape({1, C, H, W});
  };
  auto run = [&] {
    const at::Tensor f0 = at::conv2d(cl ? img.contiguous(at::MemoryFormat::ChannelsLast) : img, w_first, z, 1, 1);
    at::Tensor t = at::layer_norm(tokens(f0), {C}, ones, z);
    for (int s = 0; s < 3; ++s) {
      at::Tensor y = t;
      for (int b = 0; b < 6; ++b)
        y = fast ? iso::fast_swin_block(y, H, W, bw[s * 6 + b]) : block_reference(blocks[s * 6 + b], y, H, W);
      t = tokens(at::conv2d(image(y), w_stage[s], z, 1, 1)) + t;
    }
    t = at::layer_norm(t, {C}, ones, z);
    const at::Tensor f = at::conv2d(image(t), w_body, z, 1, 1) + f0;
    return at::conv2d(at::leaky_relu(at::conv2d(f, w_up, at::zeros({32}), 1, 1), 0.01), w_last, at::zeros({1}), 1, 1);
  };
  at::Tensor out = run();
  const at::Tensor run_nchw_once = out;
  if (variant == 2) {  // same network, same weights: the layout must not change the output
    cl = true;
    out = run();
    st.counters["maxdiff_vs_nchw"] = (out - run_nchw_once).abs().max().item<double>();
  }
  for (auto _ : st) benchmark::DoNotOptimize(out = run());
  set_rate(st, 221.8);
}

void configure(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMillisecond)->Iterations(1)->Repetitions(kReps)->ReportAggregatesOnly(true)->UseRealTime();
}

BENCHMARK(BM_Attention)->ArgNames({"fast", "shift"})->Args({0, 4})->Args({1, 4})->Apply(configure);
BENCHMARK(BM_SwinBlock)->ArgNames({"variant", "shift"})
    ->Args({0, 0})->Args({1, 0})->Args({3, 0})->Args({0, 4})->Args({1, 4})->Args({2, 4})->Args({3, 4})
    ->Apply(configure);
BENCHMARK(BM_FusedBlockTile)->ArgNames({"tile"})->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(32)->Apply(configure);
BENCHMARK(BM_FastBlockParts)->ArgNames({"fused_ln"})->Args({0})->Args({1})->Apply(configure);
BENCHMARK(BM_Conv90)->Apply(configure);
BENCHMARK(BM_Linear)->ArgNames({"K", "N", "tile"})->Args({kC, 3 * kC, 0})->Args({kC, 3 * kC, 2048})
    ->Args({kC, 2 * kC, 0})->Args({2 * kC, kC, 0})->Args({kC, kC, 0})->Apply(configure);
BENCHMARK(BM_Gelu)->Apply(configure);
BENCHMARK(BM_UniFMIRSlice)->ArgNames({"variant"})->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->Iterations(1)
    ->Repetitions(3)->ReportAggregatesOnly(true)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  // ISO_BENCH_THREADS=1 gives per-core numbers that are less sensitive to a loaded machine.
  const char* env = std::getenv("ISO_BENCH_THREADS");
  isoprompt::set_threads(env ? std::atoi(env) : 2);
  const std::string warn = isoprompt::blas_warning();
  if (!warn.empty()) std::fprintf(stderr, "%s\n", warn.c_str());
  std::printf("threads: %d; block variant 0 = SwinIR reference, 1 = full-map ops + fused attention, "
              "2 = 1 + fast_layer_norm, 3 = fast_swin_block\n",
              at::get_num_threads());
  std::vector<char*> args(argv, argv + argc);
  std::string interleave = "--benchmark_enable_random_interleaving=true";
  args.insert(args.begin() + 1, interleave.data());
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
