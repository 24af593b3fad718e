// OME-Zarr stores: chunk codecs, ZarrReader and ZarrWriter, and the plane source and sink
// behind PlaneReader / PlaneWriter and read_volume / write_volume.
#include "isoprompt/zarr.h"

#include <blosc.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/formats.h"
#include "io/metadata.h"
#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/progress.h"

namespace fs = std::filesystem;

namespace isoprompt {

ZarrCompressor parse_zarr_compressor(const std::string& s) {
  if (s == "blosc-lz4" || s == "blosc") return ZarrCompressor::BloscLz4;
  if (s == "blosc-zstd") return ZarrCompressor::BloscZstd;
  if (s == "zstd") return ZarrCompressor::Zstd;
  if (s == "zlib" || s == "deflate") return ZarrCompressor::Zlib;
  if (s == "gzip") return ZarrCompressor::Gzip;
  if (s == "none") return ZarrCompressor::None;
  throw_input(
      "unknown Zarr compressor '{}' (expected blosc-lz4, blosc-zstd, zstd, zlib, gzip or none)", s);
}

const char* zarr_compressor_name(ZarrCompressor c) {
  switch (c) {
    case ZarrCompressor::BloscLz4:
      return "blosc-lz4";
    case ZarrCompressor::BloscZstd:
      return "blosc-zstd";
    case ZarrCompressor::Zstd:
      return "zstd";
    case ZarrCompressor::Zlib:
      return "zlib";
    case ZarrCompressor::Gzip:
      return "gzip";
    case ZarrCompressor::None:
      break;
  }
  return "none";
}

namespace io {
namespace {

void swap_bytes(uint8_t* p, size_t n_bytes, size_t item) {
  if (item == 2)
    for (size_t i = 0; i + 1 < n_bytes; i += 2) std::swap(p[i], p[i + 1]);
  if (item == 4)
    for (size_t i = 0; i + 3 < n_bytes; i += 4)
      std::swap(p[i], p[i + 3]), std::swap(p[i + 1], p[i + 2]);
}

// zlib and gzip streams (windowBits 15 + 32 detects either header).
void inflate_exact(const uint8_t* src, size_t size, uint8_t* out, size_t want,
                   const std::string& file, const char* what) {
  z_stream s{};
  if (inflateInit2(&s, 15 + 32) != Z_OK) throw_error("zlib cannot start decoding {}", file);
  s.next_in = const_cast<Bytef*>(src);
  s.next_out = out;
  size_t in_left = size, out_left = want;
  int rc = Z_OK;
  // zlib counts in uInt: feed gigabyte pieces.
  while (rc == Z_OK) {
    const uInt in_now = static_cast<uInt>(std::min<size_t>(in_left, 1u << 30));
    const uInt out_now = static_cast<uInt>(std::min<size_t>(out_left, 1u << 30));
    s.avail_in = in_now;
    s.avail_out = out_now;
    rc = inflate(&s, Z_NO_FLUSH);
    in_left -= in_now - s.avail_in;
    out_left -= out_now - s.avail_out;
    if (rc == Z_OK && s.avail_out == out_now && s.avail_in == in_now)
      rc = Z_BUF_ERROR;  // no progress
  }
  const std::string zmsg = s.msg ? s.msg : rc == Z_BUF_ERROR ? "truncated" : "zlib error";
  inflateEnd(&s);
  if (rc == Z_STREAM_END && out_left == 0) return;
  if (rc == Z_STREAM_END)
    throw_input("corrupt Zarr chunk {}: {} data decode to {} bytes, a chunk has {}", file, what,
                want - out_left, want);
  if (out_left == 0 && rc == Z_BUF_ERROR)
    throw_input("corrupt Zarr chunk {}: {} data decode to more than the {} bytes of a chunk", file,
                what, want);
  throw_input("corrupt Zarr chunk {}: {} data cannot be decoded ({})", file, what, zmsg);
}

std::vector<uint8_t> deflate_chunk(const uint8_t* src, size_t n, bool gzip) {
  z_stream s{};
  if (deflateInit2(&s, 1, Z_DEFLATED, gzip ? 15 + 16 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw_error("zlib cannot start encoding");
  std::vector<uint8_t> out(deflateBound(&s, static_cast<uLong>(n)) + 64);
  s.next_in = const_cast<Bytef*>(src);
  s.avail_in = static_cast<uInt>(n);
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&s, Z_FINISH);
  out.resize(out.size() - s.avail_out);
  deflateEnd(&s);
  if (rc != Z_STREAM_END) throw_error("zlib cannot encode a chunk of {} bytes", n);
  return out;
}

std::vector<uint8_t> encode_chunk(ZarrCompressor c, const uint8_t* src, size_t n, size_t item) {
  switch (c) {
    case ZarrCompressor::BloscLz4:
    case ZarrCompressor::BloscZstd: {
      std::vector<uint8_t> out(n + BLOSC_MAX_OVERHEAD);
      const int got = blosc_compress_ctx(5, BLOSC_SHUFFLE, item, n, src, out.data(), out.size(),
                                         c == ZarrCompressor::BloscLz4 ? "lz4" : "zstd", 0, 1);
      if (got <= 0) throw_error("blosc cannot encode a chunk of {} bytes (code {})", n, got);
      out.resize(static_cast<size_t>(got));
      return out;
    }
    case ZarrCompressor::Zstd: {
      std::vector<uint8_t> out(ZSTD_compressBound(n));
      const size_t got = ZSTD_compress(out.data(), out.size(), src, n, 3);
      if (ZSTD_isError(got)) throw_error("zstd cannot encode a chunk: {}", ZSTD_getErrorName(got));
      out.resize(got);
      return out;
    }
    case ZarrCompressor::Zlib:
      return deflate_chunk(src, n, false);
    case ZarrCompressor::Gzip:
      return deflate_chunk(src, n, true);
    case ZarrCompressor::None:
      break;
  }
  return std::vector<uint8_t>(src, src + n);
}

nlohmann::json compressor_json(ZarrCompressor c) {
  switch (c) {
    case ZarrCompressor::BloscLz4:
    case ZarrCompressor::BloscZstd:
      return {{"id", "blosc"},
              {"cname", c == ZarrCompressor::BloscLz4 ? "lz4" : "zstd"},
              {"clevel", 5},
              {"shuffle", 1},
              {"blocksize", 0}};
    case ZarrCompressor::Zstd:
      return {{"id", "zstd"}, {"level", 3}};
    case ZarrCompressor::Zlib:
      return {{"id", "zlib"}, {"level", 1}};
    case ZarrCompressor::Gzip:
      return {{"id", "gzip"}, {"level", 1}};
    case ZarrCompressor::None:
      break;
  }
  return nullptr;
}

const char* zarr_dtype(DType t) {
  return t == DType::U8 ? "|u1" : t == DType::U16 ? "<u2" : "<f4";
}

std::string read_small_file(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_input("cannot read {}: {}", path, std::strerror(errno));
  std::string s;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    s.append(buf, static_cast<size_t>(in.gcount()));
    if (s.size() > limit) throw_input("implausible Zarr metadata {}: over {} bytes", path, limit);
  }
  return s;
}

void write_text_file(const std::string& path, const std::string& text,
                     const std::string& shown_path) {
  std::FILE* fp = std::fopen(path.c_str(), "wb");
  if (!fp) throw_input("cannot create {}: {}", shown_path, std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), fp) == text.size();
  const int err = errno;
  if (std::fclose(fp) != 0 || !ok)
    throw Error(fmt::format("cannot write {}: {}", shown_path, std::strerror(ok ? errno : err)));
}

constexpr size_t kMaxMetadataBytes = 16 << 20;

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// A multiscales dataset path must stay inside the store.
void check_inner_path(const std::string& inner, const std::string& file) {
  bool ok = !inner.empty() && inner[0] != '/' && inner.size() < 1024;
  for (const auto& part : fs::path(inner)) ok = ok && part != ".." && part != "." && !part.empty();
  if (!ok)
    throw_input("bad .zattrs {}: dataset path '{}' does not name an array inside the store", file,
                printable(inner));
}

// Level 0 of the first multiscales in a .zattrs (its dataset path), or "" without one.
std::string level0_path(const std::string& zattrs_text, const std::string& file,
                        bool* bioformats2raw) {
  const auto j = nlohmann::json::parse(zattrs_text, nullptr, false);
  if (j.is_discarded()) throw_input("malformed JSON in {}", file);
  if (!j.is_object()) throw_input("bad .zattrs {}: expected a JSON object", file);
  *bioformats2raw = j.contains("bioformats2raw.layout");
  if (!j.contains("multiscales")) return "";
  const auto& ms = j["multiscales"];
  if (!ms.is_array() || ms.empty() || !ms[0].is_object() || !ms[0].contains("datasets") ||
      !ms[0]["datasets"].is_array() || ms[0]["datasets"].empty() ||
      !ms[0]["datasets"][0].is_object() || !ms[0]["datasets"][0].contains("path") ||
      !ms[0]["datasets"][0]["path"].is_string())
    throw_input("bad .zattrs {}: multiscales[0] has no datasets[0].path", file);
  if (ms.size() > 1) log_warn("{} has {} multiscales images: reading the first", file, ms.size());
  const std::string p = ms[0]["datasets"][0]["path"].get<std::string>();
  check_inner_path(p, file);
  return p;
}

std::string chunk_key(const std::vector<int64_t>& idx, char sep) {
  std::string k;
  for (size_t i = 0; i < idx.size(); ++i) {
    if (i) k += sep;
    k += std::to_string(idx[i]);
  }
  return k;
}

// Reads a chunk file into `buf`; false when it does not exist (the chunk is fill_value).
bool read_chunk_file(const std::string& path, size_t limit, std::vector<uint8_t>& buf) {
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw_input("cannot read Zarr chunk {}: {}", path, std::strerror(errno));
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(fp, &std::fclose);
  if (fseeko(fp, 0, SEEK_END) != 0)
    throw_input("cannot read Zarr chunk {}: {}", path, std::strerror(errno));
  const off_t size = ftello(fp);
  if (size < 0) throw_input("cannot read Zarr chunk {} (is it a directory?)", path);
  if (static_cast<uint64_t>(size) > limit)
    throw_input("corrupt Zarr chunk {}: {} bytes, more than a chunk's {} bytes can encode to", path,
                size, limit);
  buf.resize(static_cast<size_t>(size));
  std::rewind(fp);
  if (size > 0 && std::fread(buf.data(), 1, buf.size(), fp) != buf.size())
    throw_input("cannot read Zarr chunk {}: {}", path, std::strerror(errno));
  return true;
}

template <typename T>
void fill_typed(uint8_t* out, int64_t n, double v) {
  const T x = static_cast<T>(v);
  std::fill(reinterpret_cast<T*>(out), reinterpret_cast<T*>(out) + n, x);
}

void fill_chunk(const ZarrArrayMeta& m, uint8_t* out) {
  if (m.dtype == DType::U8)
    fill_typed<uint8_t>(out, m.chunk_elements, m.fill_value);
  else if (m.dtype == DType::U16)
    fill_typed<uint16_t>(out, m.chunk_elements, m.fill_value);
  else
    fill_typed<float>(out, m.chunk_elements, m.fill_value);
}

}  // namespace

void decode_zarr_chunk(const ZarrArrayMeta& m, const uint8_t* src, size_t size, uint8_t* out,
                       const std::string& file) {
  const size_t want = static_cast<size_t>(m.chunk_bytes);
  const size_t item = dtype_size(m.dtype);
  if (m.compressor.empty()) {
    if (size != want)
      throw_input("corrupt Zarr chunk {}: {} bytes, an uncompressed chunk has {}", file, size,
                  want);
    std::memcpy(out, src, want);
  } else if (m.compressor == "blosc") {
    size_t nbytes = 0;
    if (size < BLOSC_MIN_HEADER_LENGTH || blosc_cbuffer_validate(src, size, &nbytes) != 0)
      throw_input("corrupt Zarr chunk {}: not a valid blosc buffer ({} bytes)", file, size);
    if (nbytes != want)
      throw_input("corrupt Zarr chunk {}: blosc data decode to {} bytes, a chunk has {}", file,
                  nbytes, want);
    const int got = blosc_decompress_ctx(src, out, want, 1);
    if (got < 0 || static_cast<size_t>(got) != want)
      throw_input("corrupt Zarr chunk {}: blosc cannot decode it (code {})", file, got);
  } else if (m.compressor == "zstd") {
    const unsigned long long content = ZSTD_getFrameContentSize(src, size);
    if (content == ZSTD_CONTENTSIZE_ERROR)
      throw_input("corrupt Zarr chunk {}: not a zstd frame", file);
    if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != want)
      throw_input("corrupt Zarr chunk {}: zstd data decode to {} bytes, a chunk has {}", file,
                  content, want);
    const size_t got = ZSTD_decompress(out, want, src, size);
    if (ZSTD_isError(got))
      throw_input("corrupt Zarr chunk {}: zstd: {}", file, ZSTD_getErrorName(got));
    if (got != want)
      throw_input("corrupt Zarr chunk {}: zstd data decode to {} bytes, a chunk has {}", file, got,
                  want);
  } else if (m.compressor == "zlib" || m.compressor == "gzip") {
    inflate_exact(src, size, out, want, file, m.compressor.c_str());
  } else {
    throw_input("unsupported compressor '{}' for {}", m.compressor, file);
  }
  if (m.big_endian && item > 1) swap_bytes(out, want, item);
}

}  // namespace io

