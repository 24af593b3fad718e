// Training-step speed of the fused CPU kernels against autograd through ATen ops, side by side:
// every iteration runs one step with the fused kernels and one with SwinIR::set_fused_kernels
// (false), alternating, so that both see the same machine load. Counters (per step, means over
// the iterations): autograd_ms / fused_ms (wall), autograd_cpu_ms / fused_cpu_ms (process CPU
// time, all threads), speedup = autograd_ms / fused_ms, speedup_cpu likewise.
//   BM_PretrainStep/threads/config: a pretraining step (batch 8 x 64^2, L1 loss, backward).
//   BM_FullStep/threads/config: a `tune --mode full` step (batch 8 x 96^2, restoration_loss,
//     backward, Adam on every backbone weight).
// config 0: the shipped default backbone; 1: embed 48, depths 2-2-2, heads 6, num_feat 48.
// Run: build/bench/bench_train_step --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <ctime>
#include <functional>
#include <set>
#include <string>

#include "isoprompt/loss.h"
#include "isoprompt/model.h"
#include "isoprompt/pretrain.h"
#include "isoprompt/runtime.h"

namespace {

isoprompt::SwinConfig config_for(int64_t which) {
  isoprompt::SwinConfig c = isoprompt::default_backbone_config();
  if (which == 1) {
    c.embed_dim = 48;
    c.num_feat = 48;
    c.depths = {2, 2, 2};
    c.num_heads = {6, 6, 6};
  }
  return c;
}

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Times `step` with the fused kernels on and off, alternating, and reports the counters.
void side_by_side(benchmark::State& state, const char* kind, isoprompt::SwinIR& net,
                  const std::function<void()>& step) {
  // Warm-up (masks, allocator, first touch of buffers), once per benchmark, not per repetition.
  static std::set<std::string> warmed;
  if (warmed.insert(fmt::format("{}/{}/{}", kind, state.range(0), state.range(1))).second)
    for (bool fused : {true, false}) {
      net->set_fused_kernels(fused);
      step();
    }
  double wall[2] = {0, 0}, cpu[2] = {0, 0};
  for (auto _ : state) {
    for (int fused = 1; fused >= 0; --fused) {
      net->set_fused_kernels(fused != 0);
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = cpu_seconds();
      step();
      cpu[fused] += cpu_seconds() - c0;
      wall[fused] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  const double n = double(state.iterations());
  state.counters["fused_ms"] = 1e3 * wall[1] / n;
  state.counters["autograd_ms"] = 1e3 * wall[0] / n;
  state.counters["fused_cpu_ms"] = 1e3 * cpu[1] / n;
  state.counters["autograd_cpu_ms"] = 1e3 * cpu[0] / n;
  state.counters["speedup"] = wall[0] / wall[1];
  state.counters["speedup_cpu"] = cpu[0] / cpu[1];
  const isoprompt::SwinConfig c = net->config();
  state.SetLabel(fmt::format("{} embed {} heads {}", state.range(1) == 0 ? "default" : "next",
                             c.embed_dim, c.num_heads[0]));
}

void BM_PretrainStep(benchmark::State& state) {
  isoprompt::set_threads(static_cast<int>(state.range(0)));
  torch::manual_seed(0);
  isoprompt::SwinIR net(config_for(state.range(1)));
  net->train();
  const at::Tensor x = at::rand({8, 1, 64, 64}), y = at::rand({8, 1, 64, 64});
  side_by_side(state, "pretrain", net, [&] {
    for (auto& p : net->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor loss = (net->forward(x) - y).abs().mean();
    loss.backward();
    benchmark::DoNotOptimize(loss.item<float>());
  });
}

void BM_FullStep(benchmark::State& state) {
  isoprompt::set_threads(static_cast<int>(state.range(0)));
  torch::manual_seed(0);
  isoprompt::SwinIR net(config_for(state.range(1)));
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-4));
  const at::Tensor x = at::rand({8, 1, 96, 96}), y = at::rand({8, 1, 96, 96});
  side_by_side(state, "full", net, [&] {
    const at::Tensor loss = isoprompt::restoration_loss(net->forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.item<float>());
  });
}

}  // namespace

BENCHMARK(BM_PretrainStep)
    ->ArgsProduct({{1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0)
    ->UseRealTime();
BENCHMARK(BM_FullStep)
    ->ArgsProduct({{1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0)
    ->UseRealTime();

BENCHMARK_MAIN();
