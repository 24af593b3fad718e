// The per-format plane readers and writers behind PlaneReader / PlaneWriter (planes.h) and
// read_volume / write_volume (io.cpp), which run them over the whole volume; and the
// checks they share.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "io/metadata.h"
#include "isoprompt/io.h"

namespace isoprompt::io {

// An open volume file whose planes are decoded on demand: its metadata and the planes'
// decoder. Holds what one read needs (one page, hyperslab or the chunks it touches).
class PlaneSource {
 public:
  virtual ~PlaneSource() = default;
  // Planes [z0, z0 + n) (the caller checked the range), raw: no NaN policy. Throws
  // InputError for a corrupt page or chunk.
  virtual Volume read(int64_t z0, int64_t n) = 0;

  Shape3 shape;
  DType dtype = DType::U8;
  VoxelSize voxel;
  std::string unit = "pixel";
  std::string where;  // what messages name: the path (HDF5: file:/dataset)
  TiffFileInfo info;  // nan/inf counts are the caller's (read_planes)
};

// Opens `path` (metadata only), with every check read_volume makes on the file. With
// `whole_volume` (read_volume) the volume must also fit in this machine's memory
// (check_fits_in_memory, at the point where read_volume always checked it); the plane
// reader skips that check, which is its purpose.
std::unique_ptr<PlaneSource> open_tiff_source(const std::string& path, const ReadOptions& opts,
                                              bool whole_volume);
std::unique_ptr<PlaneSource> open_zarr_source(const std::string& path, const ReadOptions& opts,
                                              bool whole_volume);
std::unique_ptr<PlaneSource> open_hdf5_source(const std::string& path, const ReadOptions& opts,
                                              bool whole_volume);
// One of the above, chosen by parse_volume_path.
std::unique_ptr<PlaneSource> open_plane_source(const std::string& path, const ReadOptions& opts,
                                               bool whole_volume);

// What PlaneReader::read_planes and read_volume share: the range check, then the planes
// with opts.nan applied (see planes.h). `warned` keeps NanPolicy::Keep's warning to one per
// reader. Counts the non-finite voxels read into src.info.
Volume read_source_planes(PlaneSource& src, int64_t z0, int64_t n, const ReadOptions& opts,
                          bool& warned);

// An output file being written plane by plane into a temporary file (AtomicOutput).
class PlaneSink {
 public:
  virtual ~PlaneSink() = default;  // removes the temporary output unless commit() ran
  // The next n planes (n * ny * nx samples of the sink's dtype, C order); the caller
  // checked that they fit.
  virtual void write(const uint8_t* planes, int64_t n) = 0;
  // After all planes: finishes the file and renames it into place.
  virtual void commit() = 0;
};

struct SinkOptions {
  // The whole volume, when the caller holds it (write_volume): ImageJ's display range
  // (min/max) is then written up front and a progress bar is shown for large volumes.
  // Without it the range is found over the planes as they come and written into the
  // fixed-size description field at commit.
  const Volume* whole = nullptr;
};

// Each creates the temporary output and writes what it can before the planes (headers,
// metadata). Throws InputError for a path that cannot be written or a volume the format
// cannot hold, with write_volume's messages.
std::unique_ptr<PlaneSink> open_tiff_sink(const std::string& path, const VolumeMeta& meta,
                                          const WriteOptions& opts, const SinkOptions& so);
std::unique_ptr<PlaneSink> open_zarr_sink(const std::string& path, const VolumeMeta& meta,
                                          const WriteOptions& opts, const SinkOptions& so);
std::unique_ptr<PlaneSink> open_hdf5_sink(const std::string& path, const VolumeMeta& meta,
                                          const WriteOptions& opts, const SinkOptions& so);
std::unique_ptr<PlaneSink> open_plane_sink(const std::string& path, const VolumeMeta& meta,
                                           const WriteOptions& opts, const SinkOptions& so);

// The time point or channel to read: `requested` (-1: the only one) out of n. Throws
// InputError with the same wording for every format ("--channel 3 is out of range ...").
int select_index(int requested, int64_t n, const char* what, const char* flag,
                 const std::string& path);

// Throws InputError when a volume of `bytes` cannot fit in this machine's memory.
void check_fits_in_memory(double bytes, Shape3 shape, DType dtype, const std::string& path);

// "1.5 GiB" for messages.
std::string human_size(double bytes);

}  // namespace isoprompt::io
