// OME-Zarr (NGFF 0.4 on Zarr v2) stores: chunk-wise reading and writing.
//
//   Volume v = read_volume("stack.ome.zarr");        // via io.h: level 0 of the multiscales
//   ZarrReader r("stack.ome.zarr");                   // or a sub-box without reading the rest
//   Volume slab = r.read_box({10, 0, 0}, {8, r.shape().y, r.shape().x});
//
//   ZarrWriteOptions zo;  zo.compressor = ZarrCompressor::Zstd;  zo.levels = 3;
//   ZarrWriter w("out.ome.zarr", shape, DType::U16, voxel, "micron", zo);
//   for (int64_t z0 = 0; z0 < shape.z; z0 += w.chunk_shape().z)
//     w.write_slab(z0, planes_from(z0));             // chunk_shape().z planes (fewer at the end)
//   w.commit();                                       // renames the finished store into place
//
// Reading: a directory store of Zarr v2 arrays in C order, chunk keys with the "." or "/"
// dimension separator, compressors blosc (any codec the library has), zstd, zlib, gzip or
// none, no filters, dtypes |u1, <u2, >u2, <f4 and >f4; a missing chunk file holds the
// fill_value. The path may name the store (its OME `multiscales` pick level 0; a
// bioformats2raw store picks series 0), an array inside it (`store.zarr/1`), or a plain
// array. Axes come from `multiscales[0].axes` (NGFF 0.4 objects, 0.3 names, or 5D t,c,z,y,x
// for 0.1/0.2); time and channel axes are selected as ReadOptions::time/channel. The voxel
// size is the dataset's `scale` transformation times the multiscale's own, in the spatial
// axes' unit (converted to micrometres when it is a length).
//
// Writing builds the whole store in a hidden sibling directory (.NAME.tmp-PID) and renames
// it into place at commit(); an existing store at the path is replaced only then, so a
// failure leaves it as it was. Level 0 is the volume; levels 1.. halve y and x (2x2 mean,
// z kept, as ome-zarr-py's default scaler does) and say so in their scale and translation.
//
// Every problem with a store (missing or malformed .zarray/.zattrs, unsupported dtype,
// order, filter or compressor, a corrupt chunk) throws InputError naming the file and value.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "isoprompt/io.h"
#include "isoprompt/volume.h"

namespace isoprompt {

class AtomicOutput;

namespace io {

// One Zarr v2 array as its .zarray describes it.
struct ZarrArrayMeta {
  std::vector<int64_t> shape, chunks;  // per dimension, C order (last dimension fastest)
  DType dtype = DType::U8;
  bool big_endian = false;
  std::string dtype_text;                // as written ("<u2")
  std::string compressor;                // "blosc", "zstd", "zlib", "gzip" or "" (none)
  std::string blosc_cname;               // blosc's codec ("lz4", "zstd", ...), for `info`
  int blosc_shuffle = 0;                 // 0 none, 1 byte, 2 bit (-1 numcodecs' automatic)
  double fill_value = 0;                 // NaN and +-Inf allowed for float arrays
  char separator = '.';                  // dimension_separator
  int64_t chunk_elements = 0;            // product of `chunks`
  int64_t chunk_bytes = 0;               // chunk_elements * dtype size
  std::vector<int64_t> grid;             // chunks per dimension (ceil(shape / chunks))
  std::string compression_name() const;  // "blosc-lz4 (shuffle)", "zstd", "none", ...
};

// An array with what the OME metadata around it says about its axes and voxel size.
struct ZarrLayout {
  ZarrArrayMeta array;
  // Dimension index of each axis in the array; -1 when the array has no such axis.
  int axis_t = -1, axis_c = -1, axis_z = -1, axis_y = -1, axis_x = -1;
  bool ome = false;            // the axes and scale came from OME multiscales
  std::string ngff_version;    // multiscales[0].version ("0.4"), "" when none
  int n_levels = 1;            // datasets in the multiscales
  bool calibrated = false;     // a physical (or pixel-unit, non-unit) scale was found
  VoxelSize voxel;             // z, y, x, in `unit`
  std::string unit = "pixel";  // "micron" when the axes carry a known length unit
  std::string file_unit;       // the unit as written ("micrometer"), "" when none
  int64_t size(int axis) const { return axis < 0 ? 1 : array.shape[static_cast<size_t>(axis)]; }
};

// Parses the text of a .zarray (`file` names it in messages). Throws InputError.
ZarrArrayMeta parse_zarray(const std::string& text, const std::string& file);

// The layout of the array `dataset_path` (relative to the group) given its .zarray and the
// .zattrs of the group holding it ("" when the group has none, or for a plain array).
// Names in messages: `zarray_file`, `zattrs_file`. Throws InputError.
ZarrLayout parse_zarr_layout(const std::string& zarray_text, const std::string& zarray_file,
                             const std::string& zattrs_text, const std::string& zattrs_file,
                             const std::string& dataset_path);

// Decodes one stored chunk (`encoded`, as read from `file`) into `out`, which must hold
// meta.chunk_bytes; swaps big-endian samples to the machine's order. Throws InputError.
void decode_zarr_chunk(const ZarrArrayMeta& meta, const uint8_t* encoded, size_t size, uint8_t* out,
                       const std::string& file);

}  // namespace io

// Reads an OME-Zarr image or a plain Zarr array, chunk by chunk.
class ZarrReader {
 public:
  // Opens the store or array at `path` (see the top of this file); reads only metadata.
  // opts.channel / opts.time select the plane of a 4D/5D array.
  explicit ZarrReader(const std::string& path, const ReadOptions& opts = {});

