// The streaming restore: a volume that does not fit the job's memory budget is read box by
// box and reconstructed slab by slab (pipeline.h, docs/streaming.md). Internal to the
// pipeline module.
//
// Scratch directory (default: .OUTPUT.scratch beside the output; --scratch DIR puts it
// in DIR), every store in it a Zarr v2 array written chunk by chunk, each chunk atomically:
//   job.txt            what the job is (input identity, model, parameters): a rerun of the
//                      same job continues from what is here, another job starts it over
//   input.zarr         the input copied plane by plane (non-Zarr inputs only)
//   norm-*.txt         the whole volume's percentiles
//   prompt.safetensors the tuned state (restore), so a rerun does not tune again
//   xz.partial.zarr    the XZ pass's restorations (float32, normalised)
//   xzm2.partial.zarr  their TTA spread (uncertainty map with --tta)
//   out/map.partial.zarr  the fused output and the map, for outputs written plane by plane
//                      at the end (TIFF, HDF5, Zarr with a pyramid)
// An OME-Zarr output (one level) is written chunk by chunk in .OUTPUT.partial beside it and
// renamed into place at the end. The scratch directory is removed after success.
#pragma once

#include <memory>
#include <string>

#include "isoprompt/infer.h"
#include "isoprompt/io.h"
#include "isoprompt/pipeline.h"
#include "isoprompt/planes.h"
#include "isoprompt/zarr.h"

namespace isoprompt {
namespace stream {

// The job's scratch directory and its fingerprint.
class Scratch {
 public:
  // Opens (or starts over) the scratch directory of `job` for a job described by
  // `fingerprint`. Logs whether it continues an earlier run.
  Scratch(const RestoreJob& job, const std::string& fingerprint);
  ~Scratch();  // after a failure: says that a rerun continues from it
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  bool resumed() const { return resumed_; }
  // Removes the directory (after success; rank 0).
  void remove();

 private:
  void open(const std::string& fingerprint);
  std::string dir_;
  bool resumed_ = false, removed_ = false;
};

// The input, read box by box: an OME-Zarr store directly, anything else copied once into
// the scratch directory plane by plane from `opened` (job.input, already open: the job's
// size estimate opened it, and a TIFF's pages are validated once).
class Input {
 public:
  Input(const RestoreJob& job, Scratch& scratch, double budget_bytes, PlaneReader& opened);
  Shape3 shape() const { return reader_->shape(); }
  DType dtype() const { return reader_->dtype(); }
  VoxelSize voxel_size() const { return voxel_; }
  void set_voxel_size(VoxelSize v) { voxel_ = v; }
  const std::string& unit() const { return unit_; }
  bool calibrated() const { return calibrated_; }
  // Voxels of the box, with voxel_size() and unit().
  Volume read_box(Shape3 origin, Shape3 size) const;
  // The whole volume's percentiles (pmin, pmax), streamed (cached in the scratch directory).
  // Float input: refuses NaN/Inf voxels (ReadOptions::nan Refuse) with their position.
  Normalizer normalizer(double pmin, double pmax) const;
  // The XY planes tuning sees: all of them when they fit `budget_bytes`, else that many
  // planes evenly spaced in z.
  Volume tuning_planes(double budget_bytes) const;

 private:
  Normalizer streamed_normalizer(const std::string& cache, double pmin, double pmax) const;
  const RestoreJob& job_;
  Scratch& scratch_;
  std::unique_ptr<ZarrReader> reader_;
  VoxelSize voxel_;
  std::string unit_;
  bool calibrated_ = false;
  double budget_ = 0;
};

// What a streamed reconstruction wrote.
struct Written {
  ReconstructReport report;
  Shape3 shape;
  DType dtype = DType::F32;
  bool wrote_map = false;
  double map_mean = 0, map_max = 0;
};

// Reconstructs `in` into `output` (and the uncertainty map into `map_path`, when not empty)
// slab by slab. An empty restorer means interpolation (params.norm unused). params.norm is
// the whole volume's normalisation otherwise.
Written reconstruct(const Input& in, Scratch& scratch, const ReconstructParams& params,
                    const SliceRestorer& restorer, const std::string& output,
                    const WriteOptions& out_opts, const std::string& map_path,
                    const WriteOptions& map_opts, double budget_bytes);

// Host memory the in-memory job would need for an input of `shape`/`dtype` at factor k
// (input, float32 accumulator, output, map, planes in flight).
double in_memory_bytes(Shape3 shape, DType dtype, double k, DType out_dtype, bool map);

// The machine's physical memory in GB (0 when the system does not say).
double physical_memory_gb();
// The default --max-memory: half of the machine's physical memory (4 GB when unknown).
double default_max_memory_gb();

}  // namespace stream
}  // namespace isoprompt