// ---- reading ------------------------------------------------------------------------------

ZarrReader::ZarrReader(const std::string& path, const ReadOptions& opts) : path_(path) {
  const VolumePath vp = parse_volume_path(path);
  if (vp.format != VolumeFormat::Zarr) throw_input("not a Zarr path: {}", path);
  const fs::path root(vp.file);
  if (!io::is_dir(root)) {
    std::error_code ec;
    if (fs::exists(root, ec)) throw_input("not a Zarr store: {} is not a directory", vp.file);
    throw_input("input file not found: {}", vp.file);
  }
  fs::path dir = vp.inner.empty() ? root : root / vp.inner;
  std::string zattrs_text, zattrs_file, dataset;
  for (int hop = 0;; ++hop) {
    if (io::is_file(dir / ".zarray")) {
      // An array: its group's multiscales (if any, and inside the store) say what it is.
      if (dir != root) {
        const fs::path group = dir.parent_path();
        if (io::is_file(group / ".zattrs") && zattrs_text.empty()) {
          zattrs_file = (group / ".zattrs").string();
          zattrs_text = io::read_small_file(zattrs_file, io::kMaxMetadataBytes);
        }
        if (dataset.empty()) dataset = dir.filename().string();
      }
      break;
    }
    if (!io::is_dir(dir))
      throw_input("not a Zarr store or array: {} is not a directory", dir.string());
    if (hop > 2 || !io::is_file(dir / ".zattrs")) {
      std::string arrays;
      std::error_code ec;
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (io::is_file(it->path() / ".zarray"))
          arrays += (arrays.empty() ? "" : ", ") + it->path().filename().string();
      if (io::is_file(dir / ".zgroup") || io::is_file(dir / ".zattrs"))
        throw_input(
            "{} is a Zarr group without OME multiscales metadata: name one of its arrays ({}), "
            "e.g. {}/NAME",
            dir.string(), arrays.empty() ? "it has none" : arrays, dir.string());
      throw_input("not a Zarr store: {} has no .zarray, .zgroup or .zattrs", dir.string());
    }
    zattrs_file = (dir / ".zattrs").string();
    zattrs_text = io::read_small_file(zattrs_file, io::kMaxMetadataBytes);
    bool b2r = false;
    dataset = io::level0_path(zattrs_text, zattrs_file, &b2r);
    if (dataset.empty() && b2r) {  // bioformats2raw: series 0 is an OME-Zarr image
      if (io::is_dir(dir / "1"))
        log_warn("{} holds several bioformats2raw series: reading series 0", dir.string());
      dir /= "0";
      zattrs_text.clear();
      continue;
    }
    if (dataset.empty()) {
      hop = 99;  // report the group as above
      continue;
    }
    dir /= dataset;
    if (!io::is_file(dir / ".zarray"))
      throw_input("bad OME-Zarr store {}: level 0 array {} has no .zarray", path, dir.string());
  }
  array_dir_ = dir.string();
  const std::string zarray_file = (dir / ".zarray").string();
  layout_ = io::parse_zarr_layout(io::read_small_file(zarray_file, io::kMaxMetadataBytes),
                                  zarray_file, zattrs_text, zattrs_file, dataset);
  const io::ZarrLayout& l = layout_;
  time_ = io::select_index(opts.time, l.size(l.axis_t), "time point", "--time", path);
  channel_ = io::select_index(opts.channel, l.size(l.axis_c), "channel", "--channel", path);
  shape_ = {l.size(l.axis_z), l.size(l.axis_y), l.size(l.axis_x)};
  if (shape_.z == 1 && !opts.allow_2d)
    throw_input(
        "{} is a 2D image ({}x{} pixels, one plane): a 3D stack (several z planes) is needed", path,
        shape_.x, shape_.y);
}

