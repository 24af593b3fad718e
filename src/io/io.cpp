// read_volume / write_volume: the plane reader and writer run over the whole volume; the
// format comes from the path (see parse_volume_path).
#include "isoprompt/io.h"

#include <unistd.h>

#include <filesystem>

#include "io/formats.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"

namespace fs = std::filesystem;

namespace isoprompt {

Volume read_volume(const std::string& path, const ReadOptions& opts, TiffFileInfo* info) {
  // The plane reader over all planes, with the memory check the plane reader skips.
  const std::unique_ptr<io::PlaneSource> src = io::open_plane_source(path, opts, true);
  bool warned = false;
  Volume v = io::read_source_planes(*src, 0, src->shape.z, opts, warned);
  if (info) *info = src->info;
  return v;
}

void write_volume(const std::string& path, const Volume& v, const WriteOptions& opts) {
  io::SinkOptions so;
  so.whole = &v;
  const std::unique_ptr<io::PlaneSink> sink =
      io::open_plane_sink(path, io::volume_meta(v), opts, so);
  sink->write(static_cast<const uint8_t*>(v.raw()), v.nz());
  sink->commit();
}

void check_input_volume(const std::string& path, const std::string& what) {
  const VolumePath vp = parse_volume_path(path);
  if (vp.format != VolumeFormat::Zarr) return check_input_file(vp.file, what);
  std::error_code ec;
  if (!fs::exists(vp.file, ec)) throw_input("{} not found: {}", what, vp.file);
  if (!fs::is_directory(vp.file, ec))
    throw_input("{} is not a Zarr store (a directory): {}", what, vp.file);
}

namespace io {

int select_index(int requested, int64_t n, const char* what, const char* flag,
                 const std::string& path) {
  if (requested < 0) {
    if (n > 1) throw_input("{} has {} {}s: choose one with {} (0..{})", path, n, what, flag, n - 1);
    return 0;
  }
  if (requested >= n)
    throw_input("{} {} is out of range for {}: it has {} {}{} (0..{})", flag, requested, path, n,
                what, n == 1 ? "" : "s", n - 1);
  return requested;
}

std::string human_size(double b) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024 && u < 6) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} bytes", b) : fmt::format("{:.1f} {}", b, units[u]);
}

void check_fits_in_memory(double need, Shape3 shape, DType dtype, const std::string& path) {
  const long n_phys = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
  const double ram = n_phys > 0 && page_size > 0 ? double(n_phys) * double(page_size) : 0.0;
  if (ram > 0 && need > ram)
    throw_input("{} is too large for this machine: {} {} needs {} but there are {} of memory", path,
                to_string(shape), dtype_name(dtype), human_size(need), human_size(ram));
}

}  // namespace io
}  // namespace isoprompt
