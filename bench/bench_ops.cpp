// Resampling and percentile throughput on 512^3-voxel uint16 volumes (256 MiB in).
// Run: cmake --build build --target bench_ops && build/bench/bench_ops
// (the machine is shared: use the medians of --benchmark_repetitions).
#include <benchmark/benchmark.h>

#include <cstdint>

#include "isoprompt/ops.h"
#include "isoprompt/stats.h"

using namespace isoprompt;

namespace {

const Volume& volume_u16(Shape3 s) {
  static std::vector<std::pair<Shape3, Volume>> cache;
  for (auto& c : cache)
    if (c.first == s) return c.second;
  Volume v(s, DType::U16);
  uint16_t* d = v.data<uint16_t>();
  uint32_t st = 12345;
  for (int64_t i = 0; i < v.numel(); ++i) {
    st = st * 1664525u + 1013904223u;
    d[i] = uint16_t(st >> 16);
  }
  cache.emplace_back(s, v);
  return cache.back().second;
}

void BM_DownsampleZ4(benchmark::State& st) {
  const Volume& v = volume_u16({512, 512, 512});
  for (auto _ : st) benchmark::DoNotOptimize(downsample(v, 0, 4.0));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(v.size_bytes()));
}
void BM_DownsampleX4(benchmark::State& st) {
  const Volume& v = volume_u16({512, 512, 512});
  for (auto _ : st) benchmark::DoNotOptimize(downsample(v, 2, 4.0));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(v.size_bytes()));
}
void BM_DownsampleZ443(benchmark::State& st) {
  const Volume& v = volume_u16({512, 512, 512});
  for (auto _ : st) benchmark::DoNotOptimize(downsample(v, 0, 4.43));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(v.size_bytes()));
}
void BM_UpsampleKeysZ4(benchmark::State& st) {  // 128x512x512 -> 512^3 float32
  const Volume& v = volume_u16({128, 512, 512});
  for (auto _ : st) benchmark::DoNotOptimize(upsample(v, 0, 4.0, Interp::Keys));
  st.SetItemsProcessed(int64_t(st.iterations()) * 512 * 512 * 512);
}
void BM_UpsampleKeysX4(benchmark::State& st) {  // 512x512x128 -> 512^3 float32
  const Volume& v = volume_u16({512, 512, 128});
  for (auto _ : st) benchmark::DoNotOptimize(upsample(v, 2, 4.0, Interp::Keys));
  st.SetItemsProcessed(int64_t(st.iterations()) * 512 * 512 * 512);
}
void BM_UpsampleBSplineZ4(benchmark::State& st) {
  const Volume& v = volume_u16({128, 512, 512});
  for (auto _ : st) benchmark::DoNotOptimize(upsample(v, 0, 4.0, Interp::BSpline3));
  st.SetItemsProcessed(int64_t(st.iterations()) * 512 * 512 * 512);
}
void BM_Percentiles(benchmark::State& st) {
  const Volume& v = volume_u16({512, 512, 512});
  for (auto _ : st) benchmark::DoNotOptimize(percentiles(v, {1.0, 99.8}));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(v.size_bytes()));
}
void BM_NormalizeU16(benchmark::State& st) {
  const Volume& v = volume_u16({512, 512, 512});
  const Normalizer n{100, 60000};
  for (auto _ : st) benchmark::DoNotOptimize(normalize(v, n));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(v.size_bytes()));
}

}  // namespace

#define ISO_BENCH(f) BENCHMARK(f)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5)
ISO_BENCH(BM_DownsampleZ4);
ISO_BENCH(BM_DownsampleX4);
ISO_BENCH(BM_DownsampleZ443);
ISO_BENCH(BM_UpsampleKeysZ4);
ISO_BENCH(BM_UpsampleKeysX4);
ISO_BENCH(BM_UpsampleBSplineZ4);
ISO_BENCH(BM_Percentiles);
ISO_BENCH(BM_NormalizeU16);

BENCHMARK_MAIN();
