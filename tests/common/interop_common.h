// Writing isoprompt outputs for the real clients and telling them what to expect.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "isoprompt/io.h"
#include "isoprompt/volume.h"

namespace isoprompt::test {

// Deterministic content over the dtype's range. Floats are multiples of 1/8 in
// [-4096, 4096), so ImageJ's double sums of them (times 8) are exact integers.
inline Volume interop_volume(DType t, Shape3 s, bool calibrated) {
  Volume v(s, t, {0.15, 0.033855, 0.0338542}, "micron");
  if (!calibrated) {
    v.set_voxel_size({1, 1, 1});
    v.set_unit("pixel");
  }
  for (int64_t i = 0; i < v.numel(); ++i) {
    const uint32_t h = static_cast<uint32_t>(i + 1) * 2654435761u;
    switch (t) {
      case DType::U8:
        static_cast<uint8_t*>(v.raw())[i] = static_cast<uint8_t>(h >> 24);
        break;
      case DType::U16:
        static_cast<uint16_t*>(v.raw())[i] = static_cast<uint16_t>(h >> 16);
        break;
      case DType::F32:
        static_cast<float*>(v.raw())[i] = (float(h >> 16) - 32768.0f) / 8.0f;
        break;
    }
  }
  return v;
}

// One written file and how it was written.
struct Variant {
  std::string path, raw;  // the TIFF, and the volume's bytes as written by the test itself
  DType dtype = DType::U8;
  Shape3 shape;
  WriteOptions opts;
  bool calibrated = true;
  VoxelSize voxel;
  bool ome() const { return opts.flavor == WriteOptions::OME; }
};

inline void write_raw_bytes(const std::string& path, const Volume& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(v.raw()), static_cast<std::streamsize>(v.size_bytes()));
}

inline const char* numpy_dtype(DType t) {
  return t == DType::U8 ? "uint8" : t == DType::U16 ? "uint16" : "float32";
}

// The manifest line tifffile_check.py reads.
inline std::string manifest_line(const Variant& v, const std::string& layout,
                                 const std::string& planes = "all") {
  char buf[1024];
  std::snprintf(
      buf, sizeof buf, "%s\t%s\t%s\t%lld\t%lld\t%lld\t%s\t%d\t%.17g\t%.17g\t%.17g\t%s\t%s\t%s\n",
      v.path.c_str(), v.raw.c_str(), numpy_dtype(v.dtype), static_cast<long long>(v.shape.z),
      static_cast<long long>(v.shape.y), static_cast<long long>(v.shape.x),
      v.ome() ? "ome" : "imagej", v.calibrated ? 1 : 0, v.voxel.z, v.voxel.y, v.voxel.x,
      v.opts.force_bigtiff ? "bigtiff" : "classic", layout.c_str(), planes.c_str());
  return buf;
}

}  // namespace isoprompt::test
