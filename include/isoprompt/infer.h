// Isotropic reconstruction: upsample z, restore every XZ and YZ plane with a 2D
// network in overlapping tiles, fuse the two stacks, write back in the input's scale.
//
// The network is any callable: the library does not know the model type, so the CLI
// plugs in a frozen backbone, a prompt-tuned model or a fully fine-tuned one, and tests
// plug in an identity or a fixed convolution.
//
//   isoprompt::ReconstructParams p;
//   p.factor = vol.voxel_size().anisotropy();          // K, fractional is fine
//   p.norm = isoprompt::percentile_normalizer(vol);    // whole volume, once
//   p.cost = isoprompt::swin_cost(180, 6, 8, 2.0);     // memory per pixel of the network
//   isoprompt::Volume iso = isoprompt::reconstruct(vol, p, [&](const at::Tensor& b) {
//     return model->forward(b);                         // B x 1 x h x w -> B x 1 x h x w
//   });
//
// Geometry: output plane i along z reads input coordinate (i + 0.5)/K - 0.5 (cell
// centred, see ops.h); the output has round(nz * K) planes and voxel z = z / K exactly.
// Planes handed to the network have z along their ROWS (image axis 0), the axis that
// training degrades.
//
// Test-time augmentation (ReconstructParams::tta) restores each plane four times, as it
// is, flipped along its lateral axis (columns), along z (rows) and both (the flips that
// keep z along the rows), flips each result back and averages the four. The uncertainty
// map (reconstruct's `uncertainty` output) is, per output voxel, the population standard
// deviation of all the restorations of that voxel: the XZ and the YZ one (n = 2), or the
// four TTA variants of each (n = 8), in output intensity units (after de-normalisation):
//
//   u = (hi - lo) * sqrt( sum_i (r_i - mean)^2 / n ),   r_i normalised restorations.
//
// Without TTA that is |r_xz - r_yz| / 2 * (hi - lo). It is the same for either --fuse.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "isoprompt/ops.h"
#include "isoprompt/volume.h"

