// libFuzzer target: the OME-Zarr metadata readers (io::parse_zarray, io::parse_zarr_layout:
// .zarray and the NGFF multiscales of .zattrs) and the chunk decoders (io::decode_zarr_chunk:
// blosc, zstd, zlib/gzip, none; byte swapping) on strings, without files. Input: 2 bytes
// .zarray length, 2 bytes .zattrs length, the .zarray text, the .zattrs text, then the
// bytes of one stored chunk (decoded when the array's chunks are at most 64 KiB).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "isoprompt/error.h"
#include "isoprompt/zarr.h"

using namespace isoprompt;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const size_t n_zarray = std::min<size_t>(data[0] | data[1] << 8, size - 4);
  const size_t n_zattrs = std::min<size_t>(data[2] | data[3] << 8, size - 4 - n_zarray);
  const char* text = reinterpret_cast<const char*>(data) + 4;
  const std::string zarray(text, n_zarray), zattrs(text + n_zarray, n_zattrs);
  const uint8_t* chunk = data + 4 + n_zarray + n_zattrs;
  const size_t n_chunk = size - 4 - n_zarray - n_zattrs;
  try {
    const io::ZarrLayout lay =
        io::parse_zarr_layout(zarray, "fuzz/0/.zarray", zattrs, "fuzz/.zattrs", "0");
    const io::ZarrArrayMeta& m = lay.array;
    // What ZarrReader indexes with.
    const size_t ndim = m.shape.size();
    FUZZ_CHECK(ndim >= 1 && m.chunks.size() == ndim && m.grid.size() == ndim);
    int64_t elems = 1;
    for (size_t d = 0; d < ndim; ++d) {
      FUZZ_CHECK(m.shape[d] >= 1 && m.chunks[d] >= 1 && m.grid[d] >= 1);
      FUZZ_CHECK((m.grid[d] - 1) * m.chunks[d] < m.shape[d] &&
                 m.shape[d] / m.chunks[d] <= m.grid[d]);
      elems *= m.chunks[d];
    }
    FUZZ_CHECK(elems == m.chunk_elements && m.chunk_bytes == elems * int64_t(dtype_size(m.dtype)));
    FUZZ_CHECK(m.chunk_bytes <= (int64_t(1) << 30));
    const int axes[5] = {lay.axis_t, lay.axis_c, lay.axis_z, lay.axis_y, lay.axis_x};
    FUZZ_CHECK(lay.axis_y >= 0 && lay.axis_x >= 0);
    for (int i = 0; i < 5; ++i) {
      FUZZ_CHECK(axes[i] >= -1 && axes[i] < static_cast<int>(ndim));
      for (int j = 0; j < i; ++j) FUZZ_CHECK(axes[i] < 0 || axes[i] != axes[j]);
    }
    const VoxelSize& v = lay.voxel;
    FUZZ_CHECK(v.z > 0 && v.y > 0 && v.x > 0 && std::isfinite(v.z) && std::isfinite(v.y) &&
               std::isfinite(v.x));
    if (m.chunk_bytes <= 65536) {
      std::vector<uint8_t> out(static_cast<size_t>(m.chunk_bytes));
      io::decode_zarr_chunk(m, chunk, n_chunk, out.data(), "fuzz/0/0.0.0");
    }
  } catch (const InputError&) {
  }
  return 0;
}
