// Plane-wise volume I/O: read and write z planes of a volume in bounded memory, for
// volumes that do not fit in RAM (the streaming restore, pipeline.h).
//
//   PlaneReader in("huge.tif");                      // TIFF, OME-Zarr or file.h5:/dataset
//   for (int64_t z0 = 0; z0 < in.shape().z; z0 += 16) {
//     Volume planes = in.read_planes(z0, std::min<int64_t>(16, in.shape().z - z0));
//     ...
//   }
//   PlaneWriter out("out.tif", shape, DType::U16, voxel, "micron", wo);
//   out.write_planes(planes);                         // the next planes, in z order
//   out.commit();                                     // renames the finished file into place
//
// read_volume() and write_volume() are these readers and writers run over the whole
// volume, so a file read or written plane-wise is exactly what the whole-volume calls give
// (same voxels, same metadata, same bytes on disk).
//
// Reading holds one page (TIFF), one hyperslab (HDF5) or the chunks the planes touch
// (Zarr) at a time. NanPolicy::Refuse and Keep apply to the planes read (Refuse names the
// first non-finite voxel's z, y, x in the whole volume); Replace needs each plane's two
// neighbours and is applied with them (the same values as replace_non_finite on the whole
// volume).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "isoprompt/io.h"
#include "isoprompt/volume.h"

namespace isoprompt {

class PlaneReader {
 public:
  // Opens `path` and reads its metadata only. Throws InputError naming the file, as
  // read_volume would for the same file.
  explicit PlaneReader(const std::string& path, const ReadOptions& opts = {});
  ~PlaneReader();
  PlaneReader(const PlaneReader&) = delete;
  PlaneReader& operator=(const PlaneReader&) = delete;

  Shape3 shape() const;
  DType dtype() const;
  VoxelSize voxel_size() const;
  const std::string& unit() const;
  // What read_volume's TiffFileInfo would say (nan/inf counts only for planes read so far).
  const TiffFileInfo& info() const;

  // Planes [z0, z0 + n) as an n x ny x nx volume with the file's voxel size and unit.
  // Throws InputError for planes outside the volume or a corrupt page/chunk.
  Volume read_planes(int64_t z0, int64_t n);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class PlaneWriter {
 public:
  // Creates the temporary output next to `path` (TIFF / OME-TIFF, OME-Zarr or HDF5, chosen
  // by the path as write_volume chooses) for a volume of `shape`. Throws InputError for a
  // path that cannot be written.
  PlaneWriter(const std::string& path, Shape3 shape, DType dtype, VoxelSize voxel,
              const std::string& unit, const WriteOptions& opts = {});
  ~PlaneWriter();  // removes the temporary output unless commit() ran
  PlaneWriter(const PlaneWriter&) = delete;
  PlaneWriter& operator=(const PlaneWriter&) = delete;

  // The next planes in z order (any count >= 1; their total must reach shape().z).
  // `planes` has the writer's ny, nx and dtype.
  void write_planes(const Volume& planes);
  int64_t planes_written() const;
  // Throws Error unless every plane was written; then renames the output into place.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace isoprompt
