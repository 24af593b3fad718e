// CPU cost of the shipped default backbone: one 256x256 slice forward (the budget is
// 0.4 s on 2 cores), and one pretraining step (batch 8, 64x64 crops, forward + backward).
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "isoprompt/model.h"
#include "isoprompt/pretrain.h"
#include "isoprompt/runtime.h"

namespace {

// 0: the shipped default; 1: UniFMIR's isotropic model, for comparison; 2..: the candidates
// the default's width was chosen from (models/README.md).
isoprompt::SwinConfig config_for(int64_t which) {
  if (which == 0) return isoprompt::default_backbone_config();
  if (which == 1) return isoprompt::SwinConfig{};
  isoprompt::SwinConfig c = isoprompt::default_backbone_config();
  struct Candidate {
    int64_t embed;
    std::vector<int64_t> depths;
  };
  static const Candidate candidates[] = {{32, {2, 2, 2}}, {32, {2, 2, 2, 2}}, {40, {2, 2, 2}},
                                         {48, {2, 2, 2}}, {40, {2, 2, 2, 2}}, {48, {2, 2, 2, 2}}};
  const Candidate& k = candidates[size_t(which - 2) % (sizeof(candidates) / sizeof(candidates[0]))];
  c.embed_dim = k.embed;
  c.num_feat = k.embed;
  c.depths = k.depths;
  c.num_heads.assign(k.depths.size(), k.embed / 8);  // head dimension 8, as the default's
  return c;
}

std::string label_for(int64_t which) {
  const isoprompt::SwinConfig c = config_for(which);
  return fmt::format("{} embed {} depths {} ({} params)",
                     which == 0   ? "default"
                     : which == 1 ? "unifmir"
                                  : "candidate",
                     c.embed_dim, c.depths.size(), c.parameter_count());
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
  state.SetLabel(label_for(state.range(0)));
}
BENCHMARK(BM_Forward256)
    ->Args({0, 1})
    ->Args({0, 2})
    ->Args({1, 2})
    ->ArgsProduct({{2, 3, 4, 5, 6, 7}, {2}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

void BM_PretrainStep(benchmark::State& state) {
  isoprompt::set_threads(static_cast<int>(state.range(0)));
  isoprompt::SwinIR net(config_for(state.range(1)));
  state.SetLabel(label_for(state.range(1)));
  const at::Tensor x = at::rand({8, 1, 64, 64}), y = at::rand({8, 1, 64, 64});
  for (auto _ : state) {
    for (auto& p : net->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor loss = (net->forward(x) - y).abs().mean();
    loss.backward();
    benchmark::DoNotOptimize(loss.item<float>());
  }
}
BENCHMARK(BM_PretrainStep)
    ->Args({1, 0})
    ->Args({2, 0})
    ->ArgsProduct({{1}, {2, 3, 4, 5, 6, 7}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
