// Minimal PNG encoder (grayscale 8-bit, stored deflate blocks) and orthogonal-view grids.
#include "isoprompt/preview.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <memory>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"

namespace isoprompt {

namespace {

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

void chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put32(out, static_cast<uint32_t>(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put32(out, crc32(out.data() + start, out.size() - start));
}

}  // namespace

void write_png_gray(const std::string& path, const std::vector<uint8_t>& pixels, int64_t width, int64_t height) {
  if (width < 1 || height < 1 || static_cast<int64_t>(pixels.size()) != width * height)
    throw_error("png {}: {} pixels do not make a {}x{} image", path, pixels.size(), width, height);
  check_output_path(path);
  // Raw scanlines, each with filter byte 0.
  std::vector<uint8_t> raw;
  raw.reserve(static_cast<size_t>((width + 1) * height));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), pixels.begin() + y * width, pixels.begin() + (y + 1) * width);
  }
  // zlib stream: header, stored blocks of <= 65535 bytes, adler32.
  std::vector<uint8_t> z{0x78, 0x01};
  for (size_t pos = 0; pos < raw.size() || pos == 0;) {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + n >= raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(static_cast<uint8_t>(n & 0xff));
    z.push_back(static_cast<uint8_t>(n >> 8));
    z.push_back(static_cast<uint8_t>(~n & 0xff));
    z.push_back(static_cast<uint8_t>((~n >> 8) & 0xff));
    z.insert(z.end(), raw.begin() + static_cast<std::ptrdiff_t>(pos), raw.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
    if (last) break;
  }
  uint32_t a = 1, b = 0;
  for (uint8_t v : raw) {
    a = (a + v) % 65521;
    b = (b + a) % 65521;
  }
  put32(z, (b << 16) | a);
  std::vector<uint8_t> png{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put32(ihdr, static_cast<uint32_t>(width));
  put32(ihdr, static_cast<uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 0, 0, 0, 0});  // 8-bit, grayscale, deflate, filter 0, no interlace
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", {});
  AtomicOutput out(path);
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(out.temp_path().c_str(), "wb"), &std::fclose);
  if (!f) throw_input("cannot write {}", path);
  if (std::fwrite(png.data(), 1, png.size(), f.get()) != png.size()) throw_error("cannot write {} (disk full?)", path);
  f.reset();
  out.commit();
}

std::vector<uint8_t> ortho_grid(const std::vector<std::pair<std::string, Volume>>& rows, double lo, double hi,
                                int64_t& width, int64_t& height, int64_t gap) {
  // Panel sizes: XY = ny x nx, XZ = nz x nx, YZ = nz x ny (rows x cols).
  int64_t w[3] = {0, 0, 0}, h = 0;
  for (const auto& r : rows) {
    const Volume& v = r.second;
    w[0] = std::max(w[0], v.nx());
    w[1] = std::max(w[1], v.nx());
    w[2] = std::max(w[2], v.ny());
    h = std::max({h, v.ny(), v.nz()});
  }
  width = w[0] + w[1] + w[2] + 4 * gap;
  height = static_cast<int64_t>(rows.size()) * (h + gap) + gap;
  std::vector<uint8_t> img(static_cast<size_t>(width * height), 255);
  const double scale = hi > lo ? 255.0 / (hi - lo) : 0.0;
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    const Volume& v = rows[ri].second;
    const int64_t top = gap + static_cast<int64_t>(ri) * (h + gap);
    int64_t left = gap;
    for (int k = 0; k < 3; ++k) {
      const Plane pl = k == 0 ? Plane::XY : k == 1 ? Plane::XZ : Plane::YZ;
      const int64_t idx = v.plane_count(pl) / 2;
      for (int64_t r = 0; r < (pl == Plane::XY ? v.ny() : v.nz()); ++r)
        for (int64_t c = 0; c < (pl == Plane::YZ ? v.ny() : v.nx()); ++c) {
          const int64_t z = pl == Plane::XY ? idx : r;
          const int64_t y = pl == Plane::XY ? r : pl == Plane::XZ ? idx : c;
          const int64_t x = pl == Plane::YZ ? idx : c;
          const double val = voxel_as_float(v, (z * v.ny() + y) * v.nx() + x);
          const double g = std::isfinite(val) ? std::min(255.0, std::max(0.0, (val - lo) * scale)) : 0.0;
          img[static_cast<size_t>((top + r) * width + left + c)] = static_cast<uint8_t>(std::lround(g));
        }
      left += w[k] + gap;
    }
  }
  return img;
}

void write_ortho_png(const std::string& path, const std::vector<std::pair<std::string, Volume>>& rows, double lo,
                     double hi) {
  int64_t w = 0, h = 0;
  const auto px = ortho_grid(rows, lo, hi, w, h);
  write_png_gray(path, px, w, h);
}

}  // namespace isoprompt
