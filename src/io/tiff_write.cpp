// Writing an ImageJ-compatible TIFF or an OME-TIFF plane by plane: the sink behind
// PlaneWriter and write_volume.
#include <tiffio.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include "io/formats.h"
#include "io/metadata.h"
#include "io/tiff_handle.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/progress.h"

namespace fs = std::filesystem;

namespace isoprompt {

uint64_t bigtiff_threshold_bytes() {
  // Classic TIFF offsets are 32-bit; keep a margin for IFDs and metadata.
  return (uint64_t(4) << 30) - (uint64_t(32) << 20);
}

WriteOptions::Flavor parse_flavor(const std::string& s) {
  if (s == "imagej" || s == "ImageJ" || s == "tif" || s == "tiff") return WriteOptions::ImageJ;
  if (s == "ome" || s == "OME" || s == "ome-tiff") return WriteOptions::OME;
  if (s == "auto") return WriteOptions::Auto;
  throw_input("unknown output format '{}' (expected imagej or ome)", s);
}

WriteOptions::Compression parse_compression(const std::string& s) {
  if (s == "none") return WriteOptions::None;
  if (s == "deflate" || s == "zip" || s == "zlib") return WriteOptions::Deflate;
  if (s == "lzw" || s == "LZW") return WriteOptions::LZW;
  throw_input("unknown compression '{}' (expected none, deflate or lzw)", s);
}

namespace {

// Extends [lo, hi] by the finite values of d[0 .. n): ImageJ's display range of a float
// stack (the description's min= and max=).
template <typename T>
void finite_range(const T* d, int64_t n, double& lo, double& hi) {
  double mn = lo, mx = hi;
#pragma omp parallel for reduction(min : mn) reduction(max : mx) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(d[i]);
    if (!std::isfinite(x)) continue;
    mn = std::min(mn, x);
    mx = std::max(mx, x);
  }
  lo = mn;
  hi = mx;
}

// The best approximation p/q of x > 0 with p and q below 2^32 (continued fractions): a
// pixel size of 0.0338542 becomes 169271/5000000, which readers turn back into the same
// double. Saturates for values outside what a TIFF rational can hold.
std::pair<uint32_t, uint32_t> best_rational(double x) {
  const double lim = 4294967295.0;
  double p0 = 0, q0 = 1, p1 = 1, q1 = 0, r = x;
  for (int i = 0; i < 64; ++i) {
    const double a = std::floor(r);
    const double p2 = a * p1 + p0, q2 = a * q1 + q0;
    if (p2 > lim || q2 > lim) break;
    p0 = p1, q0 = q1, p1 = p2, q1 = q2;
    if (p1 / q1 == x || r - a <= 0) break;
    r = 1.0 / (r - a);
  }
  if (q1 == 0) return {0xFFFFFFFFu, 1u};
  if (p1 == 0) return {1u, 0xFFFFFFFFu};
  return {static_cast<uint32_t>(p1), static_cast<uint32_t>(q1)};
}

// What every page of the output carries, whichever writer lays the file out.
struct PageTags {
  uint32_t width = 0, height = 0;
  uint16_t bits = 8, sample_format = SAMPLEFORMAT_UINT;
  bool calibrated = false;
  uint16_t res_unit = RESUNIT_NONE;
  std::pair<uint32_t, uint32_t> xres{1, 1}, yres{1, 1};  // pixels per unit, as num/den
  std::string description, software;                     // page 0 only
};

PageTags page_tags(const io::VolumeMeta& v, WriteOptions::Flavor flavor, std::string description) {
  PageTags t;
  t.width = static_cast<uint32_t>(v.shape.x);
  t.height = static_cast<uint32_t>(v.shape.y);
  t.bits = static_cast<uint16_t>(dtype_size(v.dtype) * 8);
  t.sample_format = v.dtype == DType::F32 ? SAMPLEFORMAT_IEEEFP : SAMPLEFORMAT_UINT;
  const double f = unit_to_micron(v.unit);
  // A voxel size in pixels is written too (as ImageJ's unit=pixel), when it is not 1,1,1.
  const bool pixel_spacing = v.unit == "pixel" && !(v.voxel == VoxelSize{1.0, 1.0, 1.0});
  t.calibrated = f > 0 || (v.unit != "pixel" && !v.unit.empty()) ||
                 (pixel_spacing && flavor == WriteOptions::ImageJ);
  if (t.calibrated) {
    double px = v.voxel.x, py = v.voxel.y;
    if (flavor == WriteOptions::OME && f > 0) {
      // OME readers take the scale from the OME-XML; plain TIFF readers (ImageJ without
      // Bio-Formats) only from these tags, so they carry it in the one length unit TIFF
      // has: pixels per centimetre.
      px = scale_to_micron(px, f * 1e-4);
      py = scale_to_micron(py, f * 1e-4);
      t.res_unit = RESUNIT_CENTIMETER;
    } else {
      // ImageJ convention: pixels per unit (micrometres when known), unit "none"; ImageJ
      // takes the unit from the description, and tifffile/napari follow it.
      if (f > 0) px = scale_to_micron(px, f), py = scale_to_micron(py, f);
      t.res_unit = RESUNIT_NONE;
    }
    // Resolution = 1 / pixel size: the rational of the pixel size, inverted.
    const auto rx = best_rational(px), ry = best_rational(py);
    t.xres = {rx.second, rx.first};
    t.yres = {ry.second, ry.first};
  }
  t.description = std::move(description);
  t.software = std::string("isoprompt ") + ISOPROMPT_VERSION;
  return t;
}

// ---- uncompressed files, laid out by hand ------------------------------------------------
//
// ImageJ and tifffile read an uncompressed ImageJ stack (description images=N) as N planes
// back to back from plane 0's offset and ignore the other IFDs, so the planes must be
// contiguous. libtiff writes each IFD after its plane, hence this writer, which lays the
// file out as ImageJ's TiffEncoder does: header, IFD 0 with the description, all planes,
// then the IFDs of planes 1..N-1. When those IFDs would end past 4 GiB in a classic TIFF,
// they are left out (ImageJ's large-stack layout: IFD 0 and images=N describe the whole
// stack; ImageJ, Fiji and tifffile read it). Values are in the machine's byte order.

enum : uint16_t { kAscii = 2, kShort = 3, kLong = 4, kRational = 5, kLong8 = 16 };

class IfdBuilder {
 public:
  explicit IfdBuilder(bool big) : big_(big) {}

