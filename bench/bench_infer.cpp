// Reconstruction throughput and network memory.
//
//   cmake --build build --target benchmarks && ./build/bench/bench_infer
//
// BM_Reconstruct*: the framework overhead (z upsampling of plane groups, normalisation,
// tiling, blending, fusion, denormalisation) with a cheap restorer on 64x256x256 uint16,
// K = 4 (output 256x256x256). Counter "slices/s" counts XZ + YZ planes.
// BM_SwinMemory: marginal peak RSS per pixel of one SwinIR forward pass in inference mode
// (run it alone, e.g. --benchmark_filter=SwinMemory, so earlier benchmarks do not hold
// the high-water mark), next to the swin_cost() estimate used for automatic tiling.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/model.h"
#include "isoprompt/runtime.h"
#include "isoprompt/tensor.h"

using namespace isoprompt;

namespace {

Volume make_input() {
  at::manual_seed(0);
  VolumeTensor t;
  t.data = (at::rand({64, 256, 256}) * 4000).floor();
  t.voxel = {0.4, 0.1, 0.1};
  return to_volume(t, DType::U16);
}

void run(benchmark::State& state, const ReconstructParams& p, const SliceRestorer& r) {
  set_log_level(LogLevel::Warn);
  set_threads(0);
  const Volume in = make_input();
  for (auto _ : state) {
    Volume out = reconstruct(in, p, r);
    benchmark::DoNotOptimize(out.raw());
  }
  state.counters["slices/s"] =
      benchmark::Counter(double(in.ny() + in.nx()) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["Mvox/s"] = benchmark::Counter(double(in.numel()) * 4 * state.iterations() / 1e6,
                                                benchmark::Counter::kIsRate);
}

ReconstructParams params() {
  ReconstructParams p;
  p.factor = 4.0;
  p.cost.bytes_per_pixel = 64;  // cheap: whole planes, large batches
  return p;
}

// Interpolation only (ops' upsample + conversion): the floor.
void BM_ReconstructInterp(benchmark::State& state) { run(state, params(), nullptr); }
BENCHMARK(BM_ReconstructInterp)->Unit(benchmark::kMillisecond)->UseRealTime();

// Identity network, whole planes: slicing, upsampling per plane group, fusion.
void BM_ReconstructIdentityWhole(benchmark::State& state) {
  run(state, params(), [](const at::Tensor& x) { return x; });
}
BENCHMARK(BM_ReconstructIdentityWhole)->Unit(benchmark::kMillisecond)->UseRealTime();

// Identity network in 64 px tiles with 16 px overlap: adds cropping and blending.
void BM_ReconstructIdentityTiled(benchmark::State& state) {
  ReconstructParams p = params();
  p.tile = state.range(0);
  p.overlap = 16;
  p.batch = 16;
  run(state, p, [](const at::Tensor& x) { return x; });
}
BENCHMARK(BM_ReconstructIdentityTiled)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();

// A 3x3 convolution as a stand-in for a very small network.
void BM_ReconstructConv3x3(benchmark::State& state) {
  at::manual_seed(1);
  const at::Tensor w = at::randn({1, 1, 3, 3});
  run(state, params(), [w](const at::Tensor& x) { return at::conv2d(x, w, {}, 1, 1); });
}
BENCHMARK(BM_ReconstructConv3x3)->Unit(benchmark::kMillisecond)->UseRealTime();

double max_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024.0;
}

// Marginal peak memory per pixel of a SwinIR forward: high-water mark after a T2 x T2
// forward minus after a T1 x T1 one, over the pixel difference. Args: embed_dim, depth
// per stage (3 stages, 6 heads, window 8, mlp 2).
void BM_SwinMemory(benchmark::State& state) {
  set_threads(0);
  SwinConfig c;
  c.embed_dim = state.range(0);
  c.depths = {state.range(1), state.range(1), state.range(1)};
  c.num_heads = {6, 6, 6};
  SwinIR net(c);
  net->eval();
  c10::InferenceMode guard;
  const int64_t t1 = 128, t2 = 256;
  double bpp = 0;
  for (auto _ : state) {
    net->forward(at::rand({1, 1, 32, 32}));  // warm-up: weights, masks, allocator
    net->forward(at::rand({1, 1, t1, t1}));
    const double r1 = max_rss_bytes();
    net->forward(at::rand({1, 1, t2, t2}));
    const double r2 = max_rss_bytes();
    bpp = (r2 - r1) / double(t2 * t2 - t1 * t1);
  }
  state.counters["measured_B/px"] = bpp;
  state.counters["estimate_B/px"] = swin_cost(c.embed_dim, 6, 8, 2.0).bytes_per_pixel;
}
BENCHMARK(BM_SwinMemory)->Args({60, 2})->Args({90, 6})->Args({180, 6})->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
