// Reading TIFF stacks (ImageJ, OME-TIFF, plain) plane by plane: the source behind
// PlaneReader and read_volume.
#include <tiffio.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "io/formats.h"
#include "io/layout.h"
#include "io/metadata.h"
#include "io/tiff_handle.h"
#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/progress.h"
#include "isoprompt/stats.h"

namespace fs = std::filesystem;

namespace isoprompt {
namespace {

using io::Layout;
using io::TiffFile;

// The per-page layout facts that must agree across a stack.
struct PageFormat {
  uint32_t width = 0, height = 0;
  uint16_t bps = 0, sample_format = SAMPLEFORMAT_UINT, spp = 1, compression = COMPRESSION_NONE;
  uint16_t planar = PLANARCONFIG_CONTIG, photometric = PHOTOMETRIC_MINISBLACK;
  bool tiled = false;
  uint32_t tile_w = 0, tile_h = 0, rows_per_strip = 0;
};

std::string compression_name(uint16_t c) {
  switch (c) {
    case COMPRESSION_NONE: return "none";
    case COMPRESSION_LZW: return "LZW";
    case COMPRESSION_ADOBE_DEFLATE:
    case COMPRESSION_DEFLATE: return "deflate";
    case COMPRESSION_PACKBITS: return "packbits";
    case COMPRESSION_JPEG: return "JPEG";
    case COMPRESSION_OJPEG: return "old-style JPEG";
    case COMPRESSION_LZMA: return "LZMA";
    case COMPRESSION_ZSTD: return "zstd";
    case COMPRESSION_WEBP: return "WebP";
    case COMPRESSION_JBIG: return "JBIG";
    case 34712: return "JPEG 2000";
    case 50002: return "JPEG XL";
    default: return fmt::format("code {}", c);
  }
}

std::string sample_format_name(uint16_t bps, uint16_t sf) {
  if (bps == 1) return "1-bit (binary)";
  switch (sf) {
    case SAMPLEFORMAT_UINT: return fmt::format("uint{}", bps);
    case SAMPLEFORMAT_INT: return fmt::format("int{}", bps);
    case SAMPLEFORMAT_IEEEFP: return fmt::format("float{}", bps);
    case SAMPLEFORMAT_COMPLEXINT: return fmt::format("complex int{}", bps);
    case SAMPLEFORMAT_COMPLEXIEEEFP: return fmt::format("complex float{}", bps);
    default: return fmt::format("{}-bit samples of format {}", bps, sf);
  }
}

PageFormat page_format(TIFF* t) {
  PageFormat f;
  TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &f.width);
  TIFFGetField(t, TIFFTAG_IMAGELENGTH, &f.height);
  TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &f.bps);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLEFORMAT, &f.sample_format);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &f.spp);
  TIFFGetFieldDefaulted(t, TIFFTAG_COMPRESSION, &f.compression);
  TIFFGetFieldDefaulted(t, TIFFTAG_PLANARCONFIG, &f.planar);
  if (!TIFFGetField(t, TIFFTAG_PHOTOMETRIC, &f.photometric)) f.photometric = PHOTOMETRIC_MINISBLACK;
  f.tiled = TIFFIsTiled(t) != 0;
  if (f.tiled) {
    TIFFGetField(t, TIFFTAG_TILEWIDTH, &f.tile_w);
    TIFFGetField(t, TIFFTAG_TILELENGTH, &f.tile_h);
  } else {
    TIFFGetFieldDefaulted(t, TIFFTAG_ROWSPERSTRIP, &f.rows_per_strip);
  }
  return f;
}

DType check_sample_format(const PageFormat& f, const std::string& path) {
  if (f.spp != 1)
    throw_input("unsupported image in {}: {} samples per pixel ({}); only single-channel grayscale pages are supported",
                path, f.spp, f.spp >= 3 ? "RGB/colour" : "with extra samples");
  if (f.bps == 8 && f.sample_format == SAMPLEFORMAT_UINT) return DType::U8;
  if (f.bps == 16 && f.sample_format == SAMPLEFORMAT_UINT) return DType::U16;
  if (f.bps == 32 && f.sample_format == SAMPLEFORMAT_IEEEFP) return DType::F32;
  throw_input("unsupported sample format in {}: {} (supported: uint8, uint16, float32)", path,
              sample_format_name(f.bps, f.sample_format));
}