  void add_short(uint16_t tag, uint16_t v) { add(tag, kShort, 1, bytes_of(v)); }
  void add_long(uint16_t tag, uint32_t v) { add(tag, kLong, 1, bytes_of(v)); }
  // A file offset or byte count: LONG in classic TIFF, LONG8 in BigTIFF.
  void add_offset(uint16_t tag, uint64_t v) {
    if (big_)
      add(tag, kLong8, 1, bytes_of(v));
    else
      add(tag, kLong, 1, bytes_of(static_cast<uint32_t>(v)));
  }
  void add_ascii(uint16_t tag, const std::string& s) {
    std::vector<uint8_t> b(s.begin(), s.end());
    b.push_back(0);
    const uint64_t count = b.size();  // before the move below
    add(tag, kAscii, count, std::move(b));
  }
  void add_rational(uint16_t tag, std::pair<uint32_t, uint32_t> r) {
    std::vector<uint8_t> b = bytes_of(r.first), d = bytes_of(r.second);
    b.insert(b.end(), d.begin(), d.end());
    add(tag, kRational, 1, std::move(b));
  }

  // Bytes of the IFD and the values that do not fit in its entries (which follow it).
  uint64_t size() const {
    uint64_t n = table_size();
    for (const Entry& e : entries_)
      if (e.value.size() > field_size()) n += even(e.value.size());
    return n;
  }
  // The IFD as it sits at file offset `at`, pointing at the next IFD `next` (0: last).
  std::vector<uint8_t> bytes(uint64_t at, uint64_t next) const {
    std::vector<uint8_t> out, extra;
    append(out, big_ ? bytes_of(uint64_t(entries_.size())) : bytes_of(uint16_t(entries_.size())));
    const uint64_t extra_at = at + table_size();
    for (const Entry& e : entries_) {
      append(out, bytes_of(e.tag));
      append(out, bytes_of(e.type));
      append(out, big_ ? bytes_of(e.count) : bytes_of(static_cast<uint32_t>(e.count)));
      std::vector<uint8_t> field(field_size(), 0);
      if (e.value.size() <= field_size()) {
        std::copy(e.value.begin(), e.value.end(), field.begin());  // left-justified
      } else {
        const uint64_t off = extra_at + extra.size();
        field = big_ ? bytes_of(off) : bytes_of(static_cast<uint32_t>(off));
        append(extra, e.value);
        if (extra.size() % 2) extra.push_back(0);  // values start on a word boundary
      }
      append(out, field);
    }
    append(out, big_ ? bytes_of(next) : bytes_of(static_cast<uint32_t>(next)));
    append(out, extra);
    return out;
  }

