// Training-step time of prompt tuning with and without the feature cache, and of a full
// fine-tuning step, for a tiny, a small and the UniFMIR-size backbone (random weights).
// Batch 8, 96×96 crops. Run: build/bench/bench_tune [--benchmark_filter=...]
// Threads: ISO_BENCH_THREADS (default 2).
#include <benchmark/benchmark.h>

#include <cstdlib>

#include <torch/torch.h>

#include "isoprompt/runtime.h"
#include "isoprompt/train.h"

using namespace isoprompt;

namespace {

SwinConfig config_for(int64_t which) {
  SwinConfig c;  // 2 = UniFMIR: embed 90, depths 6,6,6
  if (which == 0) {
    c.embed_dim = 12, c.depths = {2}, c.num_heads = {2}, c.num_feat = 16;
  } else if (which == 1) {
    c.embed_dim = 48, c.depths = {4, 4}, c.num_heads = {4, 4};
  }
  return c;
}
const char* config_name(int64_t which) { return which == 0 ? "tiny" : which == 1 ? "small" : "unifmir"; }

struct Setup {
  Backbone bb;
  PromptedModel model;
  at::Tensor x, target, feats;
  explicit Setup(int64_t which, bool full) {
    const char* t = std::getenv("ISO_BENCH_THREADS");
    set_threads(t ? std::atoi(t) : 2);
    torch::manual_seed(0);
    const SwinConfig c = config_for(which);
    bb.net = SwinIR(c);
    bb.net->eval();
    bb.config = c;
    bb.hash = backbone_hash(bb.net);
    model = PromptedModel(bb, PromptConfig{}, !full);
    for (auto& p : bb.net->parameters()) p.requires_grad_(full);
    x = torch::rand({8, 1, 96, 96});
    target = torch::rand({8, 1, 96, 96});
    torch::NoGradGuard g;
    feats = bb.net->features(x);
  }
};

void report(benchmark::State& st, int64_t which, const Setup& s) {
  st.counters["trainable"] =
      static_cast<double>(s.model.has_prompts() ? s.model.prompt_parameter_count()
                                                : s.bb.config.parameter_count());
  st.counters["backbone"] = static_cast<double>(s.bb.config.parameter_count());
  st.SetLabel(config_name(which));
}

// Prompt step on cached features: module + tail + loss + backward + Adam.
void BM_PromptStepCached(benchmark::State& st) {
  Setup s(st.range(0), false);
  torch::optim::Adam opt(s.model.prompt_parameters(), torch::optim::AdamOptions(1e-3));
  for (auto _ : st) {
    const at::Tensor loss = restoration_loss(s.model.tail(s.feats, 96, 96), s.target);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  report(st, st.range(0), s);
}

// Prompt step without the cache: the frozen features are recomputed every step.
void BM_PromptStepUncached(benchmark::State& st) {
  Setup s(st.range(0), false);
  torch::optim::Adam opt(s.model.prompt_parameters(), torch::optim::AdamOptions(1e-3));
  for (auto _ : st) {
    at::Tensor f;
    {
      torch::NoGradGuard g;
      f = s.model.features(s.x);
    }
    const at::Tensor loss = restoration_loss(s.model.tail(f, 96, 96), s.target);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  report(st, st.range(0), s);
}

// Full fine-tuning step: every backbone weight trains (the --mode full baseline).
void BM_FullStep(benchmark::State& st) {
  Setup s(st.range(0), true);
  torch::optim::Adam opt(s.bb.net->parameters(), torch::optim::AdamOptions(1e-3));
  for (auto _ : st) {
    const at::Tensor loss = restoration_loss(s.bb.net->forward(s.x), s.target);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  report(st, st.range(0), s);
}

}  // namespace

BENCHMARK(BM_PromptStepCached)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_PromptStepUncached)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_FullStep)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_MAIN();
