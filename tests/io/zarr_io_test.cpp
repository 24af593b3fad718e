// OME-Zarr reading and writing (library level): round trips with every compressor and
// dtype, exact values of hand-written stores (edge chunks, missing chunks, fill values,
// separators, big-endian, 5D), sub-box reads, the pyramid, atomic replacement, and the
// InputError message of each malformed piece of metadata.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/zarr.h"
#include "test_util.h"

using namespace isoprompt;
using namespace isoprompt::test;
namespace fs = std::filesystem;

namespace {

Volume ramp(DType t, Shape3 s) {
  Volume v(s, t, {0.5, 0.1, 0.125}, "micron");
  for (int64_t i = 0; i < v.numel(); ++i) {
    const uint32_t h = static_cast<uint32_t>(i + 3) * 2654435761u;
    switch (t) {
      case DType::U8:
        static_cast<uint8_t*>(v.raw())[i] = static_cast<uint8_t>(h >> 24);
        break;
      case DType::U16:
        static_cast<uint16_t*>(v.raw())[i] = static_cast<uint16_t>(h >> 16);
        break;
      case DType::F32:
        static_cast<float*>(v.raw())[i] = (float(h >> 12) - 524288.0f) / 64.0f;
        break;
    }
  }
  return v;
}

bool same_bytes(const Volume& a, const Volume& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

void put(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

template <typename T>
std::string bytes_of(std::initializer_list<T> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(T));
}

std::string read_error(const std::string& path, const ReadOptions& o = {}) {
  return test::input_error_of([&] { read_volume(path, o); });
}

const char* kZarray2x2 =
    R"({"zarr_format": 2, "shape": [3, 3, 3], "chunks": [2, 2, 2], "dtype": "<u2",
  "compressor": null, "fill_value": 7, "filters": null, "order": "C"})";

// A 3x3x3 uint16 array in 2x2x2 chunks without compression, one chunk file missing.
std::string write_small_store(const TempDir& dir, const std::string& zarray = kZarray2x2,
                              char sep = '.') {
  const std::string root = dir.file("small.zarr");
  put(root + "/.zarray", zarray);
  auto key = [&](int a, int b, int c) { return fmt::format("{}{}{}{}{}", a, sep, b, sep, c); };
  // Chunk (0,0,0) holds voxels z,y,x in 0..1; value 100*z + 10*y + x.
  std::vector<uint16_t> c(8);
  for (int z = 0; z < 2; ++z)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 2; ++x)
        c[(z * 2 + y) * 2 + x] = static_cast<uint16_t>(100 * z + 10 * y + x);
  put(root + "/" + key(0, 0, 0), std::string(reinterpret_cast<char*>(c.data()), 16));
  // Edge chunk (1,1,1): only its voxel (0,0,0) = image voxel (2,2,2) is inside the image;
  // the rest is padding that must be ignored.
  put(root + "/" + key(1, 1, 1), bytes_of<uint16_t>({222, 9, 9, 9, 9, 9, 9, 9}));
  // Chunk (0,0,1) covers x = 2 for z, y in 0..1.
  put(root + "/" + key(0, 0, 1), bytes_of<uint16_t>({2, 9, 12, 9, 102, 9, 112, 9}));
  return root;
}

}  // namespace

