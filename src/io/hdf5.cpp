// HDF5 input (and output) of one 3D dataset: `file.h5:/group/dataset`, uint8, uint16 or
// float32, chunked or contiguous, any filter the library decodes; the voxel size is the
// `element_size_um` attribute (z, y, x in micrometres: the ilastik / IsoVEM convention).
// Planes are read and written as hyperslabs (the source and sink behind PlaneReader /
// PlaneWriter and read_volume / write_volume).
#include <cmath>
#include <filesystem>
#include <mutex>
#include <vector>

#include "io/formats.h"
#include "io/hdf5_handle.h"
#include "io/metadata.h"
#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"

namespace fs = std::filesystem;

namespace isoprompt::io {

void hdf5_quiet() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

std::string hdf5_error_text() {
  std::string msg;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
        auto* out = static_cast<std::string*>(data);
        if (n == 0 && e && e->desc) *out = e->desc;
        return 0;
      },
      &msg);
  H5Eclear2(H5E_DEFAULT);
  return printable(msg);
}

namespace {

constexpr const char* kVoxelAttr = "element_size_um";

std::string type_name(hid_t type) {
  const size_t size = H5Tget_size(type);
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return fmt::format("{}int{}", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", size * 8);
    case H5T_FLOAT:
      return fmt::format("float{}", size * 8);
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_REFERENCE:
      return "reference";
    case H5T_VLEN:
      return "variable-length";
    default:
      return "unknown type";
  }
}

// The dtype of a dataset type, or false when it is none of ours.
bool dtype_of_hdf5(hid_t type, DType& out) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE && (size == 1 || size == 2)) {
    out = size == 1 ? DType::U8 : DType::U16;
    return true;
  }
  if (cls == H5T_FLOAT && size == 4) {
    out = DType::F32;
    return true;
  }
  return false;
}

hid_t native_type(DType t) {
  return t == DType::U8 ? H5T_NATIVE_UINT8 : t == DType::U16 ? H5T_NATIVE_UINT16 : H5T_NATIVE_FLOAT;
}

struct DatasetEntry {
  std::string name;  // "/group/data"
  int rank = 0;
  std::vector<hsize_t> dims;
};

// Every dataset reachable by hard links (soft and external links would list one twice or
// open other files).
std::vector<DatasetEntry> list_datasets(hid_t file) {
  std::vector<DatasetEntry> out;
  H5Lvisit(
      file, H5_INDEX_NAME, H5_ITER_NATIVE,
      [](hid_t group, const char* name, const H5L_info_t* info, void* data) -> herr_t {
        if (info->type != H5L_TYPE_HARD) return 0;
        H5Handle obj(H5Oopen(group, name, H5P_DEFAULT), H5Oclose);
        if (!obj || H5Iget_type(obj.get()) != H5I_DATASET) return 0;
        H5Handle space(H5Dget_space(obj.get()), H5Sclose);
        DatasetEntry e;
        e.name = std::string("/") + name;
        e.rank = space ? H5Sget_simple_extent_ndims(space.get()) : -1;
        if (e.rank > 0 && e.rank <= 32) {
          e.dims.resize(static_cast<size_t>(e.rank));
          H5Sget_simple_extent_dims(space.get(), e.dims.data(), nullptr);
        }
        static_cast<std::vector<DatasetEntry>*>(data)->push_back(e);
        return 0;
      },
      &out);
  H5Eclear2(H5E_DEFAULT);
  return out;
}

std::string dims_text(const std::vector<hsize_t>& d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) s += (i ? "x" : "") + std::to_string(d[i]);
  return s;
}