Volume ZarrReader::read_box(Shape3 origin, Shape3 size) const {
  const io::ZarrArrayMeta& m = layout_.array;
  const int64_t o[3] = {origin.z, origin.y, origin.x}, n[3] = {size.z, size.y, size.x};
  const int64_t full[3] = {shape_.z, shape_.y, shape_.x};
  for (int k = 0; k < 3; ++k)
    if (o[k] < 0 || n[k] < 1 || o[k] > full[k] || n[k] > full[k] - o[k])
      throw_input("box at {} of size {} is outside {} ({})", to_string(origin), to_string(size),
                  path_, to_string(shape_));
  const size_t item = dtype_size(m.dtype);
  io::check_fits_in_memory(double(size.numel()) * double(item), size, m.dtype, path_);
  Volume out(size, m.dtype, layout_.voxel, layout_.unit);

  // Per array dimension: the range of chunks to visit and what each output axis maps to.
  const size_t ndim = m.shape.size();
  const int spatial_axis[3] = {layout_.axis_z, layout_.axis_y, layout_.axis_x};
  std::vector<int64_t> lo(ndim), hi(ndim), fixed(ndim, 0);
  std::vector<char> spatial(ndim, 0);
  for (size_t d = 0; d < ndim; ++d) {
    const int di = static_cast<int>(d);
    if (di == layout_.axis_t) fixed[d] = time_;
    if (di == layout_.axis_c) fixed[d] = channel_;
    lo[d] = hi[d] = fixed[d] / m.chunks[d];
    for (int k = 0; k < 3; ++k)
      if (spatial_axis[k] == di) {
        spatial[d] = 1;
        lo[d] = o[k] / m.chunks[d];
        hi[d] = (o[k] + n[k] - 1) / m.chunks[d];
      }
  }
  std::vector<std::vector<int64_t>> todo;
  {
    std::vector<int64_t> idx = lo;
    for (;;) {
      todo.push_back(idx);
      size_t d = ndim;
      while (d > 0 && idx[d - 1] == hi[d - 1]) idx[d - 1] = lo[d - 1], --d;
      if (d == 0) break;
      ++idx[d - 1];
    }
  }
  // C-order strides of a decoded chunk, in elements.
  std::vector<int64_t> stride(ndim, 1);
  for (size_t d = ndim - 1; d > 0; --d) stride[d - 1] = stride[d] * m.chunks[d];

  const size_t file_limit =
      static_cast<size_t>(m.chunk_bytes) + static_cast<size_t>(m.chunk_bytes) / 8 + 65536;
  auto* dst = static_cast<uint8_t*>(out.raw());
  std::string first_error;
  bool failed_input = false;
  const int64_t n_todo = static_cast<int64_t>(todo.size());
#pragma omp parallel
  {
    std::vector<uint8_t> encoded, decoded(static_cast<size_t>(m.chunk_bytes));
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < n_todo; ++i) {
      try {
        const auto& idx = todo[static_cast<size_t>(i)];
        const std::string file = array_dir_ + "/" + io::chunk_key(idx, m.separator);
        if (io::read_chunk_file(file, file_limit, encoded))
          io::decode_zarr_chunk(m, encoded.data(), encoded.size(), decoded.data(), file);
        else
          io::fill_chunk(m, decoded.data());
        // Offset of the fixed (t, c, other) coordinates inside the chunk, then of the box.
        int64_t base = 0;
        for (size_t d = 0; d < ndim; ++d)
          if (!spatial[d]) base += (fixed[d] - idx[d] * m.chunks[d]) * stride[d];
        int64_t c0[3], c1[3], st[3];  // intersection in image coordinates, chunk strides
        for (int k = 0; k < 3; ++k) {
          const int a = spatial_axis[k];
          if (a < 0) {
            c0[k] = 0, c1[k] = 1, st[k] = 0;
            continue;
          }
          const size_t d = static_cast<size_t>(a);
          const int64_t chunk0 = idx[d] * m.chunks[d];
          c0[k] = std::max(o[k], chunk0);
          c1[k] = std::min({o[k] + n[k], chunk0 + m.chunks[d], m.shape[d]});
          st[k] = stride[d];
          base += (c0[k] - chunk0) * st[k];
        }
        const bool x_contiguous = st[2] == 1;
        for (int64_t z = c0[0]; z < c1[0]; ++z)
          for (int64_t y = c0[1]; y < c1[1]; ++y) {
            const int64_t src_off = base + (z - c0[0]) * st[0] + (y - c0[1]) * st[1];
            uint8_t* row = dst + (((z - o[0]) * n[1] + (y - o[1])) * n[2] + (c0[2] - o[2])) *
                                     static_cast<int64_t>(item);
            const uint8_t* src = decoded.data() + src_off * static_cast<int64_t>(item);
            if (x_contiguous) {
              std::memcpy(row, src, static_cast<size_t>(c1[2] - c0[2]) * item);
            } else {
              for (int64_t x = 0; x < c1[2] - c0[2]; ++x)
                std::memcpy(row + x * static_cast<int64_t>(item),
                            src + x * st[2] * static_cast<int64_t>(item), item);
            }
          }
      } catch (const std::exception& e) {
#pragma omp critical(zarr_read_error)
        if (first_error.empty()) {
          first_error = e.what();
          failed_input = dynamic_cast<const InputError*>(&e) != nullptr;
        }
      }
    }
  }
  if (!first_error.empty()) {
    if (failed_input) throw InputError(first_error);
    throw Error(first_error);
  }
  return out;
}

