// Hand-made TIFF files for the I/O tests, written with libtiff directly (not with
// isoprompt's writer), so reader tests do not depend on the writer being right.
#pragma once

#include <tiffio.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <algorithm>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

namespace isoprompt::test {

struct RawPage {
  uint32_t w = 8, h = 8;
  uint16_t bps = 16, sample_format = SAMPLEFORMAT_UINT, spp = 1;
  uint16_t compression = COMPRESSION_NONE;
  bool tiled = false;
  uint32_t tile = 16;           // tile edge (multiple of 16)
  uint32_t rows_per_strip = 0;  // 0: one strip per page
  std::string description;      // written when non-empty
  float xres = 0, yres = 0;     // pixels per unit, written when > 0
  std::vector<uint8_t> data;    // w*h*spp*bps/8 bytes, native byte order
};

// A page of T values v(y, x) = f(y, x).
template <typename T, typename F>
RawPage make_page(uint32_t w, uint32_t h, F f) {
  RawPage p;
  p.w = w;
  p.h = h;
  p.bps = sizeof(T) * 8;
  p.sample_format = std::is_floating_point<T>::value ? SAMPLEFORMAT_IEEEFP
                    : std::is_signed<T>::value       ? SAMPLEFORMAT_INT
                                                     : SAMPLEFORMAT_UINT;
  p.data.resize(size_t(w) * h * sizeof(T));
  T* d = reinterpret_cast<T*>(p.data.data());
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x) d[size_t(y) * w + x] = static_cast<T>(f(y, x));
  return p;
}

// mode: "w" (classic little-endian), "w8" (BigTIFF), "wb" (big-endian).
inline void write_raw_tiff(const std::string& path, const std::vector<RawPage>& pages, const char* mode = "w") {
  TIFF* t = TIFFOpen(path.c_str(), mode);
  if (!t) throw std::runtime_error("test fixture: cannot create " + path);
  for (const RawPage& p : pages) {
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, p.w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, p.h);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, p.bps);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, p.spp);
    TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, p.sample_format);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, p.spp == 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, p.compression);
    if (!p.description.empty()) TIFFSetField(t, TIFFTAG_IMAGEDESCRIPTION, p.description.c_str());
    if (p.xres > 0) {
      TIFFSetField(t, TIFFTAG_XRESOLUTION, p.xres);
      TIFFSetField(t, TIFFTAG_YRESOLUTION, p.yres > 0 ? p.yres : p.xres);
      TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, RESUNIT_NONE);
    }
    const size_t px = size_t(p.spp) * p.bps / 8;
    if (p.tiled) {
      TIFFSetField(t, TIFFTAG_TILEWIDTH, p.tile);
      TIFFSetField(t, TIFFTAG_TILELENGTH, p.tile);
      std::vector<uint8_t> buf(size_t(p.tile) * p.tile * px);
      for (uint32_t y0 = 0; y0 < p.h; y0 += p.tile)
        for (uint32_t x0 = 0; x0 < p.w; x0 += p.tile) {
          std::fill(buf.begin(), buf.end(), 0);
          for (uint32_t r = 0; r < p.tile && y0 + r < p.h; ++r)
            for (uint32_t c = 0; c < p.tile && x0 + c < p.w; ++c)
              std::memcpy(&buf[(size_t(r) * p.tile + c) * px], &p.data[(size_t(y0 + r) * p.w + x0 + c) * px], px);
          if (TIFFWriteEncodedTile(t, TIFFComputeTile(t, x0, y0, 0, 0), buf.data(), tmsize_t(buf.size())) < 0)
            throw std::runtime_error("test fixture: tile write failed");
        }
    } else {
      const uint32_t rps = p.rows_per_strip ? p.rows_per_strip : p.h;
      TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, rps);
      std::vector<uint8_t> buf;
      for (uint32_t y0 = 0, s = 0; y0 < p.h; y0 += rps, ++s) {
        const uint32_t rows = std::min(rps, p.h - y0);
        buf.assign(p.data.begin() + size_t(y0) * p.w * px, p.data.begin() + size_t(y0 + rows) * p.w * px);
        if (TIFFWriteEncodedStrip(t, s, buf.data(), tmsize_t(buf.size())) < 0)
          throw std::runtime_error("test fixture: strip write failed");
      }
    }
    TIFFWriteDirectory(t);
  }
  TIFFClose(t);
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// Overwrites tag `tag` of the first IFD of a classic little-endian TIFF with a LONG value.
inline void patch_first_ifd_long(const std::string& path, uint16_t tag, uint32_t value) {
  std::string b = read_bytes(path);
  uint32_t ifd;
  std::memcpy(&ifd, &b[4], 4);
  uint16_t n;
  std::memcpy(&n, &b[ifd], 2);
  for (uint16_t i = 0; i < n; ++i) {
    const size_t e = ifd + 2 + size_t(i) * 12;
    uint16_t t;
    std::memcpy(&t, &b[e], 2);
    if (t != tag) continue;
    const uint16_t type = TIFF_LONG;
    const uint32_t count = 1;
    std::memcpy(&b[e + 2], &type, 2);
    std::memcpy(&b[e + 4], &count, 4);
    std::memcpy(&b[e + 8], &value, 4);
    write_bytes(path, b);
    return;
  }
  throw std::runtime_error("test fixture: tag not found");
}

}  // namespace isoprompt::test