// Every compressor and dtype round-trips bit-exactly through partial edge chunks, with the
// voxel size exact.
TEST(ZarrIo, RoundTripEveryCompressorAndDtype) {
  TempDir dir;
  for (ZarrCompressor c :
       {ZarrCompressor::BloscLz4, ZarrCompressor::BloscZstd, ZarrCompressor::Zstd,
        ZarrCompressor::Zlib, ZarrCompressor::Gzip, ZarrCompressor::None})
    for (DType t : {DType::U8, DType::U16, DType::F32}) {
      SCOPED_TRACE(std::string(zarr_compressor_name(c)) + " " + dtype_name(t));
      const Volume v = ramp(t, {5, 7, 9});
      WriteOptions wo;
      wo.zarr.compressor = c;
      wo.zarr.chunks = {2, 3, 4};
      const std::string path =
          dir.file(fmt::format("{}_{}.ome.zarr", zarr_compressor_name(c), dtype_name(t)));
      write_volume(path, v, wo);
      TiffFileInfo fi;
      const Volume r = read_volume(path, {}, &fi);
      EXPECT_TRUE(same_bytes(v, r));
      EXPECT_EQ(r.voxel_size(), v.voxel_size());
      EXPECT_EQ(r.unit(), "micron");
      EXPECT_TRUE(fi.calibrated);
      EXPECT_EQ(fi.container, "Zarr");
      EXPECT_EQ(fi.flavor, "OME-Zarr");
      EXPECT_EQ(fi.dataset, "0");
      EXPECT_EQ(fi.chunks, (Shape3{2, 3, 4}));
      EXPECT_EQ(fi.compression, c == ZarrCompressor::BloscLz4    ? "blosc-lz4 (shuffle)"
                                : c == ZarrCompressor::BloscZstd ? "blosc-zstd (shuffle)"
                                                                 : zarr_compressor_name(c));
      // 3 x 3 x 3 chunks, all written, plus .zarray.
      EXPECT_EQ(files_in(path + "/0").size(), 28u);
    }
}

// The metadata written: NGFF 0.4 axes with micrometer units, the scale of each level, and
// the translation that keeps a lower level centred on the voxels it averages.
TEST(ZarrIo, WritesNgffMultiscales) {
  TempDir dir;
  Volume v = ramp(DType::U16, {3, 10, 7});
  v.set_voxel_size({300, 33.855, 33.855});
  v.set_unit("nm");
  WriteOptions wo;
  wo.zarr.levels = 3;
  write_volume(dir.file("p.ome.zarr"), v, wo);
  const auto attrs = nlohmann::json::parse(read_text(dir.file("p.ome.zarr/.zattrs")));
  const auto& ms = attrs["multiscales"][0];
  EXPECT_EQ(ms["version"], "0.4");
  EXPECT_EQ(ms["axes"].dump(), R"([{"name":"z","type":"space","unit":"micrometer"},)"
                               R"({"name":"y","type":"space","unit":"micrometer"},)"
                               R"({"name":"x","type":"space","unit":"micrometer"}])");
  ASSERT_EQ(ms["datasets"].size(), 3u);
  EXPECT_EQ(
      ms["datasets"][0].dump(),
      R"({"coordinateTransformations":[{"scale":[0.3,0.033855,0.033855],"type":"scale"}],"path":"0"})");
  // Level 2: 4x the pixel, centred 1.5 level-0 pixels in.
  const auto& t2 = ms["datasets"][2]["coordinateTransformations"];
  EXPECT_EQ(t2[0].dump(), R"({"scale":[0.3,0.13542,0.13542],"type":"scale"})");
  EXPECT_EQ(t2[1]["type"], "translation");
  EXPECT_EQ(t2[1]["translation"].get<std::vector<double>>(),
            (std::vector<double>{0.0, 0.033855 * 1.5, 0.033855 * 1.5}));
  const auto za = nlohmann::json::parse(read_text(dir.file("p.ome.zarr/2/.zarray")));
  EXPECT_EQ(za["shape"].dump(), "[3,3,2]");
  EXPECT_EQ(za["dtype"], "<u2");
  EXPECT_EQ(za["compressor"].dump(),
            R"({"blocksize":0,"clevel":5,"cname":"lz4","id":"blosc","shuffle":1})");
  EXPECT_EQ(za["dimension_separator"], ".");
  EXPECT_EQ(read_text(dir.file("p.ome.zarr/.zgroup")), "{\n    \"zarr_format\": 2\n}\n");
}