// ---- writing ------------------------------------------------------------------------------

namespace {

// Largest chunk edge lengths the writer picks by itself: at most 32 x 256 x 256 voxels
// (8 MiB of float32), small enough for a viewer to fetch, large enough for few files.
Shape3 auto_chunks(Shape3 s, Shape3 asked) {
  auto pick = [](int64_t want, int64_t n, int64_t dflt) {
    return std::min(n, want > 0 ? want : dflt);
  };
  return {pick(asked.z, s.z, 32), pick(asked.y, s.y, 256), pick(asked.x, s.x, 256)};
}

int64_t ceil_div(int64_t a, int64_t b) {
  return a / b + (a % b != 0);
}

// An existing directory the writer may replace: empty, or a Zarr store.
bool replaceable_store(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(p, ec))) return true;
  if (!fs::is_directory(fs::symlink_status(p, ec))) return false;
  if (fs::is_empty(p, ec)) return true;
  return fs::exists(p / ".zgroup", ec) || fs::exists(p / ".zarray", ec) ||
         fs::exists(p / ".zattrs", ec);
}

// 2x2 mean of each plane (the last row/column of an odd size averages what is there).
template <typename T>
void halve_planes(const T* src, int64_t nz, int64_t ny, int64_t nx, T* dst) {
  const int64_t my = ceil_div(ny, 2), mx = ceil_div(nx, 2);
#pragma omp parallel for schedule(static)
  for (int64_t z = 0; z < nz; ++z)
    for (int64_t y = 0; y < my; ++y)
      for (int64_t x = 0; x < mx; ++x) {
        double sum = 0;
        int cnt = 0;
        for (int64_t dy = 0; dy < 2 && 2 * y + dy < ny; ++dy)
          for (int64_t dx = 0; dx < 2 && 2 * x + dx < nx; ++dx, ++cnt)
            sum += static_cast<double>(src[(z * ny + 2 * y + dy) * nx + 2 * x + dx]);
        const double mean = sum / cnt;
        T& out = dst[(z * my + y) * mx + x];
        if constexpr (std::is_floating_point_v<T>)
          out = static_cast<T>(mean);
        else
          out = static_cast<T>(std::floor(mean + 0.5));
      }
}

}  // namespace

