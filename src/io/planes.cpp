// PlaneReader / PlaneWriter: the per-format plane sources and sinks (formats.h) with the
// range checks and the NaN policy, which read_volume / write_volume share (io.cpp).
#include "isoprompt/planes.h"

#include <cstring>

#include "core/nonfinite.h"
#include "io/formats.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/stats.h"

namespace isoprompt {
namespace io {

std::unique_ptr<PlaneSource> open_plane_source(const std::string& path, const ReadOptions& opts,
                                               bool whole_volume) {
  switch (parse_volume_path(path).format) {
    case VolumeFormat::Zarr:
      return open_zarr_source(path, opts, whole_volume);
    case VolumeFormat::Hdf5:
      return open_hdf5_source(path, opts, whole_volume);
    case VolumeFormat::Tiff:
      break;
  }
  return open_tiff_source(path, opts, whole_volume);
}

std::unique_ptr<PlaneSink> open_plane_sink(const std::string& path, const VolumeMeta& meta,
                                           const WriteOptions& opts, const SinkOptions& so) {
  switch (parse_volume_path(path).format) {
    case VolumeFormat::Zarr:
      return open_zarr_sink(path, meta, opts, so);
    case VolumeFormat::Hdf5:
      return open_hdf5_sink(path, meta, opts, so);
    case VolumeFormat::Tiff:
      break;
  }
  return open_tiff_sink(path, meta, opts, so);
}

namespace {

// Planes `v` (z0, n planes of the volume) with their neighbours z0 - 1 and z0 + n, where
// the volume has them: the 3x3x3 neighbourhoods replace_non_finite takes its medians from.
// Returns the index of v's first plane in the result.
Volume with_neighbours(PlaneSource& src, const Volume& v, int64_t z0, int64_t& first) {
  const int64_t n = v.nz();
  const bool before = z0 > 0, after = z0 + n < src.shape.z;
  first = before ? 1 : 0;
  Volume ext({n + first + (after ? 1 : 0), v.ny(), v.nx()}, v.dtype(), v.voxel_size(), v.unit());
  const size_t plane = v.size_bytes() / static_cast<size_t>(n);
  auto* dst = static_cast<uint8_t*>(ext.raw());
  if (before) std::memcpy(dst, src.read(z0 - 1, 1).raw(), plane);
  std::memcpy(dst + static_cast<size_t>(first) * plane, v.raw(), v.size_bytes());
  if (after)
    std::memcpy(dst + static_cast<size_t>(first + n) * plane, src.read(z0 + n, 1).raw(), plane);
  return ext;
}

}  // namespace

Volume read_source_planes(PlaneSource& src, int64_t z0, int64_t n, const ReadOptions& opts,
                          bool& warned) {
  const int64_t nz = src.shape.z;
  if (z0 < 0 || n < 1 || z0 > nz || n > nz - z0)
    throw_input("planes {}..{} are outside {}: it has {} planes (0..{})", z0, z0 + n - 1, src.where,
                nz, nz - 1);
  Volume v = src.read(z0, n);
  if (v.dtype() != DType::F32) return v;
  const NonFiniteReport nf = find_non_finite(v);
  src.info.nan_count += nf.nan_count;
  src.info.inf_count += nf.inf_count;
  if (nf.count() == 0) return v;
  // Positions are the whole volume's; a part names the planes it counted.
  const bool whole = z0 == 0 && n == nz;
  const std::string part = whole ? "" : fmt::format(" in planes {}..{}", z0, z0 + n - 1);
  const int64_t first_z = z0 + nf.first_z;
  if (opts.nan == NanPolicy::Refuse)
    throw_input(
        "{} contains {} NaN and {} Inf voxels{} (the first at z {}, y {}, x {}): refused, as they "
        "would spread through the result; pass --nan replace to replace them by the median of "
        "their finite neighbours",
        src.where, nf.nan_count, nf.inf_count, part, first_z, nf.first_y, nf.first_x);
  if (opts.nan == NanPolicy::Replace) {
    if (whole) {
      replace_non_finite(v);
    } else {
      int64_t first = 0, isolated = -1;
      Volume ext = with_neighbours(src, v, z0, first);
      if (!core::replace_non_finite_planes(ext, first, first + n, false, &isolated)) {
        const int64_t plane = v.ny() * v.nx();
        throw_input(
            "{}: --nan replace needs the whole volume in memory here: the non-finite voxel at z "
            "{}, y {}, x {} has no finite neighbour, and such a voxel gets the median of all "
            "finite voxels of the volume",
            src.where, z0 - first + isolated / plane, isolated % plane / v.nx(), isolated % v.nx());
      }
      const size_t plane_bytes = v.size_bytes() / static_cast<size_t>(n);
      const auto* replaced =
          static_cast<const uint8_t*>(ext.raw()) + static_cast<size_t>(first) * plane_bytes;
      std::memcpy(v.raw(), replaced, v.size_bytes());
    }
    log_warn(
        "{}: replaced {} NaN and {} Inf voxels{} (the first at z {}, y {}, x {}) by the median of "
        "their finite 3x3x3 neighbours",
        src.where, nf.nan_count, nf.inf_count, part, first_z, nf.first_y, nf.first_x);
  } else if (!warned) {
    log_warn("{} contains {} NaN and {} Inf voxels{}", src.where, nf.nan_count, nf.inf_count, part);
    warned = true;
  }
  return v;
}

}  // namespace io

// ---- PlaneReader ------------------------------------------------------------------------

struct PlaneReader::Impl {
  std::unique_ptr<io::PlaneSource> src;
  ReadOptions opts;
  bool warned = false;  // NanPolicy::Keep warns once
};

PlaneReader::PlaneReader(const std::string& path, const ReadOptions& opts)
    : impl_(std::make_unique<Impl>()) {
  impl_->src = io::open_plane_source(path, opts, false);
  impl_->opts = opts;
}

PlaneReader::~PlaneReader() = default;

Shape3 PlaneReader::shape() const {
  return impl_->src->shape;
}
DType PlaneReader::dtype() const {
  return impl_->src->dtype;
}
VoxelSize PlaneReader::voxel_size() const {
  return impl_->src->voxel;
}
const std::string& PlaneReader::unit() const {
  return impl_->src->unit;
}
const TiffFileInfo& PlaneReader::info() const {
  return impl_->src->info;
}

Volume PlaneReader::read_planes(int64_t z0, int64_t n) {
  return io::read_source_planes(*impl_->src, z0, n, impl_->opts, impl_->warned);
}

// ---- PlaneWriter ------------------------------------------------------------------------

struct PlaneWriter::Impl {
  std::string path;
  io::VolumeMeta meta;
  std::unique_ptr<io::PlaneSink> sink;
  int64_t written = 0;
  bool committed = false, failed = false;
};

PlaneWriter::PlaneWriter(const std::string& path, Shape3 shape, DType dtype, VoxelSize voxel,
                         const std::string& unit, const WriteOptions& opts)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->meta = io::VolumeMeta{shape, dtype, voxel, unit};
  impl_->sink = io::open_plane_sink(path, impl_->meta, opts, {});
}

