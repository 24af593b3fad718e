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
// (Zarr) at a time, besides the planes returned; opening reads the metadata only (a TIFF's
// every IFD is validated then, as read_volume does). The plane reader makes every check
// read_volume makes except that the volume fits in memory, which is its purpose.
//
// NaN/Inf voxels of a float32 volume, by ReadOptions::nan: Keep warns once per reader;
// Refuse throws InputError naming the first non-finite voxel's z, y, x in the whole
// volume; Replace reads the planes z0 - 1 and z0 + n too, so each voxel gets the median
// of its finite 3x3x3 neighbours exactly as replace_non_finite on the whole volume gives.
// A non-finite voxel with no finite neighbour gets the median of all finite voxels of the
// volume there, which planes cannot give: read_planes then throws InputError ("--nan
// replace needs the whole volume in memory here"), unless the planes are the whole volume.
//
// Writing holds one plane (TIFF, HDF5 contiguous) or one chunk slab (OME-Zarr: the
// writer's chunk depth; HDF5 deflate: 32 planes), buffered until it is complete. A float
// ImageJ TIFF's display range (min/max in its description) is found over the planes and
// written at commit() into a description field reserved for it in IFD 0: the file then
// differs from write_volume's (which knows the range up front) by that field's padding (a
// last line of spaces, which readers skip) and the offsets it moves; every other file is
// byte for byte write_volume's (HDF5: up to its timestamps).
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
  // What read_volume's TiffFileInfo would say; nan/inf counts are those of the planes read
  // so far (counted at each read_planes, so planes read twice count twice).
  const TiffFileInfo& info() const;

  // Planes [z0, z0 + n) as an n x ny x nx volume with the file's voxel size and unit, with
  // the NaN policy applied (see the top). Throws InputError for planes outside the volume
  // (n < 1 included) or a corrupt page/chunk.
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
  // `planes` has the writer's ny, nx and dtype, else Error; so are planes past shape().z.
  // After a failed write (disk full) the writer only refuses, and leaves no file.
  void write_planes(const Volume& planes);
  int64_t planes_written() const;
  // Throws Error unless every plane was written; then renames the output into place.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace isoprompt