// Names and compression of the filters of a chunked dataset; throws for one this HDF5
// library cannot decode (such as h5py's lzf, or a plugin filter that is not installed).
std::string filters(hid_t dcpl, const std::string& where) {
  const int n = H5Pget_nfilters(dcpl);
  std::string names;
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0, conf = 0;
    size_t n_values = 0;
    char name[256] = {0};
    const H5Z_filter_t id = H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &n_values,
                                           nullptr, sizeof name, name, &conf);
    std::string label = id == H5Z_FILTER_DEFLATE       ? "gzip"
                        : id == H5Z_FILTER_SHUFFLE     ? "shuffle"
                        : id == H5Z_FILTER_FLETCHER32  ? "fletcher32"
                        : id == H5Z_FILTER_SZIP        ? "szip"
                        : id == H5Z_FILTER_NBIT        ? "nbit"
                        : id == H5Z_FILTER_SCALEOFFSET ? "scaleoffset"
                        : id == 32000                  ? "lzf"
                        : id == 32001                  ? "blosc"
                        : id == 32015                  ? "zstd"
                        : name[0]                      ? printable(name)
                                                       : fmt::format("filter {}", id);
    if (id < 0 || H5Zfilter_avail(id) <= 0)
      throw_input(
          "{} is compressed with {} (HDF5 filter {}), which this HDF5 library cannot decode "
          "(rewrite it with "
          "gzip, e.g. h5py compression='gzip')",
          where, label, id);
    names += (names.empty() ? "" : "+") + label;
  }
  H5Eclear2(H5E_DEFAULT);
  return names.empty() ? "none" : names;
}

// element_size_um of the dataset: z, y, x in micrometres. False when it has none.
bool element_size(hid_t dset, const std::string& where, double vs[3]) {
  if (H5Aexists(dset, kVoxelAttr) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  H5Handle attr(H5Aopen(dset, kVoxelAttr, H5P_DEFAULT), H5Aclose);
  H5Handle space(attr ? H5Aget_space(attr.get()) : H5I_INVALID_HID, H5Sclose);
  H5Handle type(attr ? H5Aget_type(attr.get()) : H5I_INVALID_HID, H5Tclose);
  if (!attr || !space || !type)
    throw_input("cannot read {} of {}: {}", kVoxelAttr, where, hdf5_error_text());
  const H5T_class_t cls = H5Tget_class(type.get());
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || n != 3)
    throw_input(
        "bad {} attribute of {}: {} {} value{} (three numbers z, y, x in micrometres are needed)",
        kVoxelAttr, where, n, type_name(type.get()), n == 1 ? "" : "s");
  if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, vs) < 0)
    throw_input("cannot read {} of {}: {}", kVoxelAttr, where, hdf5_error_text());
  for (int i = 0; i < 3; ++i)
    if (!(vs[i] > 0) || !std::isfinite(vs[i]))
      throw_input("bad {} attribute of {}: [{}, {}, {}] (voxel sizes must be positive)", kVoxelAttr,
                  where, vs[0], vs[1], vs[2]);
  return true;
}

}  // namespace

namespace {

// An HDF5 dataset opened for reading planes as hyperslabs.
class Hdf5Source final : public PlaneSource {
 public:
  Hdf5Source(const std::string& path, const ReadOptions& opts, bool whole_volume);
  Volume read(int64_t z0, int64_t n) override;