PlaneWriter::~PlaneWriter() = default;

int64_t PlaneWriter::planes_written() const {
  return impl_->written;
}

void PlaneWriter::write_planes(const Volume& planes) {
  Impl& w = *impl_;
  const Shape3 s = w.meta.shape;
  if (w.committed) throw_error("{}: write_planes after commit", w.path);
  // A sink that failed half-way (disk full) is at an unknown position in its file.
  if (w.failed) throw_error("{}: an earlier write of planes failed", w.path);
  if (planes.empty() || planes.ny() != s.y || planes.nx() != s.x || planes.dtype() != w.meta.dtype)
    throw_error("{}: planes of {} {} do not fit a volume of {} {}", w.path,
                to_string(planes.shape()), dtype_name(planes.dtype()), to_string(s),
                dtype_name(w.meta.dtype));
  if (planes.nz() > s.z - w.written)
    throw_error("{}: {} more planes after {} would pass the volume's {}", w.path, planes.nz(),
                w.written, s.z);
  try {
    w.sink->write(static_cast<const uint8_t*>(planes.raw()), planes.nz());
  } catch (...) {
    w.failed = true;
    throw;
  }
  w.written += planes.nz();
}

void PlaneWriter::commit() {
  Impl& w = *impl_;
  if (w.committed) return;
  if (w.failed) throw_error("{}: an earlier write of planes failed", w.path);
  if (w.written < w.meta.shape.z)
    throw_error("{}: {} of {} planes were written", w.path, w.written, w.meta.shape.z);
  w.sink->commit();
  w.committed = true;
}

}  // namespace isoprompt
