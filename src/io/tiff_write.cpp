// Writing a Volume as an ImageJ-compatible TIFF or an OME-TIFF.
#include <tiffio.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

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

template <typename T>
void finite_range(const Volume& v, double& lo, double& hi) {
  const T* d = v.data<T>();
  double mn = std::numeric_limits<double>::infinity(), mx = -mn;
  const int64_t n = v.numel();
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

}  // namespace

void write_volume(const std::string& path, const Volume& v, const WriteOptions& opts) {
  if (v.empty()) throw_input("cannot write an empty volume to {}", path);
  if (v.nx() > 0xFFFFFFFFLL || v.ny() > 0xFFFFFFFFLL)
    throw_input("cannot write {}: plane {}x{} is too large for TIFF", path, v.nx(), v.ny());
  WriteOptions::Flavor flavor = opts.flavor;
  const std::string ext = lowercase_extension(path);
  if (flavor == WriteOptions::Auto) flavor = (ext == ".ome.tif" || ext == ".ome.tiff") ? WriteOptions::OME : WriteOptions::ImageJ;
  const bool bigtiff = opts.force_bigtiff || v.size_bytes() > bigtiff_threshold_bytes();
  if (bigtiff && !opts.force_bigtiff)
    log_info("{} holds {:.1f} GiB: writing BigTIFF", path, double(v.size_bytes()) / double(1ull << 30));

  std::string desc;
  if (flavor == WriteOptions::OME) {
    if (unit_to_micron(v.unit()) <= 0 && v.unit() != "pixel")
      log_warn("unit '{}' has no OME equivalent: {} is written without physical sizes", v.unit(), path);
    desc = io::ome_description(v, fs::path(path).filename().string());
  } else {
    double lo = 0, hi = 0;
    if (v.dtype() == DType::F32) finite_range<float>(v, lo, hi);
    desc = io::imagej_description(v, lo, hi);
  }

  AtomicOutput out(path);
  io::TiffFile tf = io::TiffFile::open(out.temp_path(), bigtiff ? "w8" : "w");
  if (!tf) throw_input("cannot create output file {}: {}", path, tf.error_text(std::strerror(errno)));
  TIFF* t = tf.get();

  const uint32_t w = static_cast<uint32_t>(v.nx()), h = static_cast<uint32_t>(v.ny());
  const size_t bps = dtype_size(v.dtype());
  const size_t row_bytes = size_t(w) * bps;
  const uint16_t comp = opts.compression == WriteOptions::Deflate ? COMPRESSION_ADOBE_DEFLATE
                        : opts.compression == WriteOptions::LZW  ? COMPRESSION_LZW
                                                                 : COMPRESSION_NONE;
  // Horizontal differencing makes integer microscopy data compress much better.
  const bool predictor = comp != COMPRESSION_NONE && v.dtype() != DType::F32;
  // Strips of about 1 MiB: small enough to stream, large enough to compress well.
  const uint32_t rows_per_strip =
      static_cast<uint32_t>(std::clamp<uint64_t>((uint64_t(1) << 20) / std::max<size_t>(row_bytes, 1), 1, h));
  // One strip of scratch: libtiff may encode in place, and the volume is const.
  std::vector<uint8_t> scratch(size_t(rows_per_strip) * row_bytes);
  const double f = unit_to_micron(v.unit());
  const bool calibrated = f > 0 || (v.unit() != "pixel" && !v.unit().empty());

  const auto* base = static_cast<const uint8_t*>(v.raw());
  const size_t plane_bytes = size_t(h) * row_bytes;
  std::unique_ptr<Progress> progress;
  if (v.size_bytes() > (size_t(256) << 20))
    progress = std::make_unique<Progress>("writing " + fs::path(path).filename().string(), v.nz(), "planes");
  auto fail = [&](const std::string& what) {
    throw Error(fmt::format("cannot write {}: {}", path, tf.error_text(what)));
  };
  for (int64_t z = 0; z < v.nz(); ++z) {
    TIFFSetField(t, TIFFTAG_SUBFILETYPE, 0);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, static_cast<uint16_t>(bps * 8));
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, static_cast<uint16_t>(1));
    TIFFSetField(t, TIFFTAG_SAMPLEFORMAT,
                 static_cast<uint16_t>(v.dtype() == DType::F32 ? SAMPLEFORMAT_IEEEFP : SAMPLEFORMAT_UINT));
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, static_cast<uint16_t>(PHOTOMETRIC_MINISBLACK));
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, static_cast<uint16_t>(PLANARCONFIG_CONTIG));
    TIFFSetField(t, TIFFTAG_COMPRESSION, comp);
    if (predictor) TIFFSetField(t, TIFFTAG_PREDICTOR, static_cast<uint16_t>(PREDICTOR_HORIZONTAL));
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, rows_per_strip);
    if (calibrated) {
      // Pixels per unit (micrometres when known), unit "none": ImageJ takes the unit
      // from the description, and tifffile/napari follow ImageJ's convention.
      const double fx = f > 0 ? f : 1.0;
      TIFFSetField(t, TIFFTAG_XRESOLUTION, 1.0 / scale_to_micron(v.voxel_size().x, fx));
      TIFFSetField(t, TIFFTAG_YRESOLUTION, 1.0 / scale_to_micron(v.voxel_size().y, fx));
      TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, static_cast<uint16_t>(RESUNIT_NONE));
    }
    if (z == 0) {
      TIFFSetField(t, TIFFTAG_IMAGEDESCRIPTION, desc.c_str());
      TIFFSetField(t, TIFFTAG_SOFTWARE, (std::string("isoprompt ") + ISOPROMPT_VERSION).c_str());
    }
    const uint8_t* plane = base + static_cast<size_t>(z) * plane_bytes;
    for (uint32_t row0 = 0, s = 0; row0 < h; row0 += rows_per_strip, ++s) {
      const uint32_t rows = std::min(rows_per_strip, h - row0);
      const size_t n = size_t(rows) * row_bytes;
      std::memcpy(scratch.data(), plane + size_t(row0) * row_bytes, n);
      if (TIFFWriteEncodedStrip(t, s, scratch.data(), static_cast<tmsize_t>(n)) < 0)
        fail(fmt::format("cannot encode plane {} (disk full?)", z));
    }
    if (!TIFFWriteDirectory(t)) fail(fmt::format("cannot write the directory of plane {} (disk full?)", z));
    if (progress) progress->update(z + 1);
  }
  if (!tf.close_checked()) fail("cannot finish the file (disk full?)");
  if (progress) progress->finish();
  out.commit();
}

}  // namespace isoprompt
