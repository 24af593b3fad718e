// TIFF read/write throughput: a 64x512x512 uint16 stack (32 MiB), uncompressed and
// deflate, plus the real fib25 stack from ../shared when present.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "isoprompt/io.h"
#include "isoprompt/log.h"

using namespace isoprompt;
namespace fs = std::filesystem;

namespace {

Volume bench_volume() {
  Volume v({64, 512, 512}, DType::U16, {0.5, 0.1, 0.1});
  uint16_t* d = v.data<uint16_t>();
  for (int64_t i = 0; i < v.numel(); ++i) d[i] = static_cast<uint16_t>(100 + (i * 7919 % 997) + (i / 512 % 50));
  return v;
}

std::string temp_file(const char* name) { return (fs::temp_directory_path() / name).string(); }

void BM_Write(benchmark::State& state) {
  set_log_level(LogLevel::Warn);
  const Volume v = bench_volume();
  WriteOptions wo;
  wo.compression = static_cast<WriteOptions::Compression>(state.range(0));
  const std::string path = temp_file("isoprompt_bench_w.tif");
  for (auto _ : state) write_volume(path, v, wo);
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(v.size_bytes()));
  std::remove(path.c_str());
}
BENCHMARK(BM_Write)->Arg(WriteOptions::None)->Arg(WriteOptions::Deflate)->Arg(WriteOptions::LZW)->Unit(benchmark::kMillisecond);

void BM_Read(benchmark::State& state) {
  set_log_level(LogLevel::Warn);
  const Volume v = bench_volume();
  WriteOptions wo;
  wo.compression = static_cast<WriteOptions::Compression>(state.range(0));
  const std::string path = temp_file("isoprompt_bench_r.tif");
  write_volume(path, v, wo);
  for (auto _ : state) benchmark::DoNotOptimize(read_volume(path).raw());
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(v.size_bytes()));
  std::remove(path.c_str());
}
BENCHMARK(BM_Read)->Arg(WriteOptions::None)->Arg(WriteOptions::Deflate)->Arg(WriteOptions::LZW)->Unit(benchmark::kMillisecond);

void BM_ReadFib25(benchmark::State& state) {
  const std::string path = std::string(ISO_SHARED_DIR) + "/data/fib25_sample1_8nm.tif";
  if (!fs::exists(path)) {
    state.SkipWithError("../shared/data/fib25_sample1_8nm.tif is not available");
    return;
  }
  int64_t bytes = 0;
  for (auto _ : state) bytes += int64_t(read_volume(path).size_bytes());
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_ReadFib25)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
