// reconstruct(): z upsampling, XZ and YZ restoration, fusion, denormalisation.
//
// Memory: planes are upsampled from the input a group at a time, so the only
// full-size buffers are the input, one float32 accumulator of the output's size (it
// holds the XZ result, then the fused result) and the output in its dtype (float32
// output is denormalised in place in the accumulator, so it needs no second buffer).
//
// Test-time augmentation and the uncertainty map add no other full-size buffer: the TTA
// variants of a group of planes are accumulated into that group's running mean and sum
// of squared deviations (Welford) before the group goes into the accumulator, and the
// map is the only extra output-sized buffer. It holds the XZ pass's within-orientation
// sum of squared deviations (TTA only), and the YZ pass turns it into the standard
// deviation over all 2n restorations with Chan et al.'s pairwise update, reading the XZ
// mean from the accumulator before the fusion overwrites it:
//
//   M2 = M2_xz + M2_yz + (mean_xz - mean_yz)^2 * n / 2,   u = sqrt(M2 / 2n) * (hi - lo).
//
// Storing sum and sum of squares instead would need a second buffer and lose digits to
// cancellation (the spread is small next to the intensities); Welford/Chan need neither.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "isoprompt/error.h"
#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/progress.h"
#include "isoprompt/runtime.h"
#include "isoprompt/tensor.h"

namespace isoprompt {

namespace {

// On CPU a forward pass of 2^17 pixels already keeps every core busy; larger batches
// only delay Ctrl-C (it is honoured between forward passes).
constexpr int64_t kCpuBatchPixels = int64_t(1) << 17;

// Copies planes [first, first + count) of orientation `p` (XZ: y index, YZ: x index) into
// a (nz, count, nx) or (nz, ny, count) volume of the input's dtype.
Volume extract_block(const Volume& in, Plane p, int64_t first, int64_t count) {
  const int64_t nz = in.nz(), ny = in.ny(), nx = in.nx();
  const Shape3 shape = p == Plane::XZ ? Shape3{nz, count, nx} : Shape3{nz, ny, count};
  Volume block(shape, in.dtype(), in.voxel_size(), in.unit());
  visit_dtype(in.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* src = in.data<T>();
    T* dst = block.data<T>();
    if (p == Plane::XZ) {
#pragma omp parallel for schedule(static)
      for (int64_t z = 0; z < nz; ++z)
        std::memcpy(dst + z * count * nx, src + (z * ny + first) * nx,
                    static_cast<size_t>(count * nx) * sizeof(T));
    } else {
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t z = 0; z < nz; ++z)
        for (int64_t y = 0; y < ny; ++y)
          for (int64_t c = 0; c < count; ++c)
            dst[(z * ny + y) * count + c] = src[(z * ny + y) * nx + first + c];
    }
  });
  return block;
}

// The flips of a P x Z x W stack of planes used by test-time augmentation: identity,
// lateral (columns), z (rows), both. Each keeps z along the rows, the axis training
// degrades, and is its own inverse.
const std::vector<std::vector<int64_t>>& tta_flips(bool tta) {
  static const std::vector<std::vector<int64_t>> none{{}}, all{{}, {2}, {1}, {1, 2}};
  return tta ? all : none;
}

std::string plan_text(const char* name, int64_t rows, int64_t cols, const TilePlan& pl) {
  if (pl.tiles_per_plane() == 1)
    return fmt::format("{} planes {}x{} whole", name, rows, cols);
  return fmt::format("{} planes {}x{} in {}x{} tiles of {}x{} px (overlap {})", name, rows, cols,
                     pl.row_spans.size(), pl.col_spans.size(), pl.tile_rows, pl.tile_cols, pl.overlap);
}

}  // namespace

int64_t reconstructed_nz(int64_t nz, double factor) {
  return static_cast<int64_t>(std::llround(static_cast<double>(nz) * factor));
}