// Throws when a page's strips or tiles point past the end of the file (truncation).
void check_data_extent(TIFF* t, const std::string& path, int64_t page, int64_t n_pages, uint64_t file_size) {
  const uint32_t n = TIFFIsTiled(t) ? TIFFNumberOfTiles(t) : TIFFNumberOfStrips(t);
  for (uint32_t i = 0; i < n; ++i) {
    int err = 0;
    const uint64_t off = TIFFGetStrileOffsetWithErr(t, i, &err);
    const uint64_t cnt = err ? 0 : TIFFGetStrileByteCountWithErr(t, i, &err);
    if (err) throw_input("corrupt TIFF file {}: page {} of {} has no valid data offsets", path, page, n_pages);
    if (off > file_size || cnt > file_size - off)
      throw_input(
          "truncated TIFF file {}: page {} of {} has data up to byte {} but the file has only {} bytes", path,
          page, n_pages, off + cnt, file_size);
  }
}

std::string read_description(TIFF* t) {
  char* d = nullptr;
  if (TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &d) && d) return std::string(d);
  return {};
}

// Moves to page p; stepping forward one page reads the next IFD directly.
bool goto_page(TIFF* t, int64_t p) {
  if (p > 0 && static_cast<int64_t>(TIFFCurrentDirectory(t)) == p - 1) return TIFFReadDirectory(t) == 1;
  return TIFFSetDirectory(t, static_cast<tdir_t>(p)) == 1;
}

// Decodes the current directory into `dst` (width*height samples of bytes_per_sample).
void decode_page(TIFF* t, TiffFile& tf, const PageFormat& f, uint8_t* dst, const std::string& path, int64_t page,
                 int64_t n_pages) {
  const size_t bps = f.bps / 8;
  const size_t row_bytes = static_cast<size_t>(f.width) * bps;
  auto fail = [&](const std::string& what) {
    throw_input("truncated or corrupt TIFF file {}: page {} of {}: {}", path, page, n_pages,
                tf.error_text(what));
  };
  if (!f.tiled) {
    const uint32_t rps = f.rows_per_strip == 0 || f.rows_per_strip > f.height ? f.height : f.rows_per_strip;
    const uint32_t n_strips = TIFFNumberOfStrips(t);
    for (uint32_t s = 0; s < n_strips; ++s) {
      const uint64_t row0 = static_cast<uint64_t>(s) * rps;
      if (row0 >= f.height) break;
      const uint64_t rows = std::min<uint64_t>(rps, f.height - row0);
      const tmsize_t want = static_cast<tmsize_t>(rows * row_bytes);
      const tmsize_t got = TIFFReadEncodedStrip(t, s, dst + row0 * row_bytes, want);
      if (got < 0) fail(fmt::format("cannot decode strip {}", s));
      if (got < want) fail(fmt::format("strip {} holds {} of {} bytes", s, got, want));
    }
    return;
  }
  if (f.tile_w == 0 || f.tile_h == 0)
    throw_input("corrupt TIFF file {}: page {} has tile size {}x{}", path, page, f.tile_w, f.tile_h);
  const tmsize_t tile_bytes = TIFFTileSize(t);
  if (tile_bytes <= 0) fail("bad tile size");
  std::vector<uint8_t> buf(static_cast<size_t>(tile_bytes));
  const size_t tile_row_bytes = static_cast<size_t>(f.tile_w) * bps;
  for (uint32_t y0 = 0; y0 < f.height; y0 += f.tile_h) {
    for (uint32_t x0 = 0; x0 < f.width; x0 += f.tile_w) {
      const uint32_t tile = TIFFComputeTile(t, x0, y0, 0, 0);
      if (TIFFReadEncodedTile(t, tile, buf.data(), tile_bytes) < 0)
        fail(fmt::format("cannot decode tile {}", tile));
      const uint32_t h = std::min(f.tile_h, f.height - y0), w = std::min(f.tile_w, f.width - x0);
      for (uint32_t r = 0; r < h; ++r)
        std::memcpy(dst + (static_cast<size_t>(y0 + r) * f.width + x0) * bps, buf.data() + r * tile_row_bytes,
                    static_cast<size_t>(w) * bps);
    }
  }
}

