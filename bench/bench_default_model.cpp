// CPU cost of the shipped default backbone: one 256x256 slice forward (the budget is
// 0.4 s on 2 cores), and one pretraining step (batch 8, 64x64 crops, forward + backward).
#include <benchmark/benchmark.h>

#include <torch/torch.h>

#include "isoprompt/model.h"
#include "isoprompt/pretrain.h"
#include "isoprompt/runtime.h"

namespace {

isoprompt::SwinConfig config_for(int64_t which) {
  if (which == 0) return isoprompt::default_backbone_config();
  return isoprompt::SwinConfig{};  // UniFMIR's isotropic model, for comparison
}

void BM_Forward256(benchmark::State& state) {
  isoprompt::set_threads(static_cast<int>(state.range(1)));
  const auto cfg = config_for(state.range(0));
  isoprompt::SwinIR net(cfg);
  net->eval();
  torch::InferenceMode guard;
  const at::Tensor x = at::rand({1, 1, 256, 256});
  net->forward(x);  // warm-up (masks, allocator)
  for (auto _ : state) benchmark::DoNotOptimize(net->forward(x).data_ptr());
  state.counters["GFLOP"] = cfg.gflops(256, 256);
  state.SetLabel(state.range(0) == 0 ? "default" : "unifmir");
}
BENCHMARK(BM_Forward256)->Args({0, 1})->Args({0, 2})->Args({1, 2})->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_PretrainStep(benchmark::State& state) {
  isoprompt::set_threads(static_cast<int>(state.range(0)));
  isoprompt::SwinIR net(isoprompt::default_backbone_config());
  const at::Tensor x = at::rand({8, 1, 64, 64}), y = at::rand({8, 1, 64, 64});
  for (auto _ : state) {
    for (auto& p : net->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor loss = (net->forward(x) - y).abs().mean();
    loss.backward();
    benchmark::DoNotOptimize(loss.item<float>());
  }
}
BENCHMARK(BM_PretrainStep)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