ReconstructReport reconstruct_geometry(Shape3 shape, VoxelSize in_voxel, double factor) {
  if (shape.z < 1 || shape.y < 1 || shape.x < 1)
    throw_input("cannot reconstruct an empty volume ({})", to_string(shape));
  if (!std::isfinite(factor) || factor < 1.0)
    throw_input("z factor {} must be a finite number >= 1", factor);
  ReconstructReport rep;
  rep.factor = factor;
  rep.out_nz = reconstructed_nz(shape.z, factor);
  rep.voxel = in_voxel;
  rep.voxel.z = in_voxel.z / factor;  // exact: never rounded to fit the grid
  return rep;
}

ReconstructReport plan_reconstruction(Shape3 shape, VoxelSize in_voxel, const ReconstructParams& p) {
  ReconstructReport rep = reconstruct_geometry(shape, in_voxel, p.factor);
  TileRequest req;
  req.tile = p.tile;
  req.overlap = p.overlap;
  req.batch = p.batch;
  req.max_memory_gb = p.max_memory_gb;
  req.cost = p.cost;
  if (p.device.is_cpu()) req.max_batch_pixels = kCpuBatchPixels;
  rep.xz_plan = plan_tiles(rep.out_nz, shape.x, req);
  rep.yz_plan = plan_tiles(rep.out_nz, shape.y, req);
  return rep;
}

void fuse_group(at::Tensor xz, at::Tensor map, const at::Tensor& yz, const at::Tensor& yz_m2,
                int64_t n_var, Fuse f, double range) {
  if (map.defined()) {
    // Chan et al.: two sets of n restorations, means mean_xz (in `xz`, not yet fused) and
    // mean_yz, sums of squared deviations M2_xz (in the map) and M2_yz.
    at::Tensor d = xz - yz;
    at::Tensor total = d.mul_(d).mul_(0.5 * static_cast<double>(n_var));
    if (yz_m2.defined()) total.add_(map).add_(yz_m2);
    map.copy_(total.div_(2.0 * static_cast<double>(n_var)).sqrt_().mul_(range));
  }
  fuse_into(xz, yz, f);
}

namespace {

void log_geometry(const ReconstructReport& rep, Shape3 shape, VoxelSize in_voxel,
                  const std::string& unit) {
  log_info("z factor {} (used exactly): {} -> {} planes, voxel z {:.6g} -> {:.6g} {} (y {:.6g}, x {:.6g})",
           rep.factor, shape.z, rep.out_nz, in_voxel.z, rep.voxel.z, unit, rep.voxel.y, rep.voxel.x);
  if (std::abs(rep.voxel.z - rep.voxel.x) > 0.01 * rep.voxel.x)
    log_warn("output voxels are not isotropic: z {:.6g} vs x {:.6g} {} (the factor z/x would be {:.6g})",
             rep.voxel.z, rep.voxel.x, unit, in_voxel.anisotropy());
}

// reconstruct()'s storage: the input in memory, a float32 accumulator of the output's size
// (the XZ result, then the fused result) and the uncertainty map.
class MemoryStorage : public ReconstructStorage {
 public:
  MemoryStorage(const Volume& input, at::Tensor acc, at::Tensor map, int64_t n_var, Fuse fuse, double range)
      : input_(input), acc_(std::move(acc)), map_(std::move(map)), n_var_(n_var), fuse_(fuse), range_(range) {}

  Volume read_input(Plane which, int64_t first, int64_t count) override {
    return extract_block(input_, which, first, count);
  }
  void put_xz(int64_t first, int64_t count, const at::Tensor& mean, const at::Tensor& m2) override {
    acc_.narrow(1, first, count).permute({1, 0, 2}).copy_(mean);
    if (map_.defined() && m2.defined()) map_.narrow(1, first, count).permute({1, 0, 2}).copy_(m2);
  }
  void put_yz(int64_t first, int64_t count, const at::Tensor& mean, const at::Tensor& m2) override {
    at::Tensor dst = acc_.narrow(2, first, count).permute({2, 0, 1});
    at::Tensor udst = map_.defined() ? map_.narrow(2, first, count).permute({2, 0, 1}) : at::Tensor();
    fuse_group(dst, udst, mean, m2, n_var_, fuse_, range_);
  }