// Voxel size and unit from the metadata. Returns whether the file is calibrated.
bool calibration(TIFF* t, const Layout& lay, const io::ImageJMeta* ij, const io::OmeMeta* ome,
                 const std::string& path, VoxelSize& vs, std::string& unit, std::string& file_unit) {
  vs = VoxelSize{1.0, 1.0, 1.0};
  unit = "pixel";
  if (ome) {
    bool any = false;
    double sz[3] = {1.0, 1.0, 1.0};
    for (int i = 0; i < 3; ++i) {
      if (!(ome->phys[i] > 0)) continue;
      const std::string u = ome->phys_unit[i].empty() ? "\xC2\xB5m" : ome->phys_unit[i];
      if (file_unit.empty()) file_unit = u;
      const double f = unit_to_micron(u);
      if (f <= 0) {
        log_warn("unknown unit '{}' for {} in {}: treating the file as uncalibrated", u,
                 i == 0 ? "PhysicalSizeZ" : i == 1 ? "PhysicalSizeY" : "PhysicalSizeX", path);
        return false;
      }
      sz[i] = scale_to_micron(ome->phys[i], f);
      any = true;
    }
    if (!any) return false;
    if (!(ome->phys[0] > 0) && lay.nz > 1)
      log_warn("{} has no PhysicalSizeZ: z step taken as 1 micron (set it with --voxel-size)", path);
    vs = VoxelSize{sz[0], sz[1], sz[2]};
    unit = "micron";
    return true;
  }
  if (!ij) return false;
  std::string u = ij->unit;
  // Without a unit in the description, ImageJ falls back to an explicit ResolutionUnit
  // (not libtiff's default of inch); 72 dpi is a screen default, not a calibration.
  uint16_t res_unit = RESUNIT_NONE;
  float xres = 0;
  if (u.empty() && TIFFGetField(t, TIFFTAG_RESOLUTIONUNIT, &res_unit) && TIFFGetField(t, TIFFTAG_XRESOLUTION, &xres)) {
    if (res_unit == RESUNIT_CENTIMETER) u = "cm";
    if (res_unit == RESUNIT_INCH && xres != 72.0f) u = "inch";
  }
  file_unit = u;
  // unit=pixel with a z spacing other than 1 (isoprompt simulate on an uncalibrated stack
  // writes it): not physical, but the anisotropy is known.
  const bool pixel_spacing = (u == "pixel" || u == "pixels") && ij->has_spacing && ij->spacing != 1.0;
  if (pixel_spacing) u = "pixel";
  if ((u.empty() || u == "pixel" || u == "pixels") && !pixel_spacing) return false;
  // X/YResolution (pixels per unit) are floats inside libtiff: 1/res carries float noise,
  // which 7 significant digits remove. The exact values we write ourselves are preferred.
  auto lateral = [&](ttag_t tag, const char* key) {
    float res = 0;
    double px = 1.0;
    if (TIFFGetField(t, tag, &res) && res > 0 && std::isfinite(res)) px = io::round_significant(1.0 / res, 7);
    auto it = ij->kv.find(key);
    if (it != ij->kv.end()) {
      const double exact = std::strtod(it->second.c_str(), nullptr);
      if (exact > 0 && std::fabs(exact - px) <= 1e-5 * px) px = exact;
    }
    return px;
  };
  vs.x = lateral(TIFFTAG_XRESOLUTION, "xspacing");
  vs.y = lateral(TIFFTAG_YRESOLUTION, "yspacing");
  vs.z = ij->has_spacing ? ij->spacing : 1.0;
  if (!ij->has_spacing && lay.nz > 1)
    log_warn("{} has no z spacing in its ImageJ metadata: z step taken as 1 {} (set it with --voxel-size)", path, u);
  const double f = unit_to_micron(u);
  if (f > 0) {
    vs = VoxelSize{scale_to_micron(vs.z, f), scale_to_micron(vs.y, f), scale_to_micron(vs.x, f)};
    unit = "micron";
  } else {
    if (!pixel_spacing) log_warn("unknown length unit '{}' in {}: voxel size kept in that unit", u, path);
    unit = u;
  }
  return true;
}

}  // namespace