// Pyramid levels are 2x2 means in y and x (rounded for integers; edge cells average what
// is there), z kept; each level reads back as its own array.
TEST(ZarrIo, PyramidLevelsAreTwoByTwoMeans) {
  TempDir dir;
  Volume v({2, 3, 3}, DType::U8, {1, 1, 1}, "micron");
  const uint8_t vals[18] = {1, 2, 10, 3, 5, 20, 7, 8, 9, /**/ 0, 0, 255, 0, 1, 255, 4, 4, 4};
  std::memcpy(v.raw(), vals, 18);
  WriteOptions wo;
  wo.zarr.levels = 5;  // only 3 exist: 3x3 -> 2x2 -> 1x1
  write_volume(dir.file("m.zarr"), v, wo);
  TiffFileInfo fi;
  const Volume l1 = read_volume(dir.file("m.zarr/1"), {}, &fi);
  ASSERT_EQ(l1.shape(), (Shape3{2, 2, 2}));
  // z 0: (1+2+3+5)/4 = 2.75 -> 3, (10+20)/2 = 15, (7+8)/2 = 7.5 -> 8, 9; z 1: 0.25 -> 0, 255, 4, 4.
  const uint8_t want1[8] = {3, 15, 8, 9, 0, 255, 4, 4};
  EXPECT_EQ(std::memcmp(l1.raw(), want1, 8), 0);
  EXPECT_EQ(l1.voxel_size(), (VoxelSize{1, 2, 2}));
  EXPECT_EQ(fi.levels, 3);
  EXPECT_EQ(fi.dataset, "1");
  const Volume l2 = read_volume(dir.file("m.zarr/2"), {}, nullptr);
  ASSERT_EQ(l2.shape(), (Shape3{2, 1, 1}));
  EXPECT_EQ(l2.data<uint8_t>()[0], 9);   // (3 + 15 + 8 + 9) / 4 = 8.75
  EXPECT_EQ(l2.data<uint8_t>()[1], 66);  // (0 + 255 + 4 + 4) / 4 = 65.75
  EXPECT_FALSE(fs::exists(dir.file("m.zarr/3")));
}

// A hand-written store reads with its exact values: edge-chunk padding ignored, a missing
// chunk file is fill_value, for both dimension separators.
TEST(ZarrIo, ExactValuesEdgeChunksAndFillValue) {
  for (char sep : {'.', '/'}) {
    TempDir dir;
    std::string zarray = kZarray2x2;
    if (sep == '/') zarray.insert(zarray.size() - 1, R"(, "dimension_separator": "/")");
    const std::string root = write_small_store(dir, zarray, sep);
    const Volume v = read_volume(root);
    ASSERT_EQ(v.shape(), (Shape3{3, 3, 3}));
    EXPECT_EQ(v.unit(), "pixel");
    EXPECT_EQ(v.at<uint16_t>(1, 1, 1), 111);
    EXPECT_EQ(v.at<uint16_t>(0, 1, 0), 10);
    EXPECT_EQ(v.at<uint16_t>(1, 0, 2), 102);
    EXPECT_EQ(v.at<uint16_t>(1, 1, 2), 112);
    EXPECT_EQ(v.at<uint16_t>(2, 2, 2), 222);
    EXPECT_EQ(v.at<uint16_t>(0, 2, 0), 7);  // chunk (0,1,0) has no file
    EXPECT_EQ(v.at<uint16_t>(2, 0, 0), 7);
  }
}

// read_box decodes only the chunks a box touches and returns exactly that part.
TEST(ZarrIo, ReadBoxMatchesTheWholeVolume) {
  TempDir dir;
  const Volume v = ramp(DType::F32, {9, 11, 13});
  WriteOptions wo;
  wo.zarr.chunks = {4, 4, 5};
  wo.zarr.compressor = ZarrCompressor::Zstd;
  write_volume(dir.file("b.zarr"), v, wo);
  // Remove a chunk the box does not touch: reading the box must not need it.
  fs::remove(dir.file("b.zarr/0/0.0.0"));
  const ZarrReader r(dir.file("b.zarr"));
  const Volume box = r.read_box({5, 3, 6}, {3, 7, 6});
  for (int64_t z = 0; z < 3; ++z)
    for (int64_t y = 0; y < 7; ++y)
      for (int64_t x = 0; x < 6; ++x)
        ASSERT_EQ(box.at<float>(z, y, x), v.at<float>(z + 5, y + 3, x + 6));
  EXPECT_EQ(box.voxel_size(), v.voxel_size());
  EXPECT_EQ(test::input_error_of([&] { r.read_box({5, 3, 6}, {5, 7, 6}); }),
            "box at 5x3x6 of size 5x7x6 is outside " + dir.file("b.zarr") + " (9x11x13)");
}

