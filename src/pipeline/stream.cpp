// The streaming restore (see stream.h): reconstruct_into() with storage on disk.
#include "stream.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/ops.h"
#include "isoprompt/planes.h"
#include "isoprompt/progress.h"
#include "isoprompt/ranks.h"
#include "isoprompt/runtime.h"
#include "isoprompt/stats.h"
#include "isoprompt/tensor.h"

namespace fs = std::filesystem;

namespace isoprompt {
namespace stream {

namespace {

// Reading and writing passes show progress above this size (as read_volume and write_volume).
constexpr double kShowProgressBytes = 256.0 * 1024 * 1024;

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Written aside and renamed, so a file that exists is whole.
void write_text(const std::string& path, const std::string& text) {
  const std::string part = path + ".part";
  {
    std::ofstream f(part, std::ios::trunc);
    f << text;
    f.flush();
    if (!f) throw_error("cannot write {}: {}", part, std::strerror(errno));
  }
  if (std::rename(part.c_str(), path.c_str()) != 0)
    throw_error("cannot rename {} to {}: {}", part, path, std::strerror(errno));
}

std::string scratch_dir_of(const RestoreJob& job) {
  std::string out = parse_volume_path(job.output).file;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const fs::path p(out);
  const std::string name = p.filename().string() + ".scratch";
  if (!job.scratch.empty()) return (fs::path(job.scratch) / name).string();
  return (p.parent_path() / ("." + name)).string();
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The chunks of `w` covering the box [origin, origin + size) (chunk-aligned, or ending at
// the array's edge) are all there.
bool box_written(const ZarrWriter& w, Shape3 origin, Shape3 size) {
  const Shape3 c = w.chunk_shape();
  const Shape3 s = w.level_shape(0);
  for (int64_t cz = origin.z / c.z; cz < ceil_div(std::min(s.z, origin.z + size.z), c.z); ++cz)
    for (int64_t cy = origin.y / c.y; cy < ceil_div(std::min(s.y, origin.y + size.y), c.y); ++cy)
      for (int64_t cx = origin.x / c.x; cx < ceil_div(std::min(s.x, origin.x + size.x), c.x); ++cx)
        if (!w.has_chunk(cz, cy, cx)) return false;
  return true;
}

// Writes `block` (C order, the writer's dtype) at `origin`: every chunk it covers, which
// it must cover whole (or up to the array's edge).
void write_box(ZarrWriter& w, Shape3 origin, const Volume& block) {
  const Shape3 c = w.chunk_shape();
  const Shape3 s = w.level_shape(0);
  const Shape3 b = block.shape();
  if (origin.z % c.z || origin.y % c.y || origin.x % c.x)
    throw Error(fmt::format("write_box at {} is not on the chunk grid {}", to_string(origin), to_string(c)));
  const size_t item = dtype_size(block.dtype());
  const auto* src = static_cast<const uint8_t*>(block.raw());
  const int64_t gz = ceil_div(b.z, c.z), gy = ceil_div(b.y, c.y), gx = ceil_div(b.x, c.x);
  std::string first_error;
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < gz * gy * gx; ++i) {
    const int64_t iz = i / (gy * gx), iy = i / gx % gy, ix = i % gx;
    const int64_t z0 = iz * c.z, y0 = iy * c.y, x0 = ix * c.x;
    const int64_t nz = std::min(c.z, b.z - z0), ny = std::min(c.y, b.y - y0), nx = std::min(c.x, b.x - x0);
    const bool whole = (nz == c.z || origin.z + z0 + nz == s.z) && (ny == c.y || origin.y + y0 + ny == s.y) &&
                       (nx == c.x || origin.x + x0 + nx == s.x);
    try {
      if (!whole) throw Error(fmt::format("write_box: block {} at {} does not cover chunk {},{},{} of {}",
                                          to_string(b), to_string(origin), iz, iy, ix, to_string(c)));
      std::vector<uint8_t> chunk(static_cast<size_t>(nz * ny * nx) * item);
      for (int64_t z = 0; z < nz; ++z)
        for (int64_t y = 0; y < ny; ++y)
          std::memcpy(chunk.data() + static_cast<size_t>((z * ny + y) * nx) * item,
                      src + static_cast<size_t>(((z0 + z) * b.y + y0 + y) * b.x + x0) * item,
                      static_cast<size_t>(nx) * item);
      w.write_chunk(origin.z / c.z + iz, origin.y / c.y + iy, origin.x / c.x + ix, chunk.data());
    } catch (const std::exception& e) {
#pragma omp critical(stream_write_box)
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (!first_error.empty()) throw Error(first_error);
}

Volume from_tensor(const at::Tensor& zyx, VoxelSize voxel, const std::string& unit) {
  const at::Tensor t = zyx.contiguous();
  Volume v(Shape3{t.size(0), t.size(1), t.size(2)}, DType::F32, voxel, unit);
  std::memcpy(v.raw(), t.data_ptr<float>(), v.size_bytes());
  return v;
}

void add_clip(ClipReport& into, const ClipReport& c) {
  into.below += c.below;
  into.above += c.above;
  into.total += c.total;
  into.min_value = c.min_value;
  into.max_value = c.max_value;
}

// Group width along the pass's plane axis: a power of two whose planes fit the group budget.
int64_t group_multiple(double group_bytes, double plane_bytes) {
  int64_t c = 1;
  while (c < 64 && double(2 * c) * plane_bytes <= group_bytes) c *= 2;
  return c;
}

// Under mpirun, group g of a pass belongs to rank g mod N; each rank writes only the chunks
// of its groups (no two ranks write one chunk).
bool mine(int64_t group_index) {
  return group_index % Ranks::size() == Ranks::rank();
}

// Runs `open` on rank 0 first, then on the others: a store is created (or found to be
// continued) once, before the other ranks open it.
template <class F>
void leader_first(F&& open) {
  if (Ranks::rank() == 0) open();
  Ranks::barrier();
  if (Ranks::rank() != 0) open();
}

// Output stores: written in place chunk by chunk (OME-Zarr, one level) or into the scratch
// directory and then plane by plane through PlaneWriter.
struct OutputStore {
  std::string path;
  WriteOptions opts;
  bool direct = false;
  std::unique_ptr<ZarrWriter> writer;
  std::function<std::unique_ptr<ZarrWriter>()> reopen;  // sees the chunks other ranks wrote
};

void open_output(OutputStore& o, const std::string& path, const WriteOptions& opts, Shape3 shape, DType dtype,
                 VoxelSize voxel, const std::string& unit, int64_t cx, Scratch& scratch, const char* scratch_name) {
  o.path = path;
  o.opts = opts;
  const VolumePath vp = parse_volume_path(path);
  o.direct = vp.format == VolumeFormat::Zarr && opts.zarr.levels <= 1;
  ZarrWriteOptions zo;
  if (o.direct) {
    zo = opts.zarr;
    // x chunks must match the groups of YZ planes; z and y as the user asked (or automatic).
    zo.chunks = {opts.zarr.chunks.z ? opts.zarr.chunks.z : std::min<int64_t>(shape.z, 64),
                 opts.zarr.chunks.y ? opts.zarr.chunks.y : std::min<int64_t>(shape.y, 256), cx};
    if (opts.zarr.chunks.x && opts.zarr.chunks.x != cx)
      log_warn("{}: chunks of {} px along x (not {}), to match the slabs of the streaming restore", path, cx,
               opts.zarr.chunks.x);
    std::string store = vp.file;
    while (store.size() > 1 && store.back() == '/') store.pop_back();
    const fs::path sp(store);
    zo.resume_dir = (sp.parent_path() / ("." + sp.filename().string() + ".partial")).string();
    o.reopen = [=] { return std::make_unique<ZarrWriter>(path, shape, dtype, voxel, unit, zo); };
  } else {
    zo.compressor = ZarrCompressor::None;
    zo.chunks = {std::min<int64_t>(shape.z, 64), std::min<int64_t>(shape.y, 256), cx};
    zo.resume_dir = scratch.path(std::string(scratch_name) + ".partial.zarr");
    const std::string store = scratch.path(std::string(scratch_name) + ".zarr");
    o.reopen = [=] { return std::make_unique<ZarrWriter>(store, shape, dtype, voxel, unit, zo); };
  }
  leader_first([&] { o.writer = o.reopen(); });
}

// Commits a direct store, or writes the scratch store plane by plane to its final format.
// Rank 0 only.
void finish_output(OutputStore& o, double budget_bytes) {
  if (o.direct) {
    if (Ranks::size() > 1) o.writer = o.reopen();
    o.writer->commit();
    return;
  }
  const Shape3 s = o.writer->level_shape(0);
  const std::string built = o.writer->build_dir();
  ZarrReader r(built + "/0");
  PlaneWriter pw(o.path, s, r.dtype(), r.voxel_size(), r.unit(), o.opts);
  const double plane = double(s.y * s.x) * double(dtype_size(r.dtype()));
  const int64_t step = std::clamp<int64_t>(static_cast<int64_t>(budget_bytes / 8 / plane), 1, s.z);
  std::unique_ptr<Progress> progress;
  if (plane * double(s.z) > kShowProgressBytes)
    progress = std::make_unique<Progress>("writing " + fs::path(parse_volume_path(o.path).file).filename().string(),
                                          s.z, "planes");
  for (int64_t z0 = 0; z0 < s.z; z0 += step) {
    const int64_t n = std::min(step, s.z - z0);
    Volume planes = r.read_box({z0, 0, 0}, {n, s.y, s.x});
    pw.write_planes(planes);
    if (progress) progress->update(z0 + n);
  }
  if (progress) progress->finish();
  pw.commit();
}

// The streamed job's storage for reconstruct_into.
class DiskStorage : public ReconstructStorage {
 public:
  DiskStorage(const Input& in, ZarrWriter& xz, ZarrWriter* xz_m2, ZarrWriter& out, ZarrWriter* map, int64_t multiple,
              const Normalizer& norm, DType out_dtype, int64_t n_var, Fuse fuse, int64_t out_nz)
      : in_(in), xz_(xz), xz_m2_(xz_m2), out_(out), map_(map), multiple_(multiple), norm_(norm),
        out_dtype_(out_dtype), n_var_(n_var), fuse_(fuse), out_nz_(out_nz) {}

  Volume read_input(Plane which, int64_t first, int64_t count) override {
    const Shape3 s = in_.shape();
    return which == Plane::XZ ? in_.read_box({0, first, 0}, {s.z, count, s.x})
                              : in_.read_box({0, 0, first}, {s.z, s.y, count});
  }
  bool done(Plane which, int64_t first, int64_t count) override {
    const Shape3 s = in_.shape();
    if (first == 0) group_ = count;  // groups come in order, all of this size but the last
    if (!mine(first / group_)) return true;
    if (which == Plane::XZ)
      return box_written(xz_, {0, first, 0}, {out_nz_, count, s.x}) &&
             (!xz_m2_ || box_written(*xz_m2_, {0, first, 0}, {out_nz_, count, s.x}));
    return box_written(out_, {0, 0, first}, {out_nz_, s.y, count}) &&
           (!map_ || box_written(*map_, {0, 0, first}, {out_nz_, s.y, count}));
  }
  int64_t group_multiple() const override { return multiple_; }
  void pass_done(Plane) override { Ranks::barrier(); }

  void put_xz(int64_t first, int64_t count, const at::Tensor& mean, const at::Tensor& m2) override {
    (void)count;
    // P x Z x W (P = y) -> z, y, x
    write_box(xz_, {0, first, 0}, from_tensor(mean.permute({1, 0, 2}), {}, ""));
    if (xz_m2_) {
      if (m2.defined())
        write_box(*xz_m2_, {0, first, 0}, from_tensor(m2.permute({1, 0, 2}), {}, ""));
      else
        write_box(*xz_m2_, {0, first, 0}, Volume({mean.size(1), mean.size(0), mean.size(2)}, DType::F32));
    }
  }
  void put_yz(int64_t first, int64_t count, const at::Tensor& mean, const at::Tensor& m2) override {
    const Shape3 s = in_.shape();
    ZarrReader xz_reader(xz_.build_dir() + "/0");
    Volume fused = xz_reader.read_box({0, 0, first}, {out_nz_, s.y, count});  // z, y, x
    at::Tensor f = to_tensor(fused).data;
    at::Tensor map_t;
    Volume umap;
    if (map_) {
      if (xz_m2_) {
        umap = ZarrReader(xz_m2_->build_dir() + "/0").read_box({0, 0, first}, {out_nz_, s.y, count});
      } else {
        umap = Volume(fused.shape(), DType::F32);
      }
      map_t = to_tensor(umap).data.permute({2, 0, 1});
    }
    const double range = norm_.hi > norm_.lo ? norm_.hi - norm_.lo : 1.0;
    fuse_group(f.permute({2, 0, 1}), map_t, mean, m2, n_var_, fuse_, range);
    ClipReport c;
    if (out_dtype_ == DType::F32) {
      denormalize_inplace(fused, norm_, &c);
      write_box(out_, {0, 0, first}, fused);
    } else {
      write_box(out_, {0, 0, first}, denormalize(fused, norm_, out_dtype_, &c));
    }
    add_clip(clip, c);
    if (map_) {
      const at::Tensor u = to_tensor(umap).data;
      map_sum += u.sum(c10::kDouble).item<double>();
      map_max = std::max(map_max, u.max().item<double>());
      write_box(*map_, {0, 0, first}, umap);
    }
  }

  ClipReport clip;
  double map_sum = 0, map_max = 0;

 private:
  const Input& in_;
  ZarrWriter &xz_, *xz_m2_, &out_, *map_;
  int64_t multiple_;
  Normalizer norm_;
  DType out_dtype_;
  int64_t n_var_;
  Fuse fuse_;
  int64_t out_nz_;
  int64_t group_ = 1;
};

}  // namespace

double physical_memory_gb() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) / kGiB : 0.0;
}

double default_max_memory_gb() {
  const double ram = physical_memory_gb();
  return ram > 0 ? 0.5 * ram : 4.0;
}

double in_memory_bytes(Shape3 shape, DType dtype, double k, DType out_dtype, bool map) {
  const double out = double(reconstructed_nz(shape.z, k)) * double(shape.y) * double(shape.x);
  return double(shape.numel()) * double(dtype_size(dtype)) + 4.0 * out +
         (out_dtype == DType::F32 ? 0.0 : double(dtype_size(out_dtype)) * out) + (map ? 4.0 * out : 0.0) +
         256.0 * 1024 * 1024;
}

// ---- Scratch -------------------------------------------------------------------------

Scratch::Scratch(const RestoreJob& job, const std::string& fingerprint) : dir_(scratch_dir_of(job)) {
  // Rank 0 decides (continue, start over, refuse); the others then find it ready.
  if (Ranks::rank() != 0) {
    Ranks::barrier();
    resumed_ = true;
    return;
  }
  open(fingerprint);
  Ranks::barrier();
}

void Scratch::open(const std::string& fingerprint) {
  std::error_code ec;
  const std::string job_file = dir_ + "/job.txt";
  if (fs::is_directory(dir_, ec)) {
    if (read_text(job_file) == fingerprint) {
      resumed_ = true;
      log_info("continuing the interrupted run in {} (delete it to start over)", dir_);
      return;
    }
    if (!fs::exists(job_file, ec) && !fs::is_empty(dir_, ec))
      throw_input("scratch directory {} exists and is not isoprompt's (no job.txt): remove it or pass --scratch",
                  dir_);
    log_info("{} holds another job's state: starting over", dir_);
    fs::remove_all(dir_, ec);
  }
  if (!fs::create_directories(dir_, ec) && ec)
    throw_input("cannot create the scratch directory {}: {}", dir_, ec.message());
  write_text(job_file, fingerprint);
}

Scratch::~Scratch() {
  if (!removed_ && std::uncaught_exceptions() > 0 && Ranks::rank() == 0)
    log_warn("the scratch directory {} keeps the work done so far: run the same command again to continue "
             "(or delete it)",
             dir_);
}

void Scratch::remove() {
  removed_ = true;
  if (Ranks::rank() != 0) return;
  std::error_code ec;
  fs::remove_all(dir_, ec);
  if (ec) log_warn("could not remove the scratch directory {}: {}", dir_, ec.message());
}

// ---- Input ---------------------------------------------------------------------------

Input::Input(const RestoreJob& job, Scratch& scratch, double budget_bytes, PlaneReader& pr)
    : job_(job), scratch_(scratch), budget_(budget_bytes) {
  if (parse_volume_path(job.input).format == VolumeFormat::Zarr) {
    reader_ = std::make_unique<ZarrReader>(job.input, job.read);
    voxel_ = reader_->voxel_size();
    unit_ = reader_->unit();
    calibrated_ = reader_->layout().calibrated;
    return;
  }
  // Other formats are copied once, plane by plane, into a store read box by box.
  voxel_ = pr.voxel_size();
  unit_ = pr.unit();
  calibrated_ = pr.info().calibrated;
  const Shape3 s = pr.shape();
  const std::string copy = scratch.path("input.zarr");
  std::error_code ec;
  if (Ranks::rank() != 0) {
    Ranks::barrier();
  } else if (!fs::is_directory(copy, ec)) {
    const double plane = double(s.y * s.x) * double(dtype_size(pr.dtype()));
    ZarrWriteOptions zo;
    zo.compressor = ZarrCompressor::None;
    zo.chunks = {std::clamp<int64_t>(static_cast<int64_t>(budget_bytes / 8 / plane), 1, std::min<int64_t>(s.z, 64)),
                 std::min<int64_t>(s.y, 64), std::min<int64_t>(s.x, 64)};
    zo.resume_dir = scratch.path("input.partial.zarr");
    ZarrWriter w(copy, s, pr.dtype(), voxel_, unit_, zo);
    const int64_t cz = w.chunk_shape().z;
    std::unique_ptr<Progress> progress;
    if (plane * double(s.z) > kShowProgressBytes)
      progress = std::make_unique<Progress>("copying the input", s.z, "planes");
    for (int64_t z0 = 0; z0 < s.z; z0 += cz) {
      const int64_t n = std::min(cz, s.z - z0);
      if (!box_written(w, {z0, 0, 0}, {n, s.y, s.x})) {
        const Volume planes = pr.read_planes(z0, n);
        w.write_slab(z0, n, planes.raw());
      }
      if (progress) progress->update(z0 + n);
    }
    if (progress) progress->finish();
    w.commit();
  }
  if (Ranks::rank() == 0) Ranks::barrier();
  reader_ = std::make_unique<ZarrReader>(copy + "/0");
}

Volume Input::read_box(Shape3 origin, Shape3 size) const {
  Volume v = reader_->read_box(origin, size);
  v.set_voxel_size(voxel_);
  v.set_unit(unit_);
  return v;
}

Normalizer Input::normalizer(double pmin, double pmax) const {
  if (!(pmin >= 0 && pmax <= 100 && pmin < pmax))
    throw_input("percentiles must satisfy 0 <= low < high <= 100, got {} and {}", pmin, pmax);
  const std::string cache = scratch_.path(fmt::format("norm-{}-{}.txt", pmin, pmax));
  if (Ranks::size() > 1) {
    // Rank 0 streams the percentiles; the others read what it wrote.
    if (Ranks::rank() == 0) {
      const Normalizer n = streamed_normalizer(cache, pmin, pmax);
      Ranks::barrier();
      return n;
    }
    Ranks::barrier();
  }
  return streamed_normalizer(cache, pmin, pmax);
}

Normalizer Input::streamed_normalizer(const std::string& cache, double pmin, double pmax) const {
  {
    std::istringstream in(read_text(cache));
    Normalizer n;
    if (in >> n.lo >> n.hi) return n;
  }
  const Shape3 s = shape();
  const double plane = double(s.y * s.x) * double(dtype_size(dtype()));
  const int64_t step = std::clamp<int64_t>(static_cast<int64_t>(budget_ / 8 / plane), 1, s.z);
  int pass = 0;
  const std::vector<double> p = percentiles_of_slabs(
      dtype(),
      [&](const std::function<void(const Volume&)>& f) {
        ++pass;
        for (int64_t z0 = 0; z0 < s.z; z0 += step) {
          const Volume slab = read_box({z0, 0, 0}, {std::min(step, s.z - z0), s.y, s.x});
          if (pass == 1 && slab.dtype() == DType::F32 && job_.read.nan != NanPolicy::Keep) {
            const NonFiniteReport nf = find_non_finite(slab);
            if (nf.count() > 0)
              throw_input(
                  "{} contains NaN or Inf voxels (the first at z {}, y {}, x {}): refused, as they would spread "
                  "through the result{}",
                  job_.input, z0 + nf.first_z, nf.first_y, nf.first_x,
                  job_.read.nan == NanPolicy::Replace ? " (--nan replace needs the volume in memory: raise --max-memory)"
                                                       : "");
          }
          f(slab);
        }
      },
      {pmin, pmax});
  const Normalizer n{p[0], p[1]};
  write_text(cache, fmt::format("{:.17g} {:.17g}\n", n.lo, n.hi));
  return n;
}

Volume Input::tuning_planes(double budget_bytes) const {
  const Shape3 s = shape();
  const double plane = double(s.y * s.x) * double(dtype_size(dtype()));
  const int64_t fit = static_cast<int64_t>(budget_bytes / plane);
  if (fit >= s.z) return read_box({0, 0, 0}, s);
  const int64_t n = std::max<int64_t>(2, fit);
  log_info("tuning on {} of the {} XY planes (evenly spaced in z), which fit the memory budget", n, s.z);
  Volume v({n, s.y, s.x}, dtype(), voxel_, unit_);
  const size_t bytes = static_cast<size_t>(plane);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t z = std::min(s.z - 1, static_cast<int64_t>((double(i) + 0.5) * double(s.z) / double(n)));
    const Volume p = read_box({z, 0, 0}, {1, s.y, s.x});
    std::memcpy(static_cast<uint8_t*>(v.raw()) + static_cast<size_t>(i) * bytes, p.raw(), bytes);
  }
  return v;
}

// ---- Reconstruction ------------------------------------------------------------------

Written reconstruct(const Input& in, Scratch& scratch, const ReconstructParams& params, const SliceRestorer& restorer,
                    const std::string& output, const WriteOptions& out_opts, const std::string& map_path,
                    const WriteOptions& map_opts, double budget_bytes) {
  const auto t_start = std::chrono::steady_clock::now();
  const Shape3 s = in.shape();
  const DType out_dtype = params.out_dtype.value_or(in.dtype());
  const bool want_map = !map_path.empty();
  if (!restorer && (params.tta || want_map))
    throw_input("test-time augmentation and the uncertainty map need a network");
  Written w;
  // The geometry only: reconstruct_into plans the tiles (and warns about them) itself.
  ReconstructReport plan = reconstruct_geometry(s, in.voxel_size(), params.factor);
  const int64_t out_nz = plan.out_nz;
  const Shape3 out_shape{out_nz, s.y, s.x};
  const double plane_bytes = (params.tta ? 10.0 : 4.0) * 4.0 * double(out_nz) * double(std::max(s.x, s.y));
  const int64_t multiple = group_multiple(params.group_bytes, plane_bytes);
  log_info(
      "streaming: {} -> {} ({} GB as float32) in slabs of {} planes, memory budget {:.2f} GB, scratch {}",
      to_string(s), to_string(out_shape), fmt::format("{:.2f}", 4.0 * double(out_shape.numel()) / kGiB), multiple,
      budget_bytes / kGiB, scratch.dir());

  OutputStore out, map;
  open_output(out, output, out_opts, out_shape, out_dtype, plan.voxel, in.unit(), multiple, scratch, "out");
  if (want_map)
    open_output(map, map_path, map_opts, out_shape, DType::F32, plan.voxel, in.unit(), multiple, scratch, "map");

  if (!restorer) {
    // Interpolation: upsampling along z is per column, so slabs of x give exactly ops' upsample.
    check_interrupted();
    log_info("z factor {} (used exactly): {} -> {} planes, voxel z {:.6g} -> {:.6g} {}", params.factor, s.z,
             out_nz, in.voxel_size().z, plan.voxel.z, in.unit());
    Progress progress("interpolate", s.x, "x planes");
    for (int64_t x0 = 0; x0 < s.x; x0 += multiple) {
      const int64_t n = std::min(multiple, s.x - x0);
      if (mine(x0 / multiple) && !box_written(*out.writer, {0, 0, x0}, {out_nz, s.y, n})) {
        const Volume up = upsample(in.read_box({0, 0, x0}, {s.z, s.y, n}), 0, params.factor, params.interp, out_nz);
        ClipReport c;
        write_box(*out.writer, {0, 0, x0}, denormalize(up, Normalizer{0.0, 1.0}, out_dtype, &c));
        add_clip(plan.clip, c);
      }
      progress.update(x0 + n);
    }
    progress.finish();
    Ranks::barrier();
    w.report = plan;
  } else {
    ZarrWriteOptions zo;
    zo.compressor = ZarrCompressor::None;
    zo.chunks = {std::min<int64_t>(out_nz, 64), multiple, multiple};
    zo.resume_dir = scratch.path("xz.partial.zarr");
    std::unique_ptr<ZarrWriter> xz, xz_m2;
    leader_first([&] { xz = std::make_unique<ZarrWriter>(scratch.path("xz.zarr"), out_shape, DType::F32, plan.voxel,
                                                          in.unit(), zo); });
    if (want_map && params.tta) {
      zo.resume_dir = scratch.path("xzm2.partial.zarr");
      leader_first([&] {
        xz_m2 = std::make_unique<ZarrWriter>(scratch.path("xzm2.zarr"), out_shape, DType::F32, plan.voxel,
                                             in.unit(), zo);
      });
    }
    DiskStorage storage(in, *xz, xz_m2.get(), *out.writer, want_map ? map.writer.get() : nullptr, multiple,
                        *params.norm, out_dtype, params.tta ? 4 : 1, params.fuse, out_nz);
    reconstruct_into(s, in.voxel_size(), in.unit(), params, restorer, storage, want_map, &w.report);
    w.report.clip = storage.clip;
    if (want_map) {
      w.map_mean = Ranks::sum(storage.map_sum) / double(out_shape.numel());
      w.map_max = Ranks::max(storage.map_max);
    }
  }
  w.report.clip.below = static_cast<int64_t>(Ranks::sum(double(w.report.clip.below)));
  w.report.clip.above = static_cast<int64_t>(Ranks::sum(double(w.report.clip.above)));
  w.report.clip.total = static_cast<int64_t>(Ranks::sum(double(w.report.clip.total)));
  if (w.report.clip.below + w.report.clip.above > 0) log_warn("{}", w.report.clip.summary());
  if (Ranks::rank() == 0) {
    finish_output(out, budget_bytes);
    if (want_map) finish_output(map, budget_bytes);
  }
  w.wrote_map = want_map;
  w.shape = out_shape;
  w.dtype = out_dtype;
  w.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  log_info("reconstructed {} -> {} in {} (streamed)", to_string(s), to_string(out_shape),
           Progress::format_duration(w.report.seconds));
  return w;
}

}  // namespace stream
}  // namespace isoprompt