NanPolicy parse_nan_policy(const std::string& s) {
  if (s == "refuse") return NanPolicy::Refuse;
  if (s == "replace") return NanPolicy::Replace;
  throw_input("--nan must be refuse or replace, got '{}'", s);
}

namespace {

// A TIFF stack opened for reading planes: every page validated up front (metadata only),
// then one page (or, in ImageJ's contiguous layout, one image read at its offset) decoded
// at a time.
class TiffSource final : public io::PlaneSource {
 public:
  TiffSource(const std::string& path, const ReadOptions& opts, bool whole_volume);
  Volume read(int64_t z0, int64_t n) override;

 private:
  std::string path_;
  TiffFile tf_;
  Layout lay_;
  int c_ = 0, tp_ = 0;  // the channel and time point read
  int64_t n_pages_ = 0;
  uint64_t contiguous_offset_ = 0;  // ImageJ contiguous layout: where image 0 starts
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> fp_{nullptr, &std::fclose};
  bool warnings_logged_ = false;
};

TiffSource::TiffSource(const std::string& path, const ReadOptions& opts, bool whole_volume) : path_(path) {
  check_input_file(path, "input file");
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  if (ec) throw_input("cannot read input file {}: {}", path, ec.message());
  {
    unsigned char hdr[4] = {0, 0, 0, 0};
    std::FILE* fp = std::fopen(path.c_str(), "rb");
    if (!fp) throw_input("cannot open input file {}: {}", path, std::strerror(errno));
    const size_t n = std::fread(hdr, 1, 4, fp);
    std::fclose(fp);
    const bool le = hdr[0] == 'I' && hdr[1] == 'I' && hdr[3] == 0 && (hdr[2] == 42 || hdr[2] == 43);
    const bool be = hdr[0] == 'M' && hdr[1] == 'M' && hdr[2] == 0 && (hdr[3] == 42 || hdr[3] == 43);
    if (n < 4 || !(le || be)) throw_input("not a TIFF file: {} (no TIFF header at the start)", path);
  }

  // "m": no memory mapping. libtiff maps the whole file by default, and every page read
  // through the map stays resident: a plane-wise read of a 30 GB stack would grow to 30 GB.
  tf_ = TiffFile::open(path, "rm");
  TiffFile& tf = tf_;
  if (!tf) throw_input("cannot read TIFF file {}: {}", path, tf.error_text("libtiff could not open it"));
  TIFF* t = tf.get();
  where = path;
  info.path = path;
  info.bigtiff = TIFFIsBigTIFF(t) != 0;
  info.big_endian = TIFFIsBigEndian(t) != 0;

  const int64_t n_pages = TIFFNumberOfDirectories(t);
  // An IFD chain that breaks off (pointing past the end) means the file was cut short.
  if (tf.messages().n_errors > 0)
    throw_input("truncated or corrupt TIFF file {}: {}", path, tf.error_text("bad page directory chain"));
  // libtiff only warns about a chain that loops back, and counts the pages up to the loop:
  // the file is corrupt, not a shorter stack.
  if (tf.messages().warnings.find("IFD loop") != std::string::npos ||
      tf.messages().warnings.find("IFD looping") != std::string::npos)
    throw_input("corrupt TIFF file {}: its chain of page directories loops back after {} pages ({})", path, n_pages,
                tf.messages().warnings.substr(0, tf.messages().warnings.find(';')));
  if (n_pages < 1 || !TIFFSetDirectory(t, 0))
    throw_input("corrupt TIFF file {}: {}", path, tf.error_text("no readable image directory"));
  info.pages = n_pages;
  const PageFormat f0 = page_format(t);
  dtype = check_sample_format(f0, path);
  if (f0.width == 0 || f0.height == 0) throw_input("corrupt TIFF file {}: image size {}x{}", path, f0.width, f0.height);
  if (!TIFFIsCODECConfigured(f0.compression))
    throw_input("unsupported compression in {}: {} (this libtiff cannot decode it)", path,
                compression_name(f0.compression));
  info.compression = compression_name(f0.compression);
  info.tiled = f0.tiled;

  // Refuse headers whose dimensions the file cannot back, before allocating anything.
  const double page_bytes = double(f0.width) * double(f0.height) * double(f0.bps / 8);
  const double all_bytes = page_bytes * double(n_pages);
  // Deflate compresses at most ~1030:1, LZW ~1400:1, packbits 64:1 (constant data): more
  // is a lie. zstd reaches ~32000:1 on zeros and LZMA less, so the others get 1e5:1; LERC
  // could claim more, but a 4 KB file claiming 4 GB would cost seconds and gigabytes
  // before its decoder fails.
  const bool classic_codec = f0.compression == COMPRESSION_LZW || f0.compression == COMPRESSION_DEFLATE ||
                             f0.compression == COMPRESSION_ADOBE_DEFLATE || f0.compression == COMPRESSION_PACKBITS;
  const double max_ratio = f0.compression == COMPRESSION_NONE ? 1.0 : classic_codec ? 2000.0 : 1e5;
  const double plausible_bytes = max_ratio * double(file_size) + 65536.0;
  if (all_bytes > plausible_bytes)
    throw_input(
        "implausible TIFF header in {}: {}x{} pixels x {} pages of {} ({}) but the file has only {} bytes{}", path,
        f0.width, f0.height, n_pages, dtype_name(dtype), io::human_size(all_bytes), file_size,
        f0.compression == COMPRESSION_NONE ? "" : " (compressed)");

  const std::string desc = read_description(t);
  std::unique_ptr<io::ImageJMeta> ij;
  std::unique_ptr<io::OmeMeta> ome;
  const int64_t contiguous_max = page_bytes > 0 ? static_cast<int64_t>(double(file_size) / page_bytes) : 0;
  lay_ = io::plan_layout(desc, n_pages, contiguous_max, path, ij, ome);
  const Layout& lay = lay_;
  info.flavor = lay.flavor;
  info.channels = static_cast<int>(lay.nc);
  info.times = static_cast<int>(lay.nt);
  if (ome && (ome->size_x != f0.width || ome->size_y != f0.height))
    throw_input("bad OME-XML in {}: SizeX x SizeY = {}x{} but the pages are {}x{}", path, ome->size_x, ome->size_y,
                f0.width, f0.height);

  info.calibrated = calibration(t, lay, ij.get(), ome.get(), path, voxel, unit, info.file_unit);
  info.notes = ij ? ij->notes : ome ? ome->notes : FileNotes{};

  if (lay.nz == 1 && lay.nt > 1 && !opts.allow_2d)
    throw_input("{} holds {} time points of a single plane, not a z stack; if its frames are really z planes, swap "
                "them in Fiji (Image > Hyperstacks > Re-order Hyperstacks) and save again",
                path, lay.nt);
  if (ij && opts.channel < 0 && lay.nc > 1 && lay.nz == 1 && lay.nt == 1 && ij->kv.count("ImageJ") &&
      ij->kv.at("ImageJ") == "1.11a" && !ij->kv.count("slices"))
    // tifffile's signature: imwrite(f, zyx_array, imagej=True) without axes says channels=N.
    throw_input("{} has {} channels and one z plane, which is how tifffile.imwrite(file, array, imagej=True) saves a "
                "3D array without axes: if they are z planes, save it with metadata={{'axes': 'ZYX'}} (or in Fiji: "
                "Image > Hyperstacks > Re-order Hyperstacks, channels to slices); if they are channels, choose one "
                "with --channel (0..{})",
                path, lay.nc, lay.nc - 1);
  c_ = io::select_index(opts.channel, lay.nc, "channel", "--channel", path);
  tp_ = io::select_index(opts.time, lay.nt, "time point", "--time", path);
  const int c = c_, tp = tp_;
  info.channel = c;
  info.time = tp;
  if (lay.nz == 1 && !opts.allow_2d)
    throw_input("{} is a 2D image ({}x{} pixels, one plane): a 3D stack (several z planes) is needed", path, f0.width,
                f0.height);

  // ImageJ contiguous layout: image i sits at page 0's data offset + i * plane size.
  uint64_t& contiguous_offset = contiguous_offset_;
  if (lay.contiguous) {
    const uint64_t plane = static_cast<uint64_t>(f0.width) * f0.height * (f0.bps / 8);
    const uint32_t n_strips = f0.tiled ? 0 : TIFFNumberOfStrips(t);
    bool ok = f0.compression == COMPRESSION_NONE && !f0.tiled && n_strips > 0;
    uint64_t next = ok ? TIFFGetStrileOffset(t, 0) : 0;
    contiguous_offset = next;
    for (uint32_t i = 0; ok && i < n_strips; ++i) {
      ok = TIFFGetStrileOffset(t, i) == next;
      next += TIFFGetStrileByteCount(t, i);
    }
    if (!ok)
      throw_input("{} has 1 page but its ImageJ metadata says images={}, and its data are not one uncompressed "
                  "block as ImageJ writes large stacks",
                  path, lay.images());
    const auto data_bytes = checked_mul(static_cast<int64_t>(plane), lay.images());
    const auto end = data_bytes && contiguous_offset <= file_size
                         ? checked_add(*data_bytes, static_cast<int64_t>(contiguous_offset))
                         : std::nullopt;
    if (!end || static_cast<uint64_t>(*end) > file_size || lay.ifd.empty())
      throw_input("truncated TIFF file {}: its ImageJ metadata says images={} stored after page 0, which needs {} "
                  "bytes but the file has only {}",
                  path, lay.images(), end ? std::to_string(*end) : "over 2^63", file_size);
    log_debug("{}: ImageJ contiguous stack of {} images at byte {}", path, lay.images(), contiguous_offset);
  }
  const int64_t n_virtual = lay.contiguous ? lay.images() : n_pages;

  // The stack must fit in memory (allocation would otherwise end in the OOM killer); the
  // plane reader holds one page at a time.
  if (whole_volume)
    io::check_fits_in_memory(page_bytes * double(lay.nz), Shape3{lay.nz, int64_t(f0.height), int64_t(f0.width)},
                             dtype, path);

  // Page -> z for the planes we read; -1 for the others.
  std::vector<int64_t> page_z(static_cast<size_t>(n_virtual), -1);
  for (int64_t z = 0; z < lay.nz; ++z) page_z[static_cast<size_t>(lay.page(z, c, tp))] = z;

  // Validate every page before allocating: same size and format, data inside the file.
  for (int64_t p = 0; p < n_pages; ++p) {
    if (!goto_page(t, p))
      throw_input("corrupt TIFF file {}: cannot read page {} of {}: {}", path, p, n_pages,
                  tf.error_text("bad directory"));
    const PageFormat f = page_format(t);
    if (f.width != f0.width || f.height != f0.height)
      throw_input("pages of different sizes in {}: page {} is {}x{} but page 0 is {}x{}", path, p, f.width, f.height,
                  f0.width, f0.height);
    if (f.bps != f0.bps || f.sample_format != f0.sample_format || f.spp != f0.spp)
      throw_input("pages of different sample formats in {}: page {} is {} but page 0 is {}", path, p,
                  sample_format_name(f.bps, f.sample_format), sample_format_name(f0.bps, f0.sample_format));
    if (page_z[static_cast<size_t>(p)] >= 0 || lay.contiguous) {
      if (!TIFFIsCODECConfigured(f.compression))
        throw_input("unsupported compression in {}: page {} uses {}", path, p, compression_name(f.compression));
      check_data_extent(t, path, p, n_pages, file_size);
      // A tile may overhang the image, but its decoded bytes must be backed by the file as
      // the pages' are: decode_page allocates one tile, and a crafted TileWidth x
      // TileLength would otherwise ask for gigabytes (found by fuzz/tiff_file.cpp).
      const double tile_bytes = double(f.tile_w) * double(f.tile_h) * double(f.bps / 8);
      if (f.tiled && tile_bytes > plausible_bytes)
        throw_input(
            "implausible TIFF header in {}: page {} of {} has tiles of {}x{} pixels ({}) but the "
            "file has "
            "only {} bytes",
            path, p, n_pages, f.tile_w, f.tile_h, io::human_size(tile_bytes), file_size);
    }
  }

  shape = Shape3{lay.nz, int64_t(f0.height), int64_t(f0.width)};
  n_pages_ = n_pages;
  if (lay.contiguous) {
    fp_.reset(std::fopen(path.c_str(), "rb"));
    if (!fp_) throw_input("cannot open input file {}: {}", path, std::strerror(errno));
  }
  if (!info.calibrated)
    log_debug("{} has no calibration: voxel size 1,1,1 pixel (set it with --voxel-size)", path);
}

Volume TiffSource::read(int64_t z0, int64_t n) {
  const std::string& path = path_;
  TiffFile& tf = tf_;
  TIFF* t = tf.get();
  const int64_t n_pages = n_pages_;
  Volume vol({n, shape.y, shape.x}, dtype, voxel, unit);
  const size_t plane_bytes = static_cast<size_t>(shape.y * shape.x) * dtype_size(dtype);
  auto* base = static_cast<uint8_t*>(vol.raw());
  std::unique_ptr<Progress> progress;
  if (vol.size_bytes() > (size_t(256) << 20))
    progress = std::make_unique<Progress>("reading " + fs::path(path).filename().string(), n, "planes");
  for (int64_t z = z0; z < z0 + n; ++z) {
    const int64_t p = lay_.page(z, c_, tp_);
    uint8_t* dst = base + static_cast<size_t>(z - z0) * plane_bytes;
    if (lay_.contiguous) {
      // ImageJ contiguous layout: image p sits at page 0's data offset + p * plane size.
      const uint64_t off = contiguous_offset_ + static_cast<uint64_t>(p) * plane_bytes;
      if (fseeko(fp_.get(), static_cast<off_t>(off), SEEK_SET) != 0 ||
          std::fread(dst, 1, plane_bytes, fp_.get()) != plane_bytes)
        throw_input("truncated TIFF file {}: cannot read image {} at byte {}", path, p, off);
      if (info.big_endian && dtype == DType::U16)
        TIFFSwabArrayOfShort(reinterpret_cast<uint16_t*>(dst), static_cast<tmsize_t>(plane_bytes / 2));
      if (info.big_endian && dtype == DType::F32)
        TIFFSwabArrayOfFloat(reinterpret_cast<float*>(dst), static_cast<tmsize_t>(plane_bytes / 4));
    } else {
      if (!goto_page(t, p))
        throw_input("corrupt TIFF file {}: cannot read page {} of {}: {}", path, p, n_pages,
                    tf.error_text("bad directory"));
      decode_page(t, tf, page_format(t), dst, path, p, n_pages);
    }
    if (progress) progress->update(z - z0 + 1);
  }
  if (progress) progress->finish();
  if (!tf.messages().warnings.empty() && !warnings_logged_) {
    log_debug("libtiff warnings for {}: {}", path, tf.messages().warnings);
    warnings_logged_ = true;
  }
  return vol;
}

}  // namespace

std::unique_ptr<io::PlaneSource> io::open_tiff_source(const std::string& path, const ReadOptions& opts,
                                                      bool whole_volume) {
  return std::make_unique<TiffSource>(path, opts, whole_volume);
}

}  // namespace isoprompt