// Big-endian dtypes are swapped to the machine's order; a 5D t,c,z,y,x array gives the
// chosen channel.
TEST(ZarrIo, BigEndianAnd5dChannels) {
  TempDir dir;
  const std::string be = dir.file("be.zarr");
  put(be + "/.zarray",
      R"({"zarr_format": 2, "shape": [2, 1, 2], "chunks": [2, 1, 2], "dtype": ">f4",
    "compressor": null, "fill_value": "NaN", "filters": [], "order": "C"})");
  put(be + "/0.0.0",
      std::string("\x3f\x80\x00\x00\xc0\x00\x00\x00\x41\x20\x00\x00\x00\x00\x00\x00", 16));
  const Volume v = read_volume(be);
  EXPECT_EQ(v.at<float>(0, 0, 0), 1.0f);
  EXPECT_EQ(v.at<float>(0, 0, 1), -2.0f);
  EXPECT_EQ(v.at<float>(1, 0, 0), 10.0f);
  EXPECT_EQ(v.at<float>(1, 0, 1), 0.0f);

  const std::string s5 = dir.file("five.ome.zarr");
  put(s5 + "/.zattrs", R"({"multiscales": [{"version": "0.4", "axes": [
      {"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
      {"name": "z", "type": "space", "unit": "nanometer"}, {"name": "y", "type": "space", "unit": "nanometer"},
      {"name": "x", "type": "space", "unit": "nanometer"}],
    "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 300, 33.855, 40]}]}],
    "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2, 1, 1]}]}]})");
  put(s5 + "/s0/.zarray", R"({"zarr_format": 2, "shape": [1, 3, 2, 1, 2], "chunks": [1, 2, 1, 1, 2],
    "dtype": "|u1", "compressor": null, "fill_value": 0, "filters": null, "order": "C"})");
  // Chunk c 0..1 at z 0 and z 1; channel 2 is in chunk c=1 (its second half is padding).
  put(s5 + "/s0/0.0.0.0.0", std::string("\x01\x02\x0b\x0c", 4));
  put(s5 + "/s0/0.0.1.0.0", std::string("\x03\x04\x0d\x0e", 4));
  put(s5 + "/s0/0.1.0.0.0", std::string("\x15\x16\x63\x63", 4));
  put(s5 + "/s0/0.1.1.0.0", std::string("\x17\x18\x63\x63", 4));
  ReadOptions ro;
  ro.channel = 1;
  TiffFileInfo fi;
  Volume c1 = read_volume(s5, ro, &fi);
  ASSERT_EQ(c1.shape(), (Shape3{2, 1, 2}));
  EXPECT_EQ(c1.at<uint8_t>(0, 0, 0), 11);
  EXPECT_EQ(c1.at<uint8_t>(1, 0, 1), 14);
  EXPECT_EQ(c1.voxel_size(),
            (VoxelSize{0.6, 0.033855, 0.04}));  // 2 x 300 nm; nm by the decimal exponent
  EXPECT_EQ(fi.channels, 3);
  EXPECT_EQ(fi.dataset, "s0");
  ro.channel = 2;
  c1 = read_volume(s5, ro);
  EXPECT_EQ(c1.at<uint8_t>(0, 0, 1), 22);
  EXPECT_EQ(c1.at<uint8_t>(1, 0, 0), 23);
  EXPECT_EQ(read_error(s5), s5 + " has 3 channels: choose one with --channel (0..2)");
  ro.channel = 3;
  EXPECT_EQ(read_error(s5, ro),
            "--channel 3 is out of range for " + s5 + ": it has 3 channels (0..2)");
}