ZarrWriter::ZarrWriter(const std::string& path, Shape3 shape, DType dtype, VoxelSize voxel,
                       const std::string& unit, const ZarrWriteOptions& opts)
    : path_(path), shape_(shape), dtype_(dtype), opts_(opts) {
  const VolumePath vp = parse_volume_path(path);
  if (vp.format != VolumeFormat::Zarr || !vp.inner.empty())
    throw_input("cannot write {}: an OME-Zarr output path must end in .zarr or .ome.zarr", path);
  if (shape.z < 1 || shape.y < 1 || shape.x < 1)
    throw_input("cannot write an empty volume to {}", path);
  if (opts.levels < 1 || opts.levels > 32)
    throw_input("--pyramid {} must be 1..32 (levels, 1 = full resolution only)", opts.levels);
  if (opts.chunks.z < 0 || opts.chunks.y < 0 || opts.chunks.x < 0)
    throw_input("chunk shape {} for {} must be positive (0: automatic)", to_string(opts.chunks),
                path);
  std::string store = vp.file;
  while (store.size() > 1 && store.back() == '/') store.pop_back();
  path_ = store;
  if (!replaceable_store(store))
    throw_input("cannot write {}: it exists and is not a Zarr store (it would be replaced)", store);
  chunks_ = auto_chunks(shape, opts.chunks);
  const size_t item = dtype_size(dtype);
  if (!checked_product({chunks_.z, chunks_.y, chunks_.x, static_cast<int64_t>(item)}, int64_t(1)
                                                                                          << 30))
    throw_input("chunk shape {} for {} is over 1 GiB per chunk", to_string(chunks_), path);

  // Pyramid levels while halving still changes the plane (a 1x1 plane is the last).
  level_shapes_.push_back(shape);
  while (static_cast<int>(level_shapes_.size()) < opts.levels) {
    const Shape3 p = level_shapes_.back();
    if (p.y == 1 && p.x == 1) {
      log_info("{}: {} pyramid levels (a 1x1 plane is the smallest), not {}", path,
               level_shapes_.size(), opts.levels);
      break;
    }
    level_shapes_.push_back({p.z, ceil_div(p.y, 2), ceil_div(p.x, 2)});
  }
  written_.assign(static_cast<size_t>(ceil_div(shape.z, chunks_.z) * ceil_div(shape.y, chunks_.y) *
                                      ceil_div(shape.x, chunks_.x)),
                  0);

  const bool resume = !opts.resume_dir.empty();
  out_ = resume ? std::make_unique<AtomicOutput>(store, AtomicOutput::Directory, opts.resume_dir)
                : std::make_unique<AtomicOutput>(store, AtomicOutput::Directory);
  const fs::path tmp(out_->temp_path());
  std::error_code ec;

  // Metadata: voxel size as the scale of each level, in micrometres when it is a length.
  const double f = unit_to_micron(unit);
  double vs[3] = {voxel.z, voxel.y, voxel.x};
  if (f > 0)
    for (double& v : vs) v = scale_to_micron(v, f);
  else if (unit != "pixel" && !unit.empty())
    log_warn(
        "voxel size {} x {} x {} {} has no NGFF unit: {} is written with the scale but no unit",
        voxel.z, voxel.y, voxel.x, unit, path);
  nlohmann::json axes = nlohmann::json::array();
  for (const char* name : {"z", "y", "x"}) {
    nlohmann::json a = {{"name", name}, {"type", "space"}};
    if (f > 0) a["unit"] = "micrometer";
    axes.push_back(a);
  }
  nlohmann::json datasets = nlohmann::json::array();
  for (size_t l = 0; l < level_shapes_.size(); ++l) {
    const double k = std::ldexp(1.0, static_cast<int>(l));
    nlohmann::json transforms = nlohmann::json::array();
    transforms.push_back({{"type", "scale"}, {"scale", {vs[0], vs[1] * k, vs[2] * k}}});
    // Level l voxel 0 averages level-0 voxels 0 .. 2^l - 1: its centre sits (2^l - 1) / 2
    // level-0 voxels in (NGFF coordinates are voxel centres).
    const double shift = (k - 1) / 2;
    if (l > 0)
      transforms.push_back(
          {{"type", "translation"}, {"translation", {0.0, vs[1] * shift, vs[2] * shift}}});
    datasets.push_back({{"path", std::to_string(l)}, {"coordinateTransformations", transforms}});
  }
  nlohmann::json ms = {{"version", "0.4"},
                       {"name", fs::path(store).filename().string()},
                       {"axes", axes},
                       {"datasets", datasets}};
  if (level_shapes_.size() > 1) {
    ms["type"] = "mean";
    ms["metadata"] = {
        {"description", "levels 1.. average 2x2 pixels of the level above in y and x; z is kept"},
        {"method", std::string("isoprompt ") + ISOPROMPT_VERSION}};
  }
  nlohmann::json zattrs = nlohmann::json::object();
  zattrs["multiscales"] = nlohmann::json::array({ms});
  std::vector<std::string> zarrays;
  for (size_t l = 0; l < level_shapes_.size(); ++l) {
    const Shape3 s = level_shapes_[l];
    const nlohmann::json za = {
        {"zarr_format", 2},
        {"shape", {s.z, s.y, s.x}},
        {"chunks", {chunks_.z, std::min(chunks_.y, s.y), std::min(chunks_.x, s.x)}},
        {"dtype", io::zarr_dtype(dtype)},
        {"compressor", io::compressor_json(opts.compressor)},
        {"fill_value", 0},
        {"filters", nullptr},
        {"order", "C"},
        {"dimension_separator", "."}};
    zarrays.push_back(za.dump(4) + "\n");
  }
  const std::string zattrs_text = zattrs.dump(4) + "\n";
  if (resume) {
    // The same layout: keep the chunks an earlier run wrote. Anything else is started over.
    bool same = io::is_dir(tmp);
    try {
      same = same && io::read_small_file((tmp / ".zattrs").string(), 1 << 20) == zattrs_text;
      for (size_t l = 0; same && l < zarrays.size(); ++l)
        same = io::read_small_file((tmp / std::to_string(l) / ".zarray").string(), 1 << 20) == zarrays[l];
    } catch (const InputError&) {
      same = false;
    }
    if (same) {
      const int64_t gz = ceil_div(shape.z, chunks_.z), gy = ceil_div(shape.y, chunks_.y),
                    gx = ceil_div(shape.x, chunks_.x);
      int64_t kept = 0;
      for (int64_t i = 0; i < gz * gy * gx; ++i)
        if (io::is_file(tmp / "0" / fmt::format("{}.{}.{}", i / (gy * gx), i / gx % gy, i % gx))) {
          written_[static_cast<size_t>(i)] = 1;
          ++kept;
        }
      // Debug: the caller says what is being continued (a rank also reopens a store to see
      // the chunks the other ranks wrote).
      log_debug("{}: continuing in {} ({} of {} chunks already written)", path, tmp.string(), kept, gz * gy * gx);
      return;
    }
  }
  fs::remove_all(tmp, ec);  // a leftover of an earlier, killed run (same PID, or another layout)
  if (!fs::create_directories(tmp, ec))
    throw_input("cannot create {}: {}", tmp.string(), ec ? ec.message() : "exists");
  io::write_text_file((tmp / ".zgroup").string(), "{\n    \"zarr_format\": 2\n}\n", path);
  io::write_text_file((tmp / ".zattrs").string(), zattrs_text, path);
  for (size_t l = 0; l < level_shapes_.size(); ++l) {
    const fs::path dir = tmp / std::to_string(l);
    if (!fs::create_directory(dir, ec))
      throw_input("cannot create {}: {}", dir.string(), ec.message());
    io::write_text_file((dir / ".zarray").string(), zarrays[l], path);
  }
}

