// Phantom generation speed: 128^3 of each kind (the demo and pretraining generate many).
#include <benchmark/benchmark.h>

#include "isoprompt/phantom.h"
#include "isoprompt/runtime.h"

namespace {

void BM_Phantom128(benchmark::State& state) {
  isoprompt::set_threads(2);
  isoprompt::PhantomParams p;
  p.kind = isoprompt::all_phantom_kinds()[static_cast<size_t>(state.range(0))];
  state.SetLabel(isoprompt::phantom_kind_name(p.kind));
  for (auto _ : state) {
    auto v = isoprompt::make_phantom(p);
    benchmark::DoNotOptimize(v.raw());
    ++p.seed;
  }
}
BENCHMARK(BM_Phantom128)->DenseRange(0, 5)->Unit(benchmark::kMillisecond)->Iterations(2);

void BM_Optics128(benchmark::State& state) {
  isoprompt::set_threads(2);
  const auto gt = isoprompt::make_phantom({});
  isoprompt::OpticsParams o;
  o.psf_lateral_fwhm_um = 0.25;
  o.psf_axial_fwhm_um = 0.8;
  o.poisson_peak = 100;
  o.z_factor = 4;
  for (auto _ : state) benchmark::DoNotOptimize(isoprompt::apply_optics(gt, o).raw());
}
BENCHMARK(BM_Optics128)->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace

BENCHMARK_MAIN();