  Shape3 shape() const { return shape_; }
  DType dtype() const { return layout_.array.dtype; }
  VoxelSize voxel_size() const { return layout_.voxel; }
  const std::string& unit() const { return layout_.unit; }
  const io::ZarrLayout& layout() const { return layout_; }
  const std::string& array_dir() const { return array_dir_; }  // the directory with the .zarray
  int channel() const { return channel_; }
  int time() const { return time_; }

  // The voxels of the box [origin, origin + size) of the selected channel and time point,
  // decoding only the chunks it touches. Throws InputError for a box outside the array.
  Volume read_box(Shape3 origin, Shape3 size) const;
  Volume read_all() const { return read_box({0, 0, 0}, shape_); }

 private:
  std::string path_, array_dir_;
  io::ZarrLayout layout_;
  Shape3 shape_;
  int channel_ = 0, time_ = 0;
};

// Writes an OME-Zarr image (NGFF 0.4, Zarr v2) chunk by chunk.
class ZarrWriter {
 public:
  // Creates the temporary store next to `path` and writes its metadata. Throws InputError
  // for a path that does not end in .zarr or whose directory cannot take it, or when an
  // existing `path` is not a Zarr store (it would be replaced).
  ZarrWriter(const std::string& path, Shape3 shape, DType dtype, VoxelSize voxel,
             const std::string& unit, const ZarrWriteOptions& opts = {});
  ~ZarrWriter();  // removes the temporary store unless commit() ran
  ZarrWriter(const ZarrWriter&) = delete;
  ZarrWriter& operator=(const ZarrWriter&) = delete;

  Shape3 chunk_shape() const { return chunks_; }  // of level 0
  int levels() const { return static_cast<int>(level_shapes_.size()); }
  Shape3 level_shape(int level) const { return level_shapes_[static_cast<size_t>(level)]; }

  // Level 0 chunk (cz, cy, cx): `block` holds the chunk's voxels clipped to the image (z
  // fastest-varying last: C order), `dtype` as given to the constructor. Only for a
  // single-level store (the pyramid levels need whole planes: use write_slab).
  void write_chunk(int64_t cz, int64_t cy, int64_t cx, const void* block);
  // Planes z0 .. z0 + n - 1 (whole XY planes, C order) of every level. z0 must be a multiple
  // of chunk_shape().z and n must be chunk_shape().z, or what is left of the image.
  void write_slab(int64_t z0, int64_t n, const void* planes);
  // Level-0 chunk (cz, cy, cx) is in the store (written now or, resuming, by an earlier run).
  bool has_chunk(int64_t cz, int64_t cy, int64_t cx) const;
  // Where the store is being built (ZarrWriteOptions::resume_dir, or the hidden temporary).
  const std::string& build_dir() const;
  // Throws Error when a level-0 chunk was never written; then renames the store into place.
  void commit();

 private:
  void write_level_chunk(int level, int64_t cz, int64_t cy, int64_t cx, const uint8_t* src,
                         Shape3 src_shape, Shape3 src_origin);

  std::string path_;
  std::unique_ptr<AtomicOutput> out_;
  Shape3 shape_, chunks_;
  DType dtype_;
  ZarrWriteOptions opts_;
  std::vector<Shape3> level_shapes_;
  std::vector<uint8_t> written_;  // per level-0 chunk
};

}  // namespace isoprompt