bool ZarrWriter::has_chunk(int64_t cz, int64_t cy, int64_t cx) const {
  const int64_t gy = ceil_div(shape_.y, chunks_.y), gx = ceil_div(shape_.x, chunks_.x);
  return written_[static_cast<size_t>((cz * gy + cy) * gx + cx)] != 0;
}

const std::string& ZarrWriter::build_dir() const {
  return out_->temp_path();
}

ZarrWriter::~ZarrWriter() = default;

// Chunk (cz, cy, cx) of `level` from `src`, a C-order block of src_shape whose voxel 0 sits
// at src_origin of the level: padded with the fill value (0) to a full chunk, encoded, written.
void ZarrWriter::write_level_chunk(int level, int64_t cz, int64_t cy, int64_t cx,
                                   const uint8_t* src, Shape3 src_shape, Shape3 src_origin) {
  const Shape3 ls = level_shapes_[static_cast<size_t>(level)];
  const Shape3 ch{chunks_.z, std::min(chunks_.y, ls.y), std::min(chunks_.x, ls.x)};
  const size_t item = dtype_size(dtype_);
  std::vector<uint8_t> raw(static_cast<size_t>(ch.numel()) * item, 0);
  const int64_t z0 = cz * ch.z, y0 = cy * ch.y, x0 = cx * ch.x;
  const int64_t nz = std::min(ch.z, ls.z - z0), ny = std::min(ch.y, ls.y - y0),
                nx = std::min(ch.x, ls.x - x0);
  for (int64_t z = 0; z < nz; ++z)
    for (int64_t y = 0; y < ny; ++y) {
      const int64_t sz = z0 + z - src_origin.z, sy = y0 + y - src_origin.y, sx = x0 - src_origin.x;
      std::memcpy(raw.data() + static_cast<size_t>((z * ch.y + y) * ch.x) * item,
                  src + static_cast<size_t>((sz * src_shape.y + sy) * src_shape.x + sx) * item,
                  static_cast<size_t>(nx) * item);
    }
  const std::vector<uint8_t> enc = io::encode_chunk(opts_.compressor, raw.data(), raw.size(), item);
  const std::string file =
      (fs::path(out_->temp_path()) / std::to_string(level) / fmt::format("{}.{}.{}", cz, cy, cx))
          .string();
  // Resumable stores: written aside and renamed, so a chunk file that exists is whole.
  const bool atomic = !opts_.resume_dir.empty();
  const std::string part = atomic ? file + ".part" : file;
  std::FILE* fp = std::fopen(part.c_str(), "wb");
  if (!fp) throw Error(fmt::format("cannot create {}: {}", part, std::strerror(errno)));
  const bool ok = std::fwrite(enc.data(), 1, enc.size(), fp) == enc.size();
  const int err = errno;
  if (std::fclose(fp) != 0 || !ok)
    throw Error(
        fmt::format("cannot write {}: {} (disk full?)", path_, std::strerror(ok ? errno : err)));
  if (atomic && std::rename(part.c_str(), file.c_str()) != 0)
    throw Error(fmt::format("cannot rename {} to {}: {}", part, file, std::strerror(errno)));
}