 private:
  struct Entry {
    uint16_t tag, type;
    uint64_t count;
    std::vector<uint8_t> value;
  };
  template <typename T>
  static std::vector<uint8_t> bytes_of(T v) {
    std::vector<uint8_t> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
  }
  static void append(std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
  }
  static uint64_t even(uint64_t n) { return n + (n % 2); }
  void add(uint16_t tag, uint16_t type, uint64_t count, std::vector<uint8_t> value) {
    // Entries must be sorted by tag; the callers add them in order.
    if (!entries_.empty() && entries_.back().tag >= tag)
      throw Error(fmt::format("TIFF tag {} out of order", tag));
    entries_.push_back({tag, type, count, std::move(value)});
  }
  size_t field_size() const { return big_ ? 8 : 4; }
  uint64_t table_size() const {
    return (big_ ? 8 : 2) + entries_.size() * (big_ ? 20 : 12) + (big_ ? 8 : 4);
  }

  bool big_;
  std::vector<Entry> entries_;
};

IfdBuilder uncompressed_ifd(const PageTags& t, bool big, bool first, uint64_t data_offset) {
  const uint64_t plane_bytes = uint64_t(t.width) * t.height * (t.bits / 8);
  IfdBuilder b(big);
  b.add_long(TIFFTAG_SUBFILETYPE, 0);
  b.add_long(TIFFTAG_IMAGEWIDTH, t.width);
  b.add_long(TIFFTAG_IMAGELENGTH, t.height);
  b.add_short(TIFFTAG_BITSPERSAMPLE, t.bits);
  b.add_short(TIFFTAG_COMPRESSION, COMPRESSION_NONE);
  b.add_short(TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
  if (first) b.add_ascii(TIFFTAG_IMAGEDESCRIPTION, t.description);
  b.add_offset(TIFFTAG_STRIPOFFSETS, data_offset);
  b.add_short(TIFFTAG_SAMPLESPERPIXEL, 1);
  b.add_long(TIFFTAG_ROWSPERSTRIP, t.height);  // one strip per plane, as ImageJ writes
  b.add_offset(TIFFTAG_STRIPBYTECOUNTS, plane_bytes);
  if (t.calibrated) {
    b.add_rational(TIFFTAG_XRESOLUTION, t.xres);
    b.add_rational(TIFFTAG_YRESOLUTION, t.yres);
  }
  b.add_short(TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  if (t.calibrated) b.add_short(TIFFTAG_RESOLUTIONUNIT, t.res_unit);
  if (first) b.add_ascii(TIFFTAG_SOFTWARE, t.software);
  b.add_short(TIFFTAG_SAMPLEFORMAT, t.sample_format);
  return b;
}

// Where everything goes in an uncompressed file.
struct UncompressedLayout {
  bool big = false;
  uint64_t header = 8, data_offset = 0, plane_bytes = 0, first_ifd_after_data = 0, ifd_size = 0;
  bool all_ifds = true;  // false: ImageJ's large-stack layout (IFD 0 only)
};

UncompressedLayout plan_uncompressed(const PageTags& t, int64_t nz, bool big,
                                     bool large_stack_layout = false) {
  UncompressedLayout l;
  l.big = big;
  l.header = big ? 16 : 8;
  l.plane_bytes = uint64_t(t.width) * t.height * (t.bits / 8);
  // IFD 0 and its values; the planes start on an 8-byte boundary.
  const uint64_t ifd0 = uncompressed_ifd(t, big, true, 0).size();
  l.data_offset = (l.header + ifd0 + 7) / 8 * 8;
  const uint64_t data_end = l.data_offset + l.plane_bytes * uint64_t(nz);
  l.first_ifd_after_data = data_end + data_end % 2;
  l.ifd_size = uncompressed_ifd(t, big, false, 0).size();
  const uint64_t ifds_end = l.first_ifd_after_data + l.ifd_size * uint64_t(nz - 1);
  // ImageJ's TiffEncoder test: the IFDs of planes 1..N-1 are written only when they end
  // below 4 GiB.
  l.all_ifds = big || nz == 1 || (!large_stack_layout && ifds_end < 0xFFFFFFFFull);
  return l;
}

// Whether a classic TIFF can hold this stack uncompressed with an IFD for every plane.
bool classic_holds_all_ifds(const PageTags& t, int64_t nz) {
  return plan_uncompressed(t, nz, false).all_ifds;
}

// Overwrites the ImageDescription of IFD 0 in place with `desc`, padded with spaces to the
// length of the field (which TiffSink reserved for the display range). The padding is a
// last line without '=', which ImageJ, tifffile and read_volume skip; NULs would make
// libtiff warn that the value was truncated. `shown` is the path named in messages.
void patch_description(const std::string& file, const std::string& shown, const std::string& desc) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> fp(std::fopen(file.c_str(), "r+b"), &std::fclose);
  auto fail = [&](const char* what) {
    throw Error(fmt::format("cannot write {}: {} ({})", shown, what, std::strerror(errno)));
  };
  if (!fp) fail("cannot reopen it to write the display range");
  auto read_at = [&](uint64_t off, void* p, size_t n) {
    if (fseeko(fp.get(), static_cast<off_t>(off), SEEK_SET) != 0 ||
        std::fread(p, 1, n, fp.get()) != n)
      fail("cannot read back its first directory");
  };
  uint8_t head[16] = {0};
  read_at(0, head, sizeof head);
  const bool le = head[0] == 'I';
  auto get = [le](const uint8_t* p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(p[le ? i : n - 1 - i]) << (8 * i);
    return v;
  };
  const bool big = get(head + 2, 2) == 43;
  const uint64_t ifd = big ? get(head + 8, 8) : get(head + 4, 4);
  uint8_t count_bytes[8] = {0};
  read_at(ifd, count_bytes, big ? 8 : 2);
  const uint64_t n_entries = get(count_bytes, big ? 8 : 2);
  const size_t entry_size = big ? 20 : 12;
  std::vector<uint8_t> entries(static_cast<size_t>(n_entries) * entry_size);
  read_at(ifd + (big ? 8 : 2), entries.data(), entries.size());
  for (uint64_t k = 0; k < n_entries; ++k) {
    const uint8_t* e = entries.data() + k * entry_size;
    if (get(e, 2) != TIFFTAG_IMAGEDESCRIPTION) continue;
    const uint64_t count = big ? get(e + 4, 8) : get(e + 4, 4);
    const uint64_t at = big ? get(e + 12, 8) : get(e + 8, 4);
    if (count <= desc.size() || count <= uint64_t(big ? 8 : 4))
      throw Error(
          fmt::format("cannot write {}: its description field holds {} bytes, {} are needed", shown,
                      count, desc.size() + 1));
    std::vector<char> field(static_cast<size_t>(count), ' ');
    std::copy(desc.begin(), desc.end(), field.begin());
    field.back() = '\0';
    if (fseeko(fp.get(), static_cast<off_t>(at), SEEK_SET) != 0 ||
        std::fwrite(field.data(), 1, field.size(), fp.get()) != field.size())
      fail("cannot write the display range (disk full?)");
    if (std::fclose(fp.release()) != 0) fail("cannot write the display range (disk full?)");
    return;
  }
  throw Error(fmt::format("cannot write {}: its first directory has no description", shown));
}

// Room kept in the description of a float ImageJ stack written plane by plane for
// "min=X\nmax=Y\n", which is known only after the last plane (a double is at most 24
// characters as exact_number writes it).
constexpr size_t kRangeReserve = 2 * (4 + 32 + 1);

// A TIFF written plane by plane. Uncompressed files are laid out by hand (see above): the
// header and IFD 0 first, each plane as it comes, the other IFDs at commit. Compressed ones
// go through libtiff, a page and its directory at a time.
class TiffSink final : public io::PlaneSink {
 public:
  TiffSink(const std::string& path, const io::VolumeMeta& meta, const WriteOptions& opts,
           const io::SinkOptions& so);
  void write(const uint8_t* planes, int64_t n) override;
  void commit() override;

 private:
  void put(const void* p, size_t n, const std::string& what);
  void start_uncompressed();
  void start_compressed(WriteOptions::Compression compression);
  void write_compressed_plane(const uint8_t* plane);

  std::string path_;
  io::VolumeMeta meta_;
  FileNotes notes_;
  PageTags tags_;
  bool compressed_ = false, big_ = false;
  UncompressedLayout lay_;
  std::unique_ptr<AtomicOutput> out_;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> fp_{nullptr, &std::fclose};  // uncompressed
  io::TiffFile tf_;                                                            // compressed
  uint16_t comp_ = COMPRESSION_NONE;
  bool predictor_ = false;
  uint32_t rows_per_strip_ = 0;
  std::vector<uint8_t> scratch_;
  // A float ImageJ stack without the whole volume: the display range, found over the planes.
  bool patch_range_ = false;
  double lo_ = std::numeric_limits<double>::infinity(), hi_ = -lo_;
  int64_t z_ = 0;  // planes written
  std::unique_ptr<Progress> progress_;
};

TiffSink::TiffSink(const std::string& path, const io::VolumeMeta& meta, const WriteOptions& opts,
                   const io::SinkOptions& so)
    : path_(path), meta_(meta), notes_(opts.notes) {
  const Shape3 s = meta.shape;
  if (s.numel() == 0) throw_input("cannot write an empty volume to {}", path);
  if (s.x > 0xFFFFFFFFLL || s.y > 0xFFFFFFFFLL)
    throw_input("cannot write {}: plane {}x{} is too large for TIFF", path, s.x, s.y);
  WriteOptions::Flavor flavor = opts.flavor;
  const std::string ext = lowercase_extension(path);
  if (flavor == WriteOptions::Auto)
    flavor = (ext == ".ome.tif" || ext == ".ome.tiff") ? WriteOptions::OME : WriteOptions::ImageJ;

  std::string desc;
  if (flavor == WriteOptions::OME) {
    if (unit_to_micron(meta.unit) <= 0 &&
        (meta.unit != "pixel" || !(meta.voxel == VoxelSize{1.0, 1.0, 1.0})))
      log_warn(
          "voxel size {} x {} x {} {} has no OME physical size: {} is written uncalibrated (ImageJ "
          "TIFF keeps "
          "it)",
          meta.voxel.z, meta.voxel.y, meta.voxel.x, meta.unit, path);
    desc = io::ome_description(meta, fs::path(path).filename().string(), opts.notes);
  } else if (meta.dtype == DType::F32 && !so.whole) {
    // The range is known only at commit: the description gets room for it now, and
    // patch_description writes it then (the field keeps its length, so no offset moves).
    patch_range_ = true;
    desc = io::imagej_description(meta, NAN, NAN, opts.notes);
    desc.resize(desc.size() + kRangeReserve, ' ');
  } else {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    if (meta.dtype == DType::F32) finite_range(so.whole->data<float>(), so.whole->numel(), lo, hi);
    desc = io::imagej_description(meta, lo, hi, opts.notes);
  }
  tags_ = page_tags(meta, flavor, std::move(desc));
  const uint64_t size_bytes = uint64_t(s.numel()) * dtype_size(meta.dtype);
  const double gib = double(size_bytes) / double(1ull << 30);
  compressed_ = opts.compression != WriteOptions::None;

  // Container: BigTIFF on request; otherwise classic TIFF whenever some layout of it holds
  // the data, because ImageJ 1.x cannot open BigTIFF at all.
  bool big = opts.force_bigtiff;
  const uint64_t plane_bytes = size_bytes / uint64_t(s.z);
  if (!big && compressed_ && size_bytes > bigtiff_threshold_bytes()) {
    big = true;
    log_info(
        "{} holds {:.1f} GiB: writing a compressed BigTIFF (ImageJ 1.x cannot open BigTIFF; Fiji's "
        "Bio-Formats "
        "and tifffile/napari can; write it uncompressed for ImageJ)",
        path, gib);
  } else if (!big && !compressed_ && plane_bytes > bigtiff_threshold_bytes()) {
    big = true;
    log_info(
        "{}: one plane holds {:.1f} GiB, more than a classic TIFF can: writing BigTIFF (ImageJ 1.x "
        "cannot open "
        "it)",
        path, double(plane_bytes) / double(1ull << 30));
  } else if (!big && !compressed_ && !classic_holds_all_ifds(tags_, s.z)) {
    if (flavor == WriteOptions::OME) {
      // OME readers (Bio-Formats, tifffile) need an IFD for every plane.
      big = true;
      log_info(
          "{} holds {:.1f} GiB: writing BigTIFF, as OME-TIFF needs a directory per plane (ImageJ "
          "1.x cannot "
          "open BigTIFF; Bio-Formats and tifffile/napari can)",
          path, gib);
    } else {
      log_info(
          "{} holds {:.1f} GiB: writing ImageJ's large-stack layout (one directory, images={}, "
          "planes back to "
          "back; ImageJ, Fiji and tifffile/napari read it)",
          path, gib, s.z);
    }
  }
  if (opts.force_bigtiff && flavor == WriteOptions::ImageJ)
    log_info(
        "{}: BigTIFF as asked; note that ImageJ 1.x cannot open BigTIFF (Fiji's Bio-Formats and "
        "tifffile can)",
        path);
  big_ = big;

  out_ = std::make_unique<AtomicOutput>(path);
  if (so.whole && size_bytes > (uint64_t(256) << 20))
    progress_ =
        std::make_unique<Progress>("writing " + fs::path(path).filename().string(), s.z, "planes");
  if (compressed_) {
    start_compressed(opts.compression);
  } else {
    lay_ = plan_uncompressed(tags_, s.z, big_,
                             opts.large_stack_layout && flavor == WriteOptions::ImageJ);
    start_uncompressed();
  }
}

void TiffSink::put(const void* p, size_t n, const std::string& what) {
  if (n && std::fwrite(p, 1, n, fp_.get()) != n)
    throw Error(fmt::format("cannot write {}: {} ({})", path_, what, std::strerror(errno)));
}

// The header and IFD 0 (with its values, padded to the first plane's offset).
void TiffSink::start_uncompressed() {
  const UncompressedLayout& l = lay_;
  fp_.reset(std::fopen(out_->temp_path().c_str(), "wb"));
  if (!fp_) throw_input("cannot create output file {}: {}", path_, std::strerror(errno));
  const uint16_t probe = 1;
  uint8_t little = 0;
  std::memcpy(&little, &probe, 1);
  std::vector<uint8_t> head(l.header, 0);
  head[0] = head[1] = little ? 'I' : 'M';
  const uint16_t magic = big_ ? 43 : 42;
  std::memcpy(&head[2], &magic, 2);
  if (big_) {
    const uint16_t offset_size = 8, zero = 0;
    const uint64_t first = l.header;
    std::memcpy(&head[4], &offset_size, 2);
    std::memcpy(&head[6], &zero, 2);
    std::memcpy(&head[8], &first, 8);
  } else {
    const uint32_t first = static_cast<uint32_t>(l.header);
    std::memcpy(&head[4], &first, 4);
  }
  put(head.data(), head.size(), "header");
  const int64_t nz = meta_.shape.z;
  const uint64_t next0 = nz > 1 && l.all_ifds ? l.first_ifd_after_data : 0;
  std::vector<uint8_t> ifd =
      uncompressed_ifd(tags_, big_, true, l.data_offset).bytes(l.header, next0);
  ifd.resize(l.data_offset - l.header, 0);
  put(ifd.data(), ifd.size(), "IFD 0");
}

void TiffSink::start_compressed(WriteOptions::Compression compression) {
  tf_ = io::TiffFile::open(out_->temp_path(), big_ ? "w8" : "w");
  if (!tf_)
    throw_input("cannot create output file {}: {}", path_, tf_.error_text(std::strerror(errno)));
  const size_t row_bytes = size_t(tags_.width) * (tags_.bits / 8);
  comp_ = compression == WriteOptions::Deflate ? COMPRESSION_ADOBE_DEFLATE : COMPRESSION_LZW;
  // Horizontal differencing makes integer microscopy data compress much better, but
  // ImageJ 1.53t undoes it only after LZW, not after deflate (slices open wrong).
  predictor_ = comp_ == COMPRESSION_LZW && meta_.dtype != DType::F32;
  // Strips of about 1 MiB: small enough to stream, large enough to compress well.
  rows_per_strip_ = static_cast<uint32_t>(
      std::clamp<uint64_t>((uint64_t(1) << 20) / std::max<size_t>(row_bytes, 1), 1, tags_.height));
  // One strip of scratch: libtiff may encode in place, and the planes are const.
  scratch_.resize(size_t(rows_per_strip_) * row_bytes);
}

void TiffSink::write_compressed_plane(const uint8_t* plane) {
  TIFF* t = tf_.get();
  const uint32_t w = tags_.width, h = tags_.height;
  const size_t row_bytes = size_t(w) * (tags_.bits / 8);
  auto fail = [&](const std::string& what) {
    throw Error(fmt::format("cannot write {}: {}", path_, tf_.error_text(what)));
  };
  TIFFSetField(t, TIFFTAG_SUBFILETYPE, 0);
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, tags_.bits);
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, static_cast<uint16_t>(1));
  TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, tags_.sample_format);
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, static_cast<uint16_t>(PHOTOMETRIC_MINISBLACK));
  TIFFSetField(t, TIFFTAG_PLANARCONFIG, static_cast<uint16_t>(PLANARCONFIG_CONTIG));
  TIFFSetField(t, TIFFTAG_COMPRESSION, comp_);
  if (predictor_) TIFFSetField(t, TIFFTAG_PREDICTOR, static_cast<uint16_t>(PREDICTOR_HORIZONTAL));
  TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, rows_per_strip_);
  if (tags_.calibrated) {
    TIFFSetField(t, TIFFTAG_XRESOLUTION, double(tags_.xres.first) / double(tags_.xres.second));
    TIFFSetField(t, TIFFTAG_YRESOLUTION, double(tags_.yres.first) / double(tags_.yres.second));
    TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, tags_.res_unit);
  }
  if (z_ == 0) {
    TIFFSetField(t, TIFFTAG_IMAGEDESCRIPTION, tags_.description.c_str());
    TIFFSetField(t, TIFFTAG_SOFTWARE, tags_.software.c_str());
  }
  for (uint32_t row0 = 0, s = 0; row0 < h; row0 += rows_per_strip_, ++s) {
    const uint32_t rows = std::min(rows_per_strip_, h - row0);
    const size_t n = size_t(rows) * row_bytes;
    std::memcpy(scratch_.data(), plane + size_t(row0) * row_bytes, n);
    if (TIFFWriteEncodedStrip(t, s, scratch_.data(), static_cast<tmsize_t>(n)) < 0)
      fail(fmt::format("cannot encode plane {} (disk full?)", z_));
  }
  if (!TIFFWriteDirectory(t))
    fail(fmt::format("cannot write the directory of plane {} (disk full?)", z_));
}