namespace isoprompt {

/// The network: a normalised float32 batch B x 1 x h x w on the reconstruction device in,
/// the restored batch of the same shape out. Called under inference mode (no autograd).
using SliceRestorer = std::function<at::Tensor(const at::Tensor& batch)>;

/// How the XZ and YZ stacks are combined (in normalised intensities).
///   Mean:      (a + b) / 2.
///   Geometric: sqrt(max(a, 0) * max(b, 0)), as CARE and UniFMIR do.
enum class Fuse : uint8_t { Mean, Geometric };
const char* fuse_name(Fuse f);            // "mean", "geometric"
Fuse parse_fuse(const std::string& s);    // throws InputError

/// What one forward pass of the network costs in memory, for automatic tiling.
struct RestorerCost {
  /// Peak working memory per input pixel of a forward pass (activations), bytes.
  /// 0 = unknown: a conservative default for a full-size SwinIR is used.
  double bytes_per_pixel = 0;
  /// Fixed memory of a forward pass independent of the tile (weights, workspace), bytes.
  double fixed_bytes = 0;
  /// Tile edges are made multiples of this (e.g. the Swin window), unless a tile spans
  /// the whole plane along that axis.
  int64_t multiple = 1;
};

/// Conservative memory estimate of a SwinIR forward pass in inference mode, per pixel:
/// 4 bytes x (11 C + 2 mlp_ratio C + 3 heads window^2), x 1.5 for allocator slack.
/// See docs/infer.md for the derivation and the measured values.
RestorerCost swin_cost(int64_t embed_dim, int64_t max_heads, int64_t window, double mlp_ratio);

/// Bytes per pixel assumed when RestorerCost::bytes_per_pixel is 0 (SwinIR, C=180, 6 heads,
/// window 8, mlp 2).
double default_bytes_per_pixel();

// ---- Tiling (pure functions, exposed for tests) ---------------------------------------

/// One tile along one axis: [start, start + length).
struct TileSpan {
  int64_t start = 0, length = 0;
  bool operator==(const TileSpan& o) const { return start == o.start && length == o.length; }
};

/// Covers [0, n) exactly with tiles of `tile` (<= n) that overlap by at least `overlap`:
/// the fewest tiles that do, spread evenly (the first starts at 0, the last ends at n).
/// n <= tile gives one tile of length n. Requires 0 <= overlap <= tile / 2.
std::vector<TileSpan> tile_spans(int64_t n, int64_t tile, int64_t overlap);

/// Blending weights along one axis: one vector per span, each of the span's length.
/// A tile's weight is 0 within `overlap`/4 of an edge it shares with a neighbour (the
/// network's border effects are discarded), rises along a raised-cosine ramp over the
/// rest of the overlap, and is 1 elsewhere (plane borders keep weight 1). The weights of
/// all tiles sum to exactly 1 at every position (they are normalised per axis), so the
/// 2D weight w_row * w_col is a partition of unity too.
std::vector<std::vector<float>> blend_weights(int64_t n, const std::vector<TileSpan>& spans,
                                              int64_t overlap);

/// The tiling of one plane geometry, and the batch size.
struct TilePlan {
  int64_t tile_rows = 0, tile_cols = 0;  // tile size (<= plane size)
  int64_t overlap = 0;                   // nominal overlap, px
  int64_t batch = 1;                     // tiles per forward pass
  std::vector<TileSpan> row_spans, col_spans;
  double bytes_per_batch = 0;            // estimated working memory of one forward pass
  int64_t tiles_per_plane() const {
    return static_cast<int64_t>(row_spans.size() * col_spans.size());
  }
};

/// Tiling request: 0 = automatic for tile and batch, -1 = automatic for overlap.
struct TileRequest {
  int64_t tile = 0;
  int64_t overlap = -1;
  int64_t batch = 0;
  double max_memory_gb = 4.0;
  RestorerCost cost;
  /// Caps the automatic batch at this many pixels per forward pass (0 = no cap; at least
  /// one tile). reconstruct() sets it on CPU, where large batches gain nothing and only
  /// delay Ctrl-C until the forward pass ends.
  int64_t max_batch_pixels = 0;
};

/// Chooses tiles for rows x cols planes. Automatic tiles are the largest whose forward
/// pass fits max_memory_gb (one tile = the whole plane when it fits), shrunk to the
/// smallest size that still needs the same number of tiles. Automatic batch fills the
/// memory budget with tiles (at most 64, and at most max_batch_pixels). Automatic overlap is 32 px, at most tile / 4.
/// Throws InputError on an impossible request (tile < 16, overlap > tile / 2, ...).
TilePlan plan_tiles(int64_t rows, int64_t cols, const TileRequest& req);

/// Restores a stack of planes P x H x W (normalised float32, host memory) tile by tile
/// with blended seams; returns P x H x W on the host. Tiles of all planes are batched
/// together; each batch is moved to `device` for the restorer and back (cropping and
/// blending run on the host). `on_batch` (optional) is called after each forward pass
/// with the number of tiles done.
at::Tensor restore_planes(const at::Tensor& planes, const SliceRestorer& restorer,
                          const TilePlan& plan, c10::Device device = c10::Device(c10::kCPU),
                          const std::function<void(int64_t)>& on_batch = nullptr);

/// Wraps a restorer so that slices smaller than `min_size` px along an axis are
/// replicate-padded (bottom/right) up to it and cropped back: models that reflect-pad to
/// their window (SwinIR) cannot take slices of a few pixels.
SliceRestorer pad_small_slices(SliceRestorer restorer, int64_t min_size);

/// acc = fuse(acc, other), elementwise, in place. Shapes must match.
void fuse_into(at::Tensor& acc, const at::Tensor& other, Fuse f);

// ---- Reconstruction -------------------------------------------------------------------

struct ReconstructParams {
  /// z upsampling factor K = z-step / xy-pixel; fractional is fine. Must be >= 1.
  double factor = 0;
  /// Interpolation used to upsample z: the one training used (ops.h kernels).
  Interp interp = Interp::Keys;
  Fuse fuse = Fuse::Mean;
  /// Tile edge in px (0 = automatic from max_memory_gb), overlap in px (-1 = automatic),
  /// tiles per forward pass (0 = automatic).
  int64_t tile = 0;
  int64_t overlap = -1;
  int64_t batch = 0;
  /// Budget for the working memory of one forward pass on `device`, GiB.
  double max_memory_gb = 4.0;
  RestorerCost cost;
  c10::Device device = c10::Device(c10::kCPU);
  /// Whole-volume normalisation, computed once (never per tile). Unset = the volume's
  /// 1 and 99.8 percentiles. Unused without a restorer.
  std::optional<Normalizer> norm;
  /// Output dtype; unset = the input's.
  std::optional<DType> out_dtype;
  /// Log the factor, voxel size, tiling and a progress bar (via log.h).
  bool verbose = true;
  /// Test-time augmentation: each plane restored as it is and flipped along its lateral
  /// axis, along z and both, flipped back exactly and averaged (4x the network's work).
  /// Needs a restorer.
  bool tta = false;
  /// Host memory for one group of planes in flight (input copy, upsampled, normalised,
  /// restored); at least one batch of tiles is always in flight.
  double group_bytes = 256.0 * 1024 * 1024;
};

/// What reconstruct() did, for the CLI and tests.
struct ReconstructReport {
  double factor = 0;
  int64_t out_nz = 0;
  VoxelSize voxel;             // output voxel size (z = input z / K exactly)
  Normalizer norm;             // the normalisation used
  TilePlan xz_plan, yz_plan;   // tiling of the XZ and YZ planes (empty in interp mode)
  int64_t planes = 0;          // planes restored (ny + nx; 0 in interp mode)
  int64_t variants = 0;        // restorations per plane: 1, or 4 with TTA (0 in interp mode)
  ClipReport clip;             // voxels saturated when converting to the output dtype
  double seconds = 0;
  double host_bytes = 0;       // estimated peak host memory of the volume buffers
};

/// Makes `input` isotropic. An empty `restorer` means interpolation only (mode interp):
/// the result is exactly ops' upsample() converted to the output dtype.
/// `uncertainty` (optional) receives the uncertainty map defined above: float32, the
/// output's shape, voxel size and unit. It and params.tta need a restorer (InputError).
/// Throws InputError for bad parameters, Cancelled on Ctrl-C (nothing is returned).
/// Peak host memory: the input, one float32 accumulator of the output's size, the output
/// in its dtype, the uncertainty map when asked for (float32, the output's size), plus
/// one group of planes (see docs/infer.md).
Volume reconstruct(const Volume& input, const ReconstructParams& params,
                   const SliceRestorer& restorer, ReconstructReport* report = nullptr,
                   Volume* uncertainty = nullptr);

// ---- Reconstruction from and into any storage (streaming: pipeline.h) ---------------

/// Where reconstruct_into() reads the input and puts the restorations, so one loop serves
/// a volume in memory (reconstruct()) and volumes streamed from and to disk. Planes come in
/// groups: XZ planes are y indices, YZ planes x indices. Tensors are P x Z x W (P planes of
/// out_nz rows, W = nx for XZ, ny for YZ), normalised; `m2` is the TTA variants' sum of
/// squared deviations, undefined without TTA.
class ReconstructStorage {
 public:
  virtual ~ReconstructStorage() = default;
  /// Input planes [first, first + count) of orientation `which`, in the input's dtype:
  /// (nz, count, nx) for XZ, (nz, ny, count) for YZ.
  virtual Volume read_input(Plane which, int64_t first, int64_t count) = 0;
  /// The XZ pass's result for y planes [first, first + count).
  virtual void put_xz(int64_t first, int64_t count, const at::Tensor& mean, const at::Tensor& m2) = 0;
  /// The YZ pass's result for x planes [first, first + count): fuse it with the XZ result
  /// there (fuse_group) and keep or write the fused voxels.
  virtual void put_yz(int64_t first, int64_t count, const at::Tensor& mean, const at::Tensor& m2) = 0;
  /// True when this group was stored by an earlier run (resume): it is skipped.
  virtual bool done(Plane /*which*/, int64_t /*first*/, int64_t /*count*/) { return false; }
  /// Groups start at multiples of this (chunk boundaries of the storage) and hold a multiple
  /// of it, except the last.
  virtual int64_t group_multiple() const { return 1; }
  /// Called after the last group of each pass (the ranks of an MPI job meet there: the YZ
  /// pass reads XZ results other ranks wrote).
  virtual void pass_done(Plane /*which*/) {}
};

/// Fuses one group: `xz` holds the XZ means and receives the fused result (in place), and,
/// when `map` is defined, `map` holds the XZ pass's M2 (TTA; anything without) and receives
/// the uncertainty (see the top of this file; `range` = hi - lo of the normalisation).
void fuse_group(at::Tensor xz, at::Tensor map, const at::Tensor& yz, const at::Tensor& yz_m2,
                int64_t variants, Fuse f, double range);

/// The output geometry for an input of `shape` and `voxel` at z factor `factor`: the
/// report's factor, out_nz and voxel (z / factor exactly). Throws InputError for an empty
/// shape or a factor that is not a finite number >= 1.
ReconstructReport reconstruct_geometry(Shape3 shape, VoxelSize voxel, double factor);

/// reconstruct_geometry() and the tiling reconstruct() uses: also the report's plans.
/// Throws InputError for bad parameters.
ReconstructReport plan_reconstruction(Shape3 shape, VoxelSize voxel, const ReconstructParams& params);

/// The loop of reconstruct() on `storage`: the XZ pass, then the YZ pass, group by group,
/// with progress and Ctrl-C (Cancelled). `norm` must be set in params. `want_m2`: pass the
/// variants' M2 to the storage (the uncertainty map). Fills the report's plans, planes,
/// variants and seconds (not clip or host_bytes, which belong to the storage).
void reconstruct_into(Shape3 shape, VoxelSize voxel, const std::string& unit,
                      const ReconstructParams& params, const SliceRestorer& restorer,
                      ReconstructStorage& storage, bool want_m2, ReconstructReport* report);

/// Output z length for factor K: round(nz * K) (same rule as ops' upsample).
int64_t reconstructed_nz(int64_t nz, double factor);

}  // namespace isoprompt