void ZarrWriter::write_chunk(int64_t cz, int64_t cy, int64_t cx, const void* block) {
  if (levels() > 1)
    throw Error("ZarrWriter::write_chunk writes level 0 only: use write_slab for a pyramid");
  const int64_t gz = ceil_div(shape_.z, chunks_.z), gy = ceil_div(shape_.y, chunks_.y),
                gx = ceil_div(shape_.x, chunks_.x);
  if (cz < 0 || cy < 0 || cx < 0 || cz >= gz || cy >= gy || cx >= gx)
    throw Error(fmt::format("chunk {}.{}.{} is outside the {}x{}x{} chunk grid of {}", cz, cy, cx,
                            gz, gy, gx, path_));
  const Shape3 clipped{std::min(chunks_.z, shape_.z - cz * chunks_.z),
                       std::min(chunks_.y, shape_.y - cy * chunks_.y),
                       std::min(chunks_.x, shape_.x - cx * chunks_.x)};
  write_level_chunk(0, cz, cy, cx, static_cast<const uint8_t*>(block), clipped,
                    {cz * chunks_.z, cy * chunks_.y, cx * chunks_.x});
  written_[static_cast<size_t>((cz * gy + cy) * gx + cx)] = 1;
}

void ZarrWriter::write_slab(int64_t z0, int64_t n, const void* planes) {
  if (z0 < 0 || z0 >= shape_.z || z0 % chunks_.z != 0 || n != std::min(chunks_.z, shape_.z - z0))
    throw Error(fmt::format(
        "write_slab({}, {}) on {}: z0 must be a multiple of {} below {} and n the planes from "
        "there to the next chunk",
        z0, n, path_, chunks_.z, shape_.z));
  const size_t item = dtype_size(dtype_);
  std::vector<uint8_t> level_buf, next_buf;
  const uint8_t* src = static_cast<const uint8_t*>(planes);
  for (int l = 0; l < levels(); ++l) {
    const Shape3 ls = level_shapes_[static_cast<size_t>(l)];
    if (l > 0) {
      const Shape3 up = level_shapes_[static_cast<size_t>(l - 1)];
      next_buf.resize(static_cast<size_t>(n * ls.y * ls.x) * item);
      visit_dtype(dtype_, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        halve_planes<T>(reinterpret_cast<const T*>(src), n, up.y, up.x,
                        reinterpret_cast<T*>(next_buf.data()));
      });
      level_buf.swap(next_buf);
      src = level_buf.data();
    }
    const int64_t cy_n = ceil_div(ls.y, std::min(chunks_.y, ls.y)),
                  cx_n = ceil_div(ls.x, std::min(chunks_.x, ls.x));
    const int64_t n_chunks = cy_n * cx_n;
    std::string first_error;
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < n_chunks; ++i) {
      try {
        write_level_chunk(l, z0 / chunks_.z, i / cx_n, i % cx_n, src, {n, ls.y, ls.x}, {z0, 0, 0});
      } catch (const std::exception& e) {
#pragma omp critical(zarr_write_error)
        if (first_error.empty()) first_error = e.what();
      }
    }
    if (!first_error.empty()) throw Error(first_error);
  }
  const int64_t gy = ceil_div(shape_.y, chunks_.y), gx = ceil_div(shape_.x, chunks_.x);
  for (int64_t i = 0; i < gy * gx; ++i)
    written_[static_cast<size_t>(z0 / chunks_.z * gy * gx + i)] = 1;
}