// Each malformed piece of .zarray metadata is one InputError line naming the file and value.
TEST(ZarrIo, MalformedZarrayMessages) {
  TempDir dir;
  const std::string f = dir.file("bad.zarr/.zarray");
  auto msg = [&](const std::string& zarray) {
    put(f, zarray);
    return read_error(dir.file("bad.zarr"));
  };
  const std::string ok_tail =
      R"("compressor": null, "fill_value": 0, "order": "C", "zarr_format": 2)";
  auto z = [&](const std::string& fields) { return "{" + fields + ", " + ok_tail + "}"; };
  EXPECT_EQ(msg("{\"shape\": [2,"), "malformed JSON in " + f);
  EXPECT_EQ(msg("[1, 2]"), "bad Zarr metadata in " + f + ": expected a JSON object, got [1,2]");
  EXPECT_EQ(msg(R"({"zarr_format": 3, "shape": [1]})"),
            "unsupported Zarr format in " + f + ": zarr_format 3 (only Zarr v2 is supported)");
  EXPECT_EQ(msg(z(R"("shape": [4, 0, 4], "chunks": [2, 2, 2], "dtype": "<u2")")),
            "bad .zarray " + f + ": 'shape' must be a list of positive integers, got [4,0,4]");
  EXPECT_EQ(msg(z(R"("shape": [4, 4, 4], "chunks": [2, 2], "dtype": "<u2")")),
            "bad .zarray " + f + ": chunks [2,2] and shape [4,4,4] have different lengths");
  EXPECT_EQ(msg(z(R"("shape": [4, 4, 4], "chunks": [2, 2, 2], "dtype": "<i2")")),
            "unsupported dtype '<i2' in " + f + " (supported: |u1, <u2, >u2, <f4, >f4)");
  EXPECT_EQ(
      msg(R"({"shape": [4, 4, 4], "chunks": [2, 2, 2], "dtype": "<u2", "compressor": {"id": "lzma"},
                   "fill_value": 0, "zarr_format": 2})"),
      "unsupported compressor 'lzma' in " + f + " (supported: blosc, zstd, zlib, gzip, none)");
  EXPECT_EQ(msg(R"({"shape": [4, 4, 4], "chunks": [2, 2, 2], "dtype": "<u2", "compressor": null,
                   "fill_value": 0, "order": "F", "zarr_format": 2})"),
            "unsupported order \"F\" in " + f + " (only C order is supported)");
  EXPECT_EQ(msg(R"({"shape": [4, 4, 4], "chunks": [2, 2, 2], "dtype": "<u2", "compressor": null,
                   "fill_value": 0, "filters": [{"id": "delta", "dtype": "<u2"}], "zarr_format": 2})"),
            "unsupported filters [{\"dtype\":\"<u2\",\"id\":\"delta\"}] in " + f +
                " (only arrays without filters are supported)");
  EXPECT_EQ(msg(R"({"shape": [4, 4, 4], "chunks": [2, 2, 2], "dtype": "<u2", "compressor": null,
                   "fill_value": 70000, "zarr_format": 2})"),
            "bad .zarray " + f + ": fill_value 70000 is not a uint16 value");
  EXPECT_EQ(msg(R"({"shape": [4, 4, 4], "chunks": [2, 2, 2], "dtype": "<f4", "compressor": null,
                   "fill_value": 1e300, "zarr_format": 2})"),
            "bad .zarray " + f + ": fill_value 1e+300 is not a float32 value");
  EXPECT_EQ(msg(R"({"shape": [4, 4, 4], "chunks": [2, 2, 2], "dtype": "<u2", "compressor": null,
                   "fill_value": 0, "dimension_separator": "-", "zarr_format": 2})"),
            "bad .zarray " + f + ": dimension_separator \"-\" must be \".\" or \"/\"");
  EXPECT_EQ(
      msg(z(R"("shape": [4, 4, 4], "chunks": [4096, 4096, 4096], "dtype": "<f4")")),
      "implausible .zarray " + f + ": chunks [4096,4096,4096] hold more than 1 GiB per chunk");
  EXPECT_EQ(
      msg(z(R"("shape": [4611686018427387904, 4, 4], "chunks": [1, 4, 4], "dtype": "<u2")")),
      "implausible .zarray " + f + ": shape [4611686018427387904,4,4] has more than 2^63 bytes");
  EXPECT_EQ(msg(z(R"("shape": [2, 3, 4, 5], "chunks": [1, 1, 1, 1], "dtype": "<u2")")),
            f + " has 4 dimensions (2x3x4x5) and no OME-Zarr axes to say which is z, y and x");
}

