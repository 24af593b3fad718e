// SwinIR backbone inference speed: seconds per 256×256 slice and achieved GFLOP/s.
//   cmake --build build --target bench_model && ./build/bench/bench_model
// Reference (UNIFMIR.md §4): PyTorch 1.13 + OpenBLAS on this 2-core machine takes a median
// 8.4 s per 256×256 slice for the real configuration (221.8 GFLOP, ~26 GFLOP/s).
// Counters are per real (wall) second; on a shared machine compare the CPU column of the
// threads:1 run instead.
#include <benchmark/benchmark.h>
#include <torch/nn/module.h>

#include "isoprompt/model.h"
#include "isoprompt/runtime.h"

namespace {

using isoprompt::SwinConfig;

SwinConfig config_for(int64_t id) {
  SwinConfig c;  // 0: UniFMIR isotropic (embed 90, depths/heads 6-6-6)
  if (id == 1) {  // small: the project's light default
    c.embed_dim = 48;
    c.depths = {4, 4};
    c.num_heads = {4, 4};
  }
  return c;
}

void BM_SwinIR(benchmark::State& state) {
  isoprompt::set_threads(int(state.range(2)));  // 0 = all cores
  const SwinConfig cfg = config_for(state.range(0));
  const int64_t batch = state.range(1), side = 256;
  isoprompt::SwinIR net(cfg);  // random weights: speed does not depend on them
  net->eval();
  net->set_fused_kernels(state.range(3) != 0);
  torch::NoGradGuard ng;
  const at::Tensor x = at::rand({batch, 1, side, side});
  net->forward(x);  // warm-up (allocator, oneDNN primitives)
  for (auto _ : state) benchmark::DoNotOptimize(net->forward(x));
  const double slices = double(batch) * double(state.iterations());
  state.counters["s_per_slice"] = benchmark::Counter(slices, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["GFLOP/s"] = benchmark::Counter(slices * cfg.gflops(side, side), benchmark::Counter::kIsRate);
  std::string label = cfg.embed_dim == 90 ? "UniFMIR iso (90, 6-6-6)" : "small (48, 4-4)";
  if (state.range(3) && !isoprompt::SwinIRImpl::fused_kernels_available()) label += ", fused kernels not built in";
  state.SetLabel(label);
}

BENCHMARK(BM_SwinIR)
    ->ArgNames({"config", "batch", "threads", "fused"})
    ->Args({0, 1, 0, 1})
    ->Args({0, 4, 0, 1})
    ->Args({1, 1, 0, 1})
    ->Args({1, 4, 0, 1})
    // One thread: the main thread's CPU time is then the whole cost, which stays meaningful
    // when other processes share the machine (real time does not). fused:0 = plain ATen ops.
    ->Args({0, 1, 1, 1})
    ->Args({0, 1, 1, 0})
    ->Args({0, 1, 0, 0})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true);

}  // namespace

BENCHMARK_MAIN();