void ZarrWriter::commit() {
  const auto missing = std::count(written_.begin(), written_.end(), uint8_t(0));
  if (missing > 0)
    throw Error(
        fmt::format("{}: {} of {} chunks were never written", path_, missing, written_.size()));
  out_->commit();
}

// ---- the plane source and sink (read_volume / write_volume) --------------------------------

namespace io {

namespace {

// An OME-Zarr image (or a plain array) opened for reading planes: ZarrReader's boxes of
// whole planes, decoding only the chunks they touch.
class ZarrSource final : public PlaneSource {
 public:
  ZarrSource(const std::string& path, const ReadOptions& opts) : r_(path, opts) {
    const ZarrLayout& l = r_.layout();
    shape = r_.shape();
    dtype = r_.dtype();
    voxel = r_.voxel_size();
    unit = r_.unit();
    where = path;
    info.path = path;
    info.container = "Zarr";
    info.flavor = l.ome ? "OME-Zarr" : "Zarr";
    info.format_version = l.ome ? l.ngff_version : "";
    info.compression = l.array.compression_name();
    info.big_endian = l.array.big_endian;
    info.tiled = true;
    info.chunks = {l.axis_z >= 0 ? l.array.chunks[static_cast<size_t>(l.axis_z)] : 1,
                   l.array.chunks[static_cast<size_t>(l.axis_y)],
                   l.array.chunks[static_cast<size_t>(l.axis_x)]};
    info.dataset =
        fs::relative(r_.array_dir(), parse_volume_path(path).file).lexically_normal().string();
    info.levels = l.n_levels;
    info.pages = r_.shape().z;
    info.channels = static_cast<int>(l.size(l.axis_c));
    info.times = static_cast<int>(l.size(l.axis_t));
    info.channel = r_.channel();
    info.time = r_.time();
    info.calibrated = l.calibrated;
    info.file_unit = l.file_unit;
    if (!info.calibrated)
      log_debug("{} has no calibration: voxel size 1,1,1 pixel (set it with --voxel-size)", path);
  }
  // read_box checks that the box fits in memory: for read_volume the whole volume, as before.
  Volume read(int64_t z0, int64_t n) override {
    return r_.read_box({z0, 0, 0}, {n, shape.y, shape.x});
  }

 private:
  ZarrReader r_;
};

// An OME-Zarr store written plane by plane: ZarrWriter's slabs of chunk_shape().z planes,
// taken straight from the caller's planes when they hold whole slabs, else buffered.
class ZarrSink final : public PlaneSink {
 public:
  ZarrSink(const std::string& path, const VolumeMeta& meta, const WriteOptions& opts,
           const SinkOptions& so)
      : w_(path, meta.shape, meta.dtype, meta.voxel, meta.unit, opts.zarr), meta_(meta) {
    const uint64_t bytes = uint64_t(meta.shape.numel()) * dtype_size(meta.dtype);
    if (so.whole && bytes > (uint64_t(256) << 20))
      progress_ = std::make_unique<Progress>("writing " + fs::path(path).filename().string(),
                                             meta.shape.z, "planes");
  }
  void write(const uint8_t* planes, int64_t n) override {
    const int64_t cz = w_.chunk_shape().z, nz = meta_.shape.z;
    const size_t plane_bytes = size_t(meta_.shape.y * meta_.shape.x) * dtype_size(meta_.dtype);
    while (n > 0) {
      const int64_t buffered = int64_t(pending_.size() / plane_bytes);
      const int64_t slab = std::min(cz, nz - z_);  // the last slab may be shorter
      if (buffered == 0 && n >= slab) {
        w_.write_slab(z_, slab, planes);
        planes += size_t(slab) * plane_bytes, n -= slab, z_ += slab;
      } else {
        const int64_t take = std::min(n, slab - buffered);
        pending_.insert(pending_.end(), planes, planes + size_t(take) * plane_bytes);
        planes += size_t(take) * plane_bytes, n -= take;
        if (buffered + take == slab) {
          w_.write_slab(z_, slab, pending_.data());
          pending_.clear();
          z_ += slab;
        }
      }
      if (progress_) progress_->update(z_);
    }
  }
  void commit() override {
    if (progress_) progress_->finish();
    w_.commit();
  }

 private:
  ZarrWriter w_;
  VolumeMeta meta_;
  std::vector<uint8_t> pending_;  // planes of a partial chunk slab
  int64_t z_ = 0;                 // planes in written slabs
  std::unique_ptr<Progress> progress_;
};

}  // namespace

std::unique_ptr<PlaneSource> open_zarr_source(const std::string& path, const ReadOptions& opts,
                                              bool) {
  return std::make_unique<ZarrSource>(path, opts);
}

std::unique_ptr<PlaneSink> open_zarr_sink(const std::string& path, const VolumeMeta& meta,
                                          const WriteOptions& opts, const SinkOptions& so) {
  if (meta.shape.numel() == 0) throw_input("cannot write an empty volume to {}", path);
  return std::make_unique<ZarrSink>(path, meta, opts, so);
}

}  // namespace io
}  // namespace isoprompt