// Each malformed piece of .zattrs multiscales metadata is one InputError line.
TEST(ZarrIo, MalformedZattrsMessages) {
  TempDir dir;
  const std::string store = dir.file("a.ome.zarr"), f = store + "/.zattrs";
  put(store + "/0/.zarray",
      R"({"zarr_format": 2, "shape": [2, 3, 4], "chunks": [2, 3, 4], "dtype": "|u1",
    "compressor": null, "fill_value": 0, "filters": null, "order": "C"})");
  put(store + "/0/0.0.0", std::string(24, '\1'));
  auto msg = [&](const std::string& axes, const std::string& transforms) {
    put(f, R"({"multiscales": [{"version": "0.4", "axes": )" + axes +
               R"(, "datasets": [{"path": "0", "coordinateTransformations": )" + transforms +
               "}]}]}");
    return read_error(store);
  };
  const std::string zyx = R"([{"name": "z", "type": "space"}, {"name": "y", "type": "space"},
                              {"name": "x", "type": "space"}])";
  const std::string unit_scale = R"([{"type": "scale", "scale": [1, 1, 1]}])";
  EXPECT_EQ(msg(zyx, R"([{"type": "scale", "scale": [1, 0, 1]}])"),
            "bad .zattrs " + f + ": dataset '0' scale [1,0,1] must be positive finite numbers");
  EXPECT_EQ(msg(zyx, R"([{"type": "scale", "scale": [1, 1]}])"),
            "bad .zattrs " + f + ": dataset '0' scale [1,1] must have 3 numbers (one per axis)");
  EXPECT_EQ(
      msg(zyx, R"([{"type": "affine", "affine": [1]}])"),
      "bad .zattrs " + f +
          ": dataset '0' has a coordinate transformation {\"affine\":[1],\"type\":\"affine\"} "
          "(only scale and translation are supported)");
  EXPECT_EQ(
      msg(R"([{"name": "y", "type": "space"}, {"name": "x", "type": "space"}])", unit_scale),
      "bad .zattrs " + f +
          ": multiscales axes [{\"name\":\"y\",\"type\":\"space\"},{\"name\":\"x\",\"type\":" +
          "\"space\"}] must list 3 axes (the array " + store + "/0/.zarray has 3 dimensions)");
  EXPECT_EQ(
      msg(R"([{"name": "q", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}])",
          unit_scale),
      "bad .zattrs " + f + ": axis 'q' (type 'space') of size 2 is not one of t, c, z, y, x");
  EXPECT_EQ(
      msg(R"([{"name": "z", "type": "space"}, {"name": "x", "type": "space"}, {"name": "x", "type": "space"}])",
          unit_scale),
      "bad .zattrs " + f + ": two 'x' axes");
  put(f, R"({"multiscales": [{"version": "0.4", "datasets": [{"path": "../../etc"}]}]})");
  EXPECT_EQ(
      read_error(store),
      "bad .zattrs " + f + ": dataset path '../../etc' does not name an array inside the store");
  put(f, R"({"multiscales": {"datasets": []}})");
  EXPECT_EQ(read_error(store), "bad .zattrs " + f + ": multiscales[0] has no datasets[0].path");
  put(f, R"({"multiscales": [)");
  EXPECT_EQ(read_error(store), "malformed JSON in " + f);
  // The same store with sane metadata reads (uncalibrated: no units, scale 1).
  EXPECT_EQ(msg(zyx, unit_scale), "(no InputError)");
}