 private:
  const Volume& input_;
  at::Tensor acc_, map_;
  int64_t n_var_;
  Fuse fuse_;
  double range_;
};

}  // namespace

void reconstruct_into(Shape3 shape, VoxelSize in_voxel, const std::string& unit, const ReconstructParams& p,
                      const SliceRestorer& restorer, ReconstructStorage& storage, bool want_m2,
                      ReconstructReport* report) {
  const auto t_start = std::chrono::steady_clock::now();
  if (!restorer) throw_input("reconstruct_into needs a network (interpolation is ops' upsample)");
  if (!p.norm) throw_input("reconstruct_into needs the whole volume's normalisation");
  ReconstructReport rep = plan_reconstruction(shape, in_voxel, p);
  log_geometry(rep, shape, in_voxel, unit);
  check_interrupted();
  c10::InferenceMode guard;
  const Normalizer norm = *p.norm;
  rep.norm = norm;
  const double k = p.factor;
  const int64_t ny = shape.y, nx = shape.x, out_nz = rep.out_nz;
  log_info("normalisation (whole volume): [{:.6g}, {:.6g}] -> [0, 1]", norm.lo, norm.hi);
  log_info("tiling: {}; {}; batch {}, about {:.2f} GB per forward pass (budget {} GB)",
           plan_text("XZ", out_nz, nx, rep.xz_plan), plan_text("YZ", out_nz, ny, rep.yz_plan),
           rep.xz_plan.batch, std::max(rep.xz_plan.bytes_per_batch, rep.yz_plan.bytes_per_batch) / kGiB,
           p.max_memory_gb);

  const auto& flips = tta_flips(p.tta);
  const int64_t n_var = static_cast<int64_t>(flips.size());
  if (p.tta)
    log_info("test-time augmentation: each slice restored 4 times (as it is, flipped along x or y, "
             "along z, both), flipped back and averaged");
  const double lo = norm.lo, scale = norm.scale();
  const int64_t multiple = std::max<int64_t>(1, storage.group_multiple());

  // The bar counts restorations of a slice (4 per slice with TTA), so rate and ETA cover
  // the whole job.
  Progress progress("reconstruct", (ny + nx) * n_var, p.tta ? "slice passes" : "slices");
  int64_t done = 0;
  double group_peak = 0;
  for (const Plane which : {Plane::XZ, Plane::YZ}) {
    const bool xz = which == Plane::XZ;
    const TilePlan& plan = xz ? rep.xz_plan : rep.yz_plan;
    const int64_t n_planes = xz ? ny : nx, width = xz ? nx : ny;
    // Planes per group: as many as the host group budget allows (the per-group work,
    // block extraction and upsampling, has a fixed cost), and at least one batch of tiles.
    // Per plane: input copy, upsampled, normalised, restored; TTA adds the flipped input,
    // the flipped-back result, the running mean, M2 and two temporaries.
    const double plane_bytes = (p.tta ? 10.0 : 4.0) * 4.0 * double(out_nz) * double(width);
    const int64_t tpp = plan.tiles_per_plane();
    int64_t group = std::max<int64_t>(1, static_cast<int64_t>(p.group_bytes / plane_bytes));
    group = std::max(group, (plan.batch + tpp - 1) / tpp);
    group = std::max<int64_t>(multiple, group / multiple * multiple);
    group = std::min(group, n_planes);
    group_peak = std::max(group_peak, plane_bytes * double(group));
    for (int64_t first = 0; first < n_planes; first += group) {
      const int64_t count = std::min(group, n_planes - first);
      if (storage.done(which, first, count)) {
        done += count * n_var;
        progress.update(done);
        continue;
      }
      at::Tensor up;
      {
        // Float input is normalised before the interpolation (which is linear, so the order
        // does not matter in exact arithmetic): finite values near +-3.4e38 would overflow
        // float32 in the interpolation or in x - lo. Integer input cannot, and keeps its order.
        Volume raw = storage.read_input(which, first, count);
        const bool normalised = raw.dtype() == DType::F32;
        if (normalised) normalize_inplace(raw, norm);
        const Volume block = upsample(raw, 0, k, p.interp, out_nz);
        const at::Tensor t = to_tensor(block).data;  // (out_nz, count, nx) or (out_nz, ny, count)
        const at::Tensor planes = xz ? t.permute({1, 0, 2}) : t.permute({2, 0, 1});  // P x Z x W
        up = normalised ? planes.clone() : planes.sub(lo).mul_(scale);
      }
      int64_t tiles_done = 0;  // over all variants of this group
      auto on_batch = [&](int64_t n) {
        tiles_done += n;
        progress.update(done + tiles_done / tpp);  // also the Ctrl-C safe point
      };
      // The variants' running mean and sum of squared deviations (Welford). Identical
      // variants leave the mean bit-exact (delta is 0), so a flip-equivariant network gives
      // exactly the result without TTA.
      at::Tensor restored, m2;
      for (int64_t v = 0; v < n_var; ++v) {
        const std::vector<int64_t>& f = flips[static_cast<size_t>(v)];
        at::Tensor r = restore_planes(f.empty() ? up : at::flip(up, f), restorer, plan, p.device, on_batch);
        if (!f.empty()) r = at::flip(r, f);  // a permutation: the back-transform is exact
        if (v == 0) {
          restored = r;
          continue;
        }
        const at::Tensor delta = r - restored;
        restored.add_(delta, 1.0 / static_cast<double>(v + 1));
        if (want_m2) {
          const at::Tensor d2 = delta.mul(r - restored);
          m2 = m2.defined() ? m2.add_(d2) : d2;
        }
      }
      if (xz)
        storage.put_xz(first, count, restored, m2);
      else
        storage.put_yz(first, count, restored, m2);
      done += count * n_var;
      progress.update(done);
    }
    storage.pass_done(which);
  }
  progress.finish();
  rep.planes = ny + nx;
  rep.variants = n_var;
  rep.host_bytes = group_peak;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (report) *report = rep;
}

