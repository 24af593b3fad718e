// reconstruct(): z upsampling, XZ and YZ restoration, fusion, denormalisation.
//
// Memory: planes are upsampled from the input a group at a time, so the only
// full-size buffers are the input, one float32 accumulator of the output's size (it
// holds the XZ result, then the fused result) and the output in its dtype (float32
// output is denormalised in place in the accumulator, so it needs no second buffer).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "isoprompt/error.h"
#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/progress.h"
#include "isoprompt/runtime.h"
#include "isoprompt/tensor.h"

namespace isoprompt {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kGiB = 1024.0 * kMiB;
// Host memory for one group of planes (input copy, upsampled, normalised, restored).
constexpr double kGroupBytes = 256.0 * kMiB;
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

Volume reconstruct(const Volume& input, const ReconstructParams& p, const SliceRestorer& restorer,
                   ReconstructReport* report) {
  const auto t_start = std::chrono::steady_clock::now();
  if (input.empty()) throw_input("cannot reconstruct an empty volume ({})", to_string(input.shape()));
  if (!std::isfinite(p.factor) || p.factor < 1.0)
    throw_input("z factor {} must be a finite number >= 1", p.factor);
  const double k = p.factor;
  const int64_t nz = input.nz(), ny = input.ny(), nx = input.nx();
  const int64_t out_nz = reconstructed_nz(nz, k);
  const DType out_dtype = p.out_dtype.value_or(input.dtype());
  VoxelSize voxel = input.voxel_size();
  voxel.z = input.voxel_size().z / k;  // exact: never rounded to fit the grid

  ReconstructReport rep;
  rep.factor = k;
  rep.out_nz = out_nz;
  rep.voxel = voxel;

  log_info("z factor {} (used exactly): {} -> {} planes, voxel z {:.6g} -> {:.6g} {} (y {:.6g}, x {:.6g})",
           k, nz, out_nz, input.voxel_size().z, voxel.z, input.unit(), voxel.y, voxel.x);
  if (std::abs(voxel.z - voxel.x) > 0.01 * voxel.x)
    log_warn("output voxels are not isotropic: z {:.6g} vs x {:.6g} {} (the factor z/x would be {:.6g})",
             voxel.z, voxel.x, input.unit(), input.voxel_size().anisotropy());
  check_interrupted();

  // Interpolation only: exactly ops' upsample, converted to the output dtype.
  if (!restorer) {
    rep.host_bytes = static_cast<double>(input.size_bytes()) + 4.0 * out_nz * ny * nx +
                     (out_dtype == DType::F32 ? 0.0 : double(dtype_size(out_dtype)) * out_nz * ny * nx);
    Volume up = upsample(input, 0, k, p.interp, out_nz);
    check_interrupted();
    Volume out = denormalize(up, Normalizer{0.0, 1.0}, out_dtype, &rep.clip);
    out.set_voxel_size(voxel);
    out.set_unit(input.unit());
    if (rep.clip.below + rep.clip.above > 0) log_warn("{}", rep.clip.summary());
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    if (report) *report = rep;
    return out;
  }

  c10::InferenceMode guard;
  const Normalizer norm = p.norm ? *p.norm : percentile_normalizer(input);
  rep.norm = norm;
  log_info("normalisation (whole volume): [{:.6g}, {:.6g}] -> [0, 1]", norm.lo, norm.hi);

  TileRequest req;
  req.tile = p.tile;
  req.overlap = p.overlap;
  req.batch = p.batch;
  req.max_memory_gb = p.max_memory_gb;
  req.cost = p.cost;
  if (p.device.is_cpu()) req.max_batch_pixels = kCpuBatchPixels;
  rep.xz_plan = plan_tiles(out_nz, nx, req);
  rep.yz_plan = plan_tiles(out_nz, ny, req);
  log_info("tiling: {}; {}; batch {}, about {:.2f} GB per forward pass (budget {} GB)",
           plan_text("XZ", out_nz, nx, rep.xz_plan), plan_text("YZ", out_nz, ny, rep.yz_plan),
           rep.xz_plan.batch, std::max(rep.xz_plan.bytes_per_batch, rep.yz_plan.bytes_per_batch) / kGiB,
           p.max_memory_gb);

  // The accumulator: the XZ result, then the fused result, then (float32 output) the output.
  const double out_bytes = out_dtype == DType::F32 ? 0.0 : double(dtype_size(out_dtype)) * out_nz * ny * nx;
  log_info("host memory: about {:.2f} GB (input {:.2f}, float32 accumulator {:.2f}, output {:.2f}, "
           "planes in flight <= 0.25)",
           (double(input.size_bytes()) + 4.0 * out_nz * ny * nx + out_bytes) / kGiB + 0.25,
           double(input.size_bytes()) / kGiB, 4.0 * out_nz * ny * nx / kGiB, out_bytes / kGiB);
  Volume acc(Shape3{out_nz, ny, nx}, DType::F32, voxel, input.unit());
  at::Tensor acc_t = to_tensor(acc).data;
  const double lo = norm.lo, scale = norm.scale();

  Progress progress("reconstruct", ny + nx, "slices");
  int64_t done = 0;
  double group_peak = 0;
  for (const Plane which : {Plane::XZ, Plane::YZ}) {
    const bool xz = which == Plane::XZ;
    const TilePlan& plan = xz ? rep.xz_plan : rep.yz_plan;
    const int64_t n_planes = xz ? ny : nx, width = xz ? nx : ny;
    // Planes per group: as many as the host group budget allows (the per-group work,
    // block extraction and upsampling, has a fixed cost), and at least one batch of tiles.
    const double plane_bytes = 4.0 * 4.0 * double(out_nz) * double(width);
    const int64_t tpp = plan.tiles_per_plane();
    int64_t group = std::max<int64_t>(1, static_cast<int64_t>(kGroupBytes / plane_bytes));
    group = std::max(group, (plan.batch + tpp - 1) / tpp);
    group = std::min(group, n_planes);
    group_peak = std::max(group_peak, plane_bytes * double(group));
    for (int64_t first = 0; first < n_planes; first += group) {
      const int64_t count = std::min(group, n_planes - first);
      at::Tensor up;
      {
        // Float input is normalised before the interpolation (which is linear, so the order
        // does not matter in exact arithmetic): finite values near +-3.4e38 would overflow
        // float32 in the interpolation or in x - lo. Integer input cannot, and keeps its order.
        Volume raw = extract_block(input, which, first, count);
        const bool normalised = raw.dtype() == DType::F32;
        if (normalised) normalize_inplace(raw, norm);
        const Volume block = upsample(raw, 0, k, p.interp, out_nz);
        const at::Tensor t = to_tensor(block).data;  // (out_nz, count, nx) or (out_nz, ny, count)
        const at::Tensor planes = xz ? t.permute({1, 0, 2}) : t.permute({2, 0, 1});  // P x Z x W
        up = normalised ? planes.clone() : planes.sub(lo).mul_(scale);
      }
      int64_t tiles_done = 0;
      const at::Tensor restored = restore_planes(up, restorer, plan, p.device, [&](int64_t n) {
        tiles_done += n;
        progress.update(done + tiles_done / tpp);  // also the Ctrl-C safe point
      });
      at::Tensor dst = xz ? acc_t.narrow(1, first, count).permute({1, 0, 2})
                          : acc_t.narrow(2, first, count).permute({2, 0, 1});
      if (xz) {
        dst.copy_(restored);
      } else {
        fuse_into(dst, restored, p.fuse);
      }
      done += count;
      progress.update(done);
    }
  }
  progress.finish();

  rep.planes = ny + nx;
  rep.host_bytes = static_cast<double>(input.size_bytes()) + double(acc.size_bytes()) + out_bytes + group_peak;

  // Denormalise: float32 in place (same arithmetic as ops' denormalize), integers into a
  // new volume with saturation counted.
  Volume out;
  if (out_dtype == DType::F32) {
    float* d = acc.data<float>();
    const double range = norm.hi > norm.lo ? norm.hi - norm.lo : 1.0;
    const int64_t count = acc.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) d[i] = static_cast<float>(double(d[i]) * range + lo);
    rep.clip = ClipReport{0, 0, count, -INFINITY, INFINITY};
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
  if (report) *report = rep;
  return out;
}

}  // namespace isoprompt
