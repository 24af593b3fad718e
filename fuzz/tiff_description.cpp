// libFuzzer target: the ImageJ, OME-XML and tifffile description parsers and the plane-to-
// page layout planned from them (io::plan_layout), on strings, without a file. Input: 2
// bytes page count, 2 bytes contiguous capacity, then the description.
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_common.h"
#include "io/layout.h"
#include "isoprompt/error.h"

using namespace isoprompt;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const int64_t n_pages = 1 + (data[0] | data[1] << 8) % 4096;
  const int64_t contiguous_max = (data[2] | data[3] << 8) % 4096;
  const std::string desc(reinterpret_cast<const char*>(data) + 4, size - 4);
  std::unique_ptr<io::ImageJMeta> ij;
  std::unique_ptr<io::OmeMeta> ome;
  try {
    const io::Layout lay = io::plan_layout(desc, n_pages, contiguous_max, "fuzz.tif", ij, ome);
    // What read_volume indexes with (see layout.h).
    FUZZ_CHECK(lay.nz >= 1 && lay.nc >= 1 && lay.nt >= 1);
    FUZZ_CHECK(!lay.contiguous || n_pages == 1);
    if (!lay.contiguous || !lay.ifd.empty()) {
      FUZZ_CHECK(static_cast<int64_t>(lay.ifd.size()) == lay.images());
      const int64_t limit = lay.contiguous ? lay.images() : n_pages;
      FUZZ_CHECK(!lay.contiguous || lay.images() <= contiguous_max);
      for (const int64_t p : lay.ifd) FUZZ_CHECK(p >= 0 && p < limit);
    }
  } catch (const InputError&) {
  }
  return 0;
}