Volume reconstruct(const Volume& input, const ReconstructParams& p, const SliceRestorer& restorer,
                   ReconstructReport* report, Volume* uncertainty) {
  const auto t_start = std::chrono::steady_clock::now();
  if (input.empty()) throw_input("cannot reconstruct an empty volume ({})", to_string(input.shape()));
  if (!restorer && p.tta)
    throw_input("test-time augmentation needs a network: interpolation has no restorations to average");
  if (!restorer && uncertainty)
    throw_input("the uncertainty map needs a network: it is the spread of the network's XZ and YZ "
                "restorations, and interpolation has none");
  const DType out_dtype = p.out_dtype.value_or(input.dtype());
  const int64_t ny = input.ny(), nx = input.nx();

  // Interpolation only: exactly ops' upsample, converted to the output dtype.
  if (!restorer) {
    ReconstructReport rep = reconstruct_geometry(input.shape(), input.voxel_size(), p.factor);
    log_geometry(rep, input.shape(), input.voxel_size(), input.unit());
    check_interrupted();
    const int64_t out_nz = rep.out_nz;
    rep.host_bytes = static_cast<double>(input.size_bytes()) + 4.0 * out_nz * ny * nx +
                     (out_dtype == DType::F32 ? 0.0 : double(dtype_size(out_dtype)) * out_nz * ny * nx);

    Volume up = upsample(input, 0, p.factor, p.interp, out_nz);
    check_interrupted();
    // float32 output: saturated in place, never a second full float32 copy.
    Volume out;
    if (out_dtype == DType::F32) {
      denormalize_inplace(up, Normalizer{0.0, 1.0}, &rep.clip);
      out = std::move(up);
    } else {
      out = denormalize(up, Normalizer{0.0, 1.0}, out_dtype, &rep.clip);
    }
    out.set_voxel_size(rep.voxel);
    out.set_unit(input.unit());
    if (rep.clip.below + rep.clip.above > 0) log_warn("{}", rep.clip.summary());
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    if (report) *report = rep;
    return out;
  }

  ReconstructParams params = p;
  if (!params.norm) params.norm = percentile_normalizer(input);
  const Normalizer norm = *params.norm;
  // The geometry only: reconstruct_into plans the tiles (once: planning warns).
  ReconstructReport rep = reconstruct_geometry(input.shape(), input.voxel_size(), p.factor);
  const int64_t out_nz = rep.out_nz;
  const VoxelSize voxel = rep.voxel;

  // The accumulator: the XZ result, then the fused result, then (float32 output) the output.
  const double out_bytes = out_dtype == DType::F32 ? 0.0 : double(dtype_size(out_dtype)) * out_nz * ny * nx;
  const double map_bytes = uncertainty ? 4.0 * out_nz * ny * nx : 0.0;
  log_info("host memory: about {:.2f} GB (input {:.2f}, float32 accumulator {:.2f}, output {:.2f}, "
           "{}planes in flight <= {:.2f})",
           (double(input.size_bytes()) + 4.0 * out_nz * ny * nx + out_bytes + map_bytes + p.group_bytes) / kGiB,
           double(input.size_bytes()) / kGiB, 4.0 * out_nz * ny * nx / kGiB, out_bytes / kGiB,
           uncertainty ? fmt::format("uncertainty map {:.2f}, ", map_bytes / kGiB) : "", p.group_bytes / kGiB);
  Volume acc(Shape3{out_nz, ny, nx}, DType::F32, voxel, input.unit());
  at::Tensor acc_t = to_tensor(acc).data;
  const double range = norm.hi > norm.lo ? norm.hi - norm.lo : 1.0;  // as the denormalisation
  Volume umap;
  at::Tensor umap_t;
  if (uncertainty) {
    umap = Volume(Shape3{out_nz, ny, nx}, DType::F32, voxel, input.unit());
    umap_t = to_tensor(umap).data;
  }
  {
    MemoryStorage storage(input, acc_t, umap_t, p.tta ? 4 : 1, p.fuse, range);
    reconstruct_into(input.shape(), input.voxel_size(), input.unit(), params, restorer, storage,
                     uncertainty != nullptr, &rep);
  }
  const double group_peak = rep.host_bytes;
  rep.host_bytes =
      static_cast<double>(input.size_bytes()) + double(acc.size_bytes()) + out_bytes + map_bytes + group_peak;

  // Denormalise: float32 in place (same arithmetic as ops' denormalize), integers into a
  // new volume with saturation counted.
  Volume out;
  if (out_dtype == DType::F32) {
    denormalize_inplace(acc, norm, &rep.clip);
    out = acc;
  } else {
    acc_t = at::Tensor();  // the tensor view shares the buffer: drop it with the volume
    out = denormalize(acc, norm, out_dtype, &rep.clip);
    acc = Volume();
  }
  out.set_voxel_size(voxel);
  out.set_unit(input.unit());
  if (rep.clip.below + rep.clip.above > 0) log_warn("{}", rep.clip.summary());
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  log_info("reconstructed {} -> {} in {}", to_string(input.shape()), to_string(out.shape()),
           Progress::format_duration(rep.seconds));
  if (uncertainty) {
    umap_t = at::Tensor();
    *uncertainty = std::move(umap);
  }
  if (report) *report = rep;
  return out;
}

}  // namespace isoprompt