// Stores and chunks that are not what their metadata says.
TEST(ZarrIo, CorruptChunksAndMissingStores) {
  TempDir dir;
  Volume v = ramp(DType::U16, {2, 4, 4});
  for (ZarrCompressor c : {ZarrCompressor::BloscLz4, ZarrCompressor::Zstd, ZarrCompressor::Gzip,
                           ZarrCompressor::None}) {
    WriteOptions wo;
    wo.zarr.compressor = c;
    const std::string path = dir.file(std::string(zarr_compressor_name(c)) + ".zarr");
    write_volume(path, v, wo);
    const std::string chunk = path + "/0/0.0.0";
    const std::string bytes = read_text(chunk);
    put(chunk, bytes.substr(0, bytes.size() / 2));
    const std::string e = read_error(path);
    SCOPED_TRACE(e);
    EXPECT_EQ(e.rfind("corrupt Zarr chunk " + chunk + ": ", 0), 0u);
  }
  EXPECT_EQ(read_error(dir.file("blosc-lz4.zarr")),
            "corrupt Zarr chunk " + dir.file("blosc-lz4.zarr/0/0.0.0") +
                ": not a valid blosc buffer (" +
                std::to_string(read_text(dir.file("blosc-lz4.zarr/0/0.0.0")).size()) + " bytes)");
  EXPECT_EQ(read_error(dir.file("none.zarr")), "corrupt Zarr chunk " +
                                                   dir.file("none.zarr/0/0.0.0") +
                                                   ": 32 bytes, an uncompressed chunk has 64");
  EXPECT_EQ(read_error(dir.file("nothing.zarr")),
            "input file not found: " + dir.file("nothing.zarr"));
  fs::create_directories(dir.file("empty.zarr"));
  EXPECT_EQ(read_error(dir.file("empty.zarr")),
            "not a Zarr store: " + dir.file("empty.zarr") + " has no .zarray, .zgroup or .zattrs");
  put(dir.file("group.zarr/.zgroup"), R"({"zarr_format": 2})");
  put(dir.file("group.zarr/labels/.zarray"), "{}");
  EXPECT_EQ(read_error(dir.file("group.zarr")),
            dir.file("group.zarr") +
                " is a Zarr group without OME multiscales metadata: name one of its arrays "
                "(labels), e.g. " +
                dir.file("group.zarr") + "/NAME");
}

// Writing replaces an existing store only once the new one is complete; a writer that
// never commits leaves the old store and no temporary directory; a directory that is not
// a Zarr store is never replaced.
TEST(ZarrIo, AtomicReplacement) {
  TempDir dir;
  const std::string path = dir.file("out.zarr");
  const Volume a = ramp(DType::U8, {2, 5, 5}), b = ramp(DType::U16, {3, 4, 4});
  write_volume(path, a);
  {
    ZarrWriter w(path, b.shape(), b.dtype(), b.voxel_size(), b.unit());
    w.write_slab(0, 3, b.raw());
    EXPECT_TRUE(same_bytes(read_volume(path), a));  // not committed yet
  }
  EXPECT_TRUE(same_bytes(read_volume(path), a));
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"out.zarr"});
  // A temporary store left by a killed process (here: a pid of no process) goes too.
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  put(dir.file(".out.zarr.tmp-" + std::to_string(child) + "/0/0.0.0"), "half written");
  write_volume(path, b);
  EXPECT_TRUE(same_bytes(read_volume(path), b));
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"out.zarr"});

  fs::create_directories(dir.file("photos.zarr/holiday"));
  EXPECT_EQ(test::input_error_of([&] { write_volume(dir.file("photos.zarr"), a); }),
            "cannot write " + dir.file("photos.zarr") + ": it exists and is not a Zarr store (it would be replaced)");
  EXPECT_TRUE(fs::exists(dir.file("photos.zarr/holiday")));
  EXPECT_EQ(test::input_error_of([&] { check_output_path(dir.file("photos.zarr")); }),
            "output path " + dir.file("photos.zarr") + " is a directory that is not a Zarr store (it would be replaced)");
  EXPECT_NO_THROW(check_output_path(path, {dir.file("in.tif")}));
  EXPECT_THROW(check_output_path(path, {path + "/0"}), InputError);  // the input's own store
  EXPECT_THROW(check_output_path(dir.file("x.h5"), {dir.file("x.h5:/data")}), InputError);
  EXPECT_EQ(test::input_error_of([&] { check_output_path(path + "/0"); }),
            "cannot write into an array of a Zarr store (" + path + "/0): write the whole store, " + path);
}