 private:
  H5Handle file_, dset_;  // the dataset closes before the file
  int rank_ = 3;          // 2 for a single-plane dataset (allow_2d)
};

Hdf5Source::Hdf5Source(const std::string& path, const ReadOptions& opts, bool whole_volume) {
  hdf5_quiet();
  const VolumePath vp = parse_volume_path(path);
  check_input_file(vp.file, "input file");
  std::error_code ec;
  const uint64_t file_size = fs::file_size(vp.file, ec);
  if (H5Fis_hdf5(vp.file.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw_input("not an HDF5 file: {} (no HDF5 signature)", vp.file);
  }
  file_ = H5Handle(H5Fopen(vp.file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  const H5Handle& file = file_;
  if (!file) throw_input("cannot open HDF5 file {}: {}", vp.file, hdf5_error_text());

  std::string name = vp.inner;
  if (!name.empty() && name[0] != '/') name = "/" + name;
  auto datasets_3d = [&] {
    std::string s;
    for (const auto& e : list_datasets(file.get()))
      if (e.rank == 3) s += (s.empty() ? "" : ", ") + e.name + " (" + dims_text(e.dims) + ")";
    return s.empty() ? std::string("none") : s;
  };
  if (name.empty()) {
    std::vector<DatasetEntry> found;
    for (auto& e : list_datasets(file.get()))
      if (e.rank == 3 || (opts.allow_2d && e.rank == 2)) found.push_back(e);
    if (found.empty())
      throw_input("{} has no 3D dataset{}", vp.file, opts.allow_2d ? " (nor a 2D one)" : "");
    if (found.size() > 1) {
      std::string list;
      for (const auto& e : found)
        list += (list.empty() ? "" : ", ") + e.name + " (" + dims_text(e.dims) + ")";
      throw_input("{} has {} datasets: choose one as {}:/NAME ({})", vp.file, found.size(), vp.file,
                  list);
    }
    name = found[0].name;
  }
  where = vp.file + ":" + name;

  if (H5Lexists(file.get(), name.c_str(), H5P_DEFAULT) <= 0 ||
      H5Oexists_by_name(file.get(), name.c_str(), H5P_DEFAULT) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw_input("no dataset {} in {} (its 3D datasets: {})", name, vp.file, datasets_3d());
  }
  H5Handle obj(H5Oopen(file.get(), name.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj || H5Iget_type(obj.get()) != H5I_DATASET) {
    H5Eclear2(H5E_DEFAULT);
    throw_input("{} in {} is not a dataset (its 3D datasets: {})", name, vp.file, datasets_3d());
  }
  obj.reset();
  dset_ = H5Handle(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  const H5Handle& dset = dset_;
  if (!dset) throw_input("cannot open dataset {}: {}", where, hdf5_error_text());
  H5Handle space(H5Dget_space(dset.get()), H5Sclose);
  H5Handle type(H5Dget_type(dset.get()), H5Tclose);
  H5Handle dcpl(H5Dget_create_plist(dset.get()), H5Pclose);
  if (!space || !type || !dcpl) throw_input("cannot read dataset {}: {}", where, hdf5_error_text());

  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || rank > 32) throw_input("cannot read dataset {}: {}", where, hdf5_error_text());
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  if (!(rank == 3 || (rank == 2 && opts.allow_2d)))
    throw_input("dataset {} has {} dimension{} ({}): a 3D (z, y, x) dataset is needed", where, rank,
                rank == 1 ? "" : "s", rank ? dims_text(dims) : "scalar");
  if (rank == 2) dims.insert(dims.begin(), 1);
  if (!dtype_of_hdf5(type.get(), dtype))
    throw_input("unsupported dtype {} of dataset {} (supported: uint8, uint16, float32)",
                type_name(type.get()), where);
  for (hsize_t d : dims)
    if (d < 1 || d > static_cast<hsize_t>(INT64_MAX))
      throw_input("dataset {} is empty ({})", where, dims_text(dims));
  rank_ = rank;
  shape = Shape3{static_cast<int64_t>(dims[0]), static_cast<int64_t>(dims[1]),
                 static_cast<int64_t>(dims[2])};
  const auto bytes =
      checked_product({shape.z, shape.y, shape.x, static_cast<int64_t>(dtype_size(dtype))});
  if (!bytes)
    throw_input("implausible dataset {}: {} has more than 2^63 bytes", where, to_string(shape));
  if (shape.z == 1 && !opts.allow_2d)
    throw_input(
        "{} is a 2D image ({}x{} pixels, one plane): a 3D stack (several z planes) is needed",
        where, shape.x, shape.y);

  info.path = path;
  info.container = "HDF5";
  info.flavor = "HDF5";
  info.dataset = name;
  info.pages = shape.z;
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  info.tiled = layout == H5D_CHUNKED;
  if (layout == H5D_CHUNKED) {
    hsize_t chunk[32] = {0};
    if (H5Pget_chunk(dcpl.get(), rank, chunk) == rank)
      info.chunks = rank == 3 ? Shape3{int64_t(chunk[0]), int64_t(chunk[1]), int64_t(chunk[2])}
                              : Shape3{1, int64_t(chunk[0]), int64_t(chunk[1])};
    info.compression = filters(dcpl.get(), where);
  }
  info.big_endian = H5Tget_order(type.get()) == H5T_ORDER_BE;
  // Only gzip can claim ~1000:1 (on constant data), and unwritten chunks hold the fill
  // value: more than that over the file is a crafted header, refused before allocating.
  const double data_bytes = double(*bytes);
  if (data_bytes > 2000.0 * double(file_size) + double(64 << 20))
    throw_input("implausible dataset {}: {} {} ({}) but the file has only {} bytes", where,
                to_string(shape), dtype_name(dtype), human_size(data_bytes), file_size);
  if (whole_volume) check_fits_in_memory(data_bytes, shape, dtype, where);

  double vs[3] = {1.0, 1.0, 1.0};
  info.calibrated = element_size(dset.get(), where, vs);
  if (info.calibrated) info.file_unit = "um";
  voxel = info.calibrated ? VoxelSize{vs[0], vs[1], vs[2]} : VoxelSize{};
  unit = info.calibrated ? "micron" : "pixel";
  if (!info.calibrated)
    log_debug("{} has no {} attribute: voxel size 1,1,1 pixel (set it with --voxel-size)", where,
              kVoxelAttr);
}

// One hyperslab: planes [z0, z0 + n) of the dataset (a 2D dataset is one plane).
Volume Hdf5Source::read(int64_t z0, int64_t n) {
  Volume vol({n, shape.y, shape.x}, dtype, voxel, unit);
  const hsize_t start3[3] = {hsize_t(z0), 0, 0},
                count3[3] = {hsize_t(n), hsize_t(shape.y), hsize_t(shape.x)};
  const hsize_t* start = rank_ == 3 ? start3 : start3 + 1;
  const hsize_t* count = rank_ == 3 ? count3 : count3 + 1;
  H5Handle fspace(H5Dget_space(dset_.get()), H5Sclose);
  H5Handle mspace(H5Screate_simple(rank_, count, nullptr), H5Sclose);
  const hid_t mem_type = native_type(dtype);
  if (!fspace || !mspace ||
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) < 0 ||
      H5Dread(dset_.get(), mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, vol.raw()) < 0)
    throw_input("cannot read dataset {}: {}", where, hdf5_error_text());
  return vol;
}

}  // namespace

std::unique_ptr<PlaneSource> open_hdf5_source(const std::string& path, const ReadOptions& opts,
                                              bool whole_volume) {
  return std::make_unique<Hdf5Source>(path, opts, whole_volume);
}

namespace {

// An HDF5 file written plane by plane: the dataset is created with the full shape, and
// planes go in as hyperslabs. A chunked (deflate) dataset gets whole chunk slabs only
// (planes are buffered up to the chunk depth), so no chunk is compressed twice.
class Hdf5Sink final : public PlaneSink {
 public:
  Hdf5Sink(const std::string& path, const VolumeMeta& meta, const WriteOptions& opts);
  void write(const uint8_t* planes, int64_t n) override;
  void commit() override;

 private:
  void write_slab(const uint8_t* planes, int64_t n);

  VolumeMeta meta_;
  std::string file_path_, where_;
  std::unique_ptr<AtomicOutput> out_;
  H5Handle file_, dset_;          // the dataset closes before the file
  int64_t chunk_z_ = 0;           // 0: contiguous
  std::vector<uint8_t> pending_;  // buffered planes of a partial chunk slab
  int64_t z_ = 0;                 // planes written to the dataset
};

Hdf5Sink::Hdf5Sink(const std::string& path, const VolumeMeta& meta, const WriteOptions& opts)
    : meta_(meta) {
  hdf5_quiet();
  const Shape3 s = meta.shape;
  if (s.numel() == 0) throw_input("cannot write an empty volume to {}", path);
  if (opts.compression == WriteOptions::LZW)
    throw_input("cannot write {}: HDF5 output is uncompressed or deflate (gzip), not lzw", path);
  const VolumePath vp = parse_volume_path(path);
  std::string name = vp.inner.empty() ? "/data" : vp.inner;
  if (name[0] != '/') name = "/" + name;
  file_path_ = vp.file;
  where_ = vp.file + ":" + name;

  out_ = std::make_unique<AtomicOutput>(vp.file);
  file_ = H5Handle(H5Fcreate(out_->temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                   H5Fclose);
  if (!file_) throw_input("cannot create output file {}: {}", vp.file, hdf5_error_text());
  const hsize_t dims[3] = {hsize_t(s.z), hsize_t(s.y), hsize_t(s.x)};
  H5Handle space(H5Screate_simple(3, dims, nullptr), H5Sclose);
  H5Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  if (opts.compression == WriteOptions::Deflate) {
    const hsize_t chunk[3] = {hsize_t(std::min<int64_t>(s.z, 32)),
                              hsize_t(std::min<int64_t>(s.y, 256)),
                              hsize_t(std::min<int64_t>(s.x, 256))};
    H5Pset_chunk(dcpl.get(), 3, chunk);
    H5Pset_shuffle(dcpl.get());
    H5Pset_deflate(dcpl.get(), 1);
    chunk_z_ = int64_t(chunk[0]);
  }
  // Little-endian file types (what h5py writes on every common machine).
  const hid_t file_type = meta.dtype == DType::U8    ? H5T_STD_U8LE
                          : meta.dtype == DType::U16 ? H5T_STD_U16LE
                                                     : H5T_IEEE_F32LE;
  dset_ = H5Handle(H5Dcreate2(file_.get(), name.c_str(), file_type, space.get(), lcpl.get(),
                              dcpl.get(), H5P_DEFAULT),
                   H5Dclose);
  if (!dset_) throw_input("cannot create dataset {}: {}", where_, hdf5_error_text());
}

// Planes [z_, z_ + n) as one hyperslab.
void Hdf5Sink::write_slab(const uint8_t* planes, int64_t n) {
  const Shape3 s = meta_.shape;
  const hsize_t start[3] = {hsize_t(z_), 0, 0}, count[3] = {hsize_t(n), hsize_t(s.y), hsize_t(s.x)};
  H5Handle fspace(H5Dget_space(dset_.get()), H5Sclose);
  H5Handle mspace(H5Screate_simple(3, count, nullptr), H5Sclose);
  if (!fspace || !mspace ||
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) < 0 ||
      H5Dwrite(dset_.get(), native_type(meta_.dtype), mspace.get(), fspace.get(), H5P_DEFAULT,
               planes) < 0)
    throw Error(fmt::format("cannot write {}: {} (disk full?)", where_, hdf5_error_text()));
  z_ += n;
}

void Hdf5Sink::write(const uint8_t* planes, int64_t n) {
  const size_t plane_bytes = size_t(meta_.shape.y * meta_.shape.x) * dtype_size(meta_.dtype);
  if (chunk_z_ == 0) return write_slab(planes, n);
  const int64_t nz = meta_.shape.z;
  while (n > 0) {
    const int64_t buffered = int64_t(pending_.size() / plane_bytes);
    // What completes the current chunk slab (the last one may be shorter).
    const int64_t slab = std::min(chunk_z_, nz - z_);
    if (buffered == 0 && n >= slab) {
      // Whole slabs straight from the caller's planes, in one write (write_volume: all).
      int64_t take = n >= nz - z_ ? nz - z_ : n / chunk_z_ * chunk_z_;
      write_slab(planes, take);
      planes += size_t(take) * plane_bytes, n -= take;
      continue;
    }
    const int64_t take = std::min(n, slab - buffered);
    pending_.insert(pending_.end(), planes, planes + size_t(take) * plane_bytes);
    planes += size_t(take) * plane_bytes, n -= take;
    if (buffered + take == slab) {
      write_slab(pending_.data(), slab);
      pending_.clear();
    }
  }
}

void Hdf5Sink::commit() {
  const double f = unit_to_micron(meta_.unit);
  if (f > 0) {
    const double um[3] = {scale_to_micron(meta_.voxel.z, f), scale_to_micron(meta_.voxel.y, f),
                          scale_to_micron(meta_.voxel.x, f)};
    const hsize_t three = 3;
    H5Handle aspace(H5Screate_simple(1, &three, nullptr), H5Sclose);
    H5Handle attr(
        H5Acreate2(dset_.get(), kVoxelAttr, H5T_IEEE_F64LE, aspace.get(), H5P_DEFAULT, H5P_DEFAULT),
        H5Aclose);
    if (!attr || H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, um) < 0)
      throw Error(fmt::format("cannot write {} of {}: {}", kVoxelAttr, where_, hdf5_error_text()));
  } else if (meta_.unit != "pixel" || !(meta_.voxel == VoxelSize{1.0, 1.0, 1.0})) {
    log_warn("voxel size {} x {} x {} {} is not in a length unit: {} is written without {}",
             meta_.voxel.z, meta_.voxel.y, meta_.voxel.x, meta_.unit, where_, kVoxelAttr);
  }
  // Close everything before the file, so that H5Fclose really flushes and reports.
  dset_.reset();
  if (H5Fclose(file_.release()) < 0)
    throw Error(fmt::format("cannot finish {}: {} (disk full?)", file_path_, hdf5_error_text()));
  out_->commit();
}

}  // namespace

std::unique_ptr<PlaneSink> open_hdf5_sink(const std::string& path, const VolumeMeta& meta,
                                          const WriteOptions& opts, const SinkOptions&) {
  return std::make_unique<Hdf5Sink>(path, meta, opts);
}

}  // namespace isoprompt::io
