// libFuzzer target: read_volume on a whole TIFF file (libtiff's directory parsing, our page
// checks, the layout, calibration and decoding). read_volume takes a path, so each input
// is written to one temporary file (in /dev/shm when there is one: no disk I/O).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "fuzz_common.h"
#include "isoprompt/error.h"
#include "isoprompt/io.h"

using namespace isoprompt;

namespace {

std::string g_path;

void remove_file() {
  std::remove(g_path.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  const std::filesystem::path dir = std::filesystem::is_directory("/dev/shm")
                                        ? "/dev/shm"
                                        : std::filesystem::temp_directory_path();
  g_path = (dir / ("isoprompt-fuzz-" + std::to_string(getpid()) + ".tif")).string();
  std::atexit(remove_file);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::FILE* f = std::fopen(g_path.c_str(), "wb");
    if (!f) std::abort();
    if (size && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
  }
  ReadOptions opts;
  opts.channel = 0;  // channel and time 0 exist in every hyperstack: read on past select_index
  opts.time = 0;
  opts.allow_2d = true;
  opts.nan = NanPolicy::Replace;
  try {
    TiffFileInfo info;
    const Volume v = read_volume(g_path, opts, &info);
    FUZZ_CHECK(v.nz() >= 1 && v.ny() >= 1 && v.nx() >= 1);
    FUZZ_CHECK(info.nan_count >= 0 && info.inf_count >= 0);
  } catch (const InputError&) {
  }
  return 0;
}