// The streaming interface: chunks written one by one (in any order) give the same store;
// a chunk never written is an internal error at commit, not a silent fill.
TEST(ZarrIo, WriterChunkByChunk) {
  TempDir dir;
  const Volume v = ramp(DType::U16, {3, 5, 4});
  ZarrWriteOptions zo;
  zo.chunks = {2, 3, 4};
  {
    ZarrWriter w(dir.file("c.zarr"), v.shape(), v.dtype(), v.voxel_size(), v.unit(), zo);
    EXPECT_EQ(w.chunk_shape(), (Shape3{2, 3, 4}));
    for (int64_t cz : {1, 0})
      for (int64_t cy : {0, 1}) {
        const Shape3 c{std::min<int64_t>(2, 3 - cz * 2), std::min<int64_t>(3, 5 - cy * 3), 4};
        std::vector<uint16_t> block;
        for (int64_t z = 0; z < c.z; ++z)
          for (int64_t y = 0; y < c.y; ++y)
            for (int64_t x = 0; x < c.x; ++x)
              block.push_back(v.at<uint16_t>(cz * 2 + z, cy * 3 + y, x));
        w.write_chunk(cz, cy, 0, block.data());
      }
    w.commit();
  }
  EXPECT_TRUE(same_bytes(read_volume(dir.file("c.zarr")), v));
  ZarrWriter w(dir.file("d.zarr"), v.shape(), v.dtype(), v.voxel_size(), v.unit(), zo);
  w.write_slab(0, 2, v.raw());
  try {
    w.commit();
    FAIL() << "no Error";
  } catch (const InputError&) {
    FAIL() << "an internal Error was expected";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir.file("d.zarr") + ": 2 of 4 chunks were never written");
  }
  EXPECT_FALSE(fs::exists(dir.file("d.zarr")));
}

// Which paths are which format.
TEST(ZarrIo, VolumePaths) {
  auto check = [](const std::string& p, VolumeFormat f, const std::string& file,
                  const std::string& inner) {
    const VolumePath vp = parse_volume_path(p);
    EXPECT_EQ(vp.format, f) << p;
    EXPECT_EQ(vp.file, file) << p;
    EXPECT_EQ(vp.inner, inner) << p;
  };
  check("a/stack.ome.zarr", VolumeFormat::Zarr, "a/stack.ome.zarr", "");
  check("a/stack.zarr/", VolumeFormat::Zarr, "a/stack.zarr", "");
  check("a/Stack.ZARR/0", VolumeFormat::Zarr, "a/Stack.ZARR", "0");
  check("a/s.zarr/0/1", VolumeFormat::Zarr, "a/s.zarr", "0/1");
  check("old.zarr/x.tif", VolumeFormat::Tiff, "old.zarr/x.tif", "");
  check("f.h5", VolumeFormat::Hdf5, "f.h5", "");
  check("d/f.hdf5:/g/data.v2", VolumeFormat::Hdf5, "d/f.hdf5", "/g/data.v2");
  check("f.H5:raw", VolumeFormat::Hdf5, "f.H5", "raw");
  check("stack.tif", VolumeFormat::Tiff, "stack.tif", "");
  check("noext", VolumeFormat::Tiff, "noext", "");
}