void TiffSink::write(const uint8_t* planes, int64_t n) {
  const uint64_t plane_bytes = uint64_t(tags_.width) * tags_.height * (tags_.bits / 8);
  if (patch_range_)
    finite_range(reinterpret_cast<const float*>(planes), n * int64_t(tags_.width) * tags_.height,
                 lo_, hi_);
  for (int64_t k = 0; k < n; ++k, ++z_) {
    const uint8_t* plane = planes + uint64_t(k) * plane_bytes;
    if (compressed_)
      write_compressed_plane(plane);
    else
      put(plane, plane_bytes, fmt::format("plane {} (disk full?)", z_));
    if (progress_) progress_->update(z_ + 1);
  }
}

void TiffSink::commit() {
  const int64_t nz = meta_.shape.z;
  if (compressed_) {
    if (!tf_.close_checked())
      throw Error(fmt::format("cannot write {}: {}", path_,
                              tf_.error_text("cannot finish the file (disk full?)")));
  } else {
    const UncompressedLayout& l = lay_;
    if (nz > 1 && l.all_ifds) {
      const uint8_t pad = 0;
      put(&pad, l.first_ifd_after_data - (l.data_offset + l.plane_bytes * uint64_t(nz)), "padding");
      for (int64_t z = 1; z < nz; ++z) {
        const uint64_t at = l.first_ifd_after_data + uint64_t(z - 1) * l.ifd_size;
        const uint64_t next = z + 1 < nz ? at + l.ifd_size : 0;
        const std::vector<uint8_t> ifd =
            uncompressed_ifd(tags_, big_, false, l.data_offset + uint64_t(z) * l.plane_bytes)
                .bytes(at, next);
        put(ifd.data(), ifd.size(), "IFDs (disk full?)");
      }
    }
    if (std::fflush(fp_.get()) != 0)
      throw Error(fmt::format("cannot write {}: {} (disk full?)", path_, std::strerror(errno)));
    if (std::fclose(fp_.release()) != 0)
      throw Error(fmt::format("cannot write {}: {} (disk full?)", path_, std::strerror(errno)));
  }
  if (patch_range_)
    patch_description(out_->temp_path(), path_, io::imagej_description(meta_, lo_, hi_, notes_));
  if (progress_) progress_->finish();
  out_->commit();
}

}  // namespace

std::unique_ptr<io::PlaneSink> io::open_tiff_sink(const std::string& path, const VolumeMeta& meta,
                                                  const WriteOptions& opts, const SinkOptions& so) {
  return std::make_unique<TiffSink>(path, meta, opts, so);
}

}  // namespace isoprompt
