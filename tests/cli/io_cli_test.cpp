// `isoprompt info` and `isoprompt convert` through the built binary: output text,
// output files, and the exact message and exit code for each kind of bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "isoprompt/io.h"
#include "test_util.h"
#include "tiff_fixtures.h"

using namespace isoprompt;
using namespace isoprompt::test;
namespace fs = std::filesystem;

namespace {

// A 3-plane uint16 stack with values up to 1000, calibrated 0.5 x 0.1 x 0.1 µm.
std::string small_stack(const TempDir& dir) {
  std::vector<RawPage> pages;
  for (int z = 0; z < 3; ++z) {
    RawPage p = make_page<uint16_t>(6, 5, [z](uint32_t y, uint32_t x) { return z * 400 + y * 20 + x; });
    p.description = "ImageJ=1.53t\nimages=3\nslices=3\nunit=micron\nspacing=0.5\nloop=false\n";
    p.xres = 10;
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("small.tif"), pages);
  return dir.file("small.tif");
}

}  // namespace

// `info` on the Fiji chromosome stack: z 0.15 µm, xy 0.0338542 µm, anisotropy 4.43.
TEST(CliInfo, ChromosomesText) {
  ISO_REQUIRE_SHARED(path, "data/neubias_chromosomes.tif");
  const CliResult r = run_cli({"info", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("format       ImageJ TIFF, classic TIFF, big-endian, uncompressed, striped, 40 pages\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("shape        40 x 152 x 126 (z, y, x)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dtype        uint16\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("voxel size   0.15 x 0.0338542 x 0.0338542 \xC2\xB5m (z, y, x)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("anisotropy   4.43 (z-step / xy-pixel)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("intensity    min 35  max 237  mean "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("percentiles  p0.1 97  p1 102  p50 118  p99 175  p99.8 191  p99.9 198\n"), std::string::npos)
      << r.out;
}

// `info --json` gives the same facts as one JSON object.
TEST(CliInfo, ChromosomesJson) {
  ISO_REQUIRE_SHARED(path, "data/neubias_chromosomes.tif");
  const CliResult r = run_cli({"info", path, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["shape"], nlohmann::json({40, 152, 126}));
  EXPECT_EQ(j["dtype"], "uint16");
  EXPECT_EQ(j["unit"], "micron");
  EXPECT_EQ(j["calibrated"], true);
  EXPECT_NEAR(j["voxel_size"][0].get<double>(), 0.15, 1e-9);
  EXPECT_EQ(j["voxel_size"][1].get<double>(), 0.03385417);
  EXPECT_EQ(j["voxel_size"][2].get<double>(), 0.03385417);
  EXPECT_NEAR(j["anisotropy"].get<double>(), 4.43, 0.005);
  EXPECT_EQ(j["format"]["flavor"], "ImageJ");
  EXPECT_EQ(j["format"]["bigtiff"], false);
  EXPECT_EQ(j["format"]["compression"], "none");
  EXPECT_EQ(j["intensity"]["min"], 35.0);
  EXPECT_EQ(j["intensity"]["max"], 237.0);
  EXPECT_EQ(j["percentiles"]["50"], 118.0);
  EXPECT_EQ(j["percentiles"]["99.9"], 198.0);
}

// Uncalibrated input says so; NaN/Inf in float data are counted and warned about.
TEST(CliInfo, UncalibratedAndNonFinite) {
  TempDir dir;
  Volume v({2, 2, 3}, DType::F32, {1, 1, 1}, "pixel");
  for (int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] = float(i);
  v.at<float>(0, 0, 1) = std::numeric_limits<float>::quiet_NaN();
  v.at<float>(1, 1, 1) = std::numeric_limits<float>::quiet_NaN();
  v.at<float>(1, 0, 0) = std::numeric_limits<float>::infinity();
  write_volume(dir.file("nan.tif"), v);
  const CliResult r = run_cli({"info", dir.file("nan.tif")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("voxel size   1 x 1 x 1 pixel (uncalibrated"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("anisotropy   unknown (uncalibrated)\n"), std::string::npos) << r.out;
  // finite values 0, 2, 3, 4, 5, 7, 8, 9, 11 -> min 0, max 11
  EXPECT_NE(r.out.find("intensity    min 0  max 11  mean 5.44444"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("non-finite   2 NaN, 1 Inf  (warning: excluded from the statistics)\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.err.find("warning: " + dir.file("nan.tif") + " contains 2 NaN and 1 Inf voxels"), std::string::npos)
      << r.err;
}

// A 2-channel hyperstack needs --channel; with it, info and convert use that channel.
TEST(CliInfo, HyperstackNeedsChannel) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int page = 0; page < 4; ++page) {  // c = page % 2, z = page / 2
    RawPage p = make_page<uint8_t>(3, 2, [page](uint32_t, uint32_t x) { return page * 10 + x; });
    p.description = "ImageJ=1.11a\nimages=4\nchannels=2\nslices=2\nhyperstack=true\n";
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("hs.tif"), pages);
  CliResult r = run_cli({"info", dir.file("hs.tif")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), dir.file("hs.tif") + " has 2 channels: choose one with --channel (0..1)");
  r = run_cli({"convert", dir.file("hs.tif"), dir.file("c1.tif"), "--channel", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume v = read_volume(dir.file("c1.tif"));
  ASSERT_EQ(v.shape(), (Shape3{2, 2, 3}));
  EXPECT_EQ(v.at<uint8_t>(0, 0, 0), 10);  // page 1
  EXPECT_EQ(v.at<uint8_t>(1, 1, 2), 32);  // page 3
}

// convert to OME-TIFF with deflate keeps values and calibration exactly.
TEST(CliConvert, ToOmeDeflateIsLossless) {
  TempDir dir;
  const std::string in = small_stack(dir);
  const CliResult r = run_cli({"convert", in, dir.file("out.ome.tif"), "--compression", "deflate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "wrote " + dir.file("out.ome.tif") +
                       ": 3x5x6 uint16, voxel 0.5 x 0.1 x 0.1 \xC2\xB5m, OME-TIFF, deflate\n");
  TiffFileInfo fi;
  const Volume a = read_volume(in), b = read_volume(dir.file("out.ome.tif"), {}, &fi);
  EXPECT_EQ(fi.flavor, "OME");
  EXPECT_EQ(fi.compression, "deflate");
  EXPECT_EQ(b.voxel_size(), a.voxel_size());
  ASSERT_EQ(b.shape(), a.shape());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.size_bytes()), 0);
}

// --voxel-size (in --unit) overrides the calibration; --dtype, --format and --bigtiff apply.
TEST(CliConvert, VoxelSizeDtypeFormatBigTiff) {
  TempDir dir;
  const std::string in = small_stack(dir);
  CliResult r = run_cli({"convert", in, dir.file("f.tif"), "--voxel-size", "300,33.855,33.855", "--unit", "nm",
                         "--dtype", "float32", "--format", "ome", "--bigtiff", "--compression", "lzw"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  TiffFileInfo fi;
  const Volume f = read_volume(dir.file("f.tif"), {}, &fi);
  EXPECT_EQ(fi.flavor, "OME");
  EXPECT_TRUE(fi.bigtiff);
  EXPECT_EQ(fi.compression, "LZW");
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.voxel_size(), (VoxelSize{0.3, 0.033855, 0.033855}));
  EXPECT_EQ(f.at<float>(2, 4, 5), 2 * 400 + 4 * 20 + 5);

  // uint16 -> uint8 clips values above 255, with a warning that says so.
  r = run_cli({"convert", in, dir.file("u8.tif"), "--dtype", "uint8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: values 0..885 of " + in + " do not fit uint8: they are clipped to 0..255"),
            std::string::npos)
      << r.err;
  const Volume u = read_volume(dir.file("u8.tif"));
  EXPECT_EQ(u.at<uint8_t>(0, 1, 2), 22);
  EXPECT_EQ(u.at<uint8_t>(2, 0, 0), 255);
  EXPECT_EQ(u.voxel_size(), (VoxelSize{0.5, 0.1, 0.1}));
}

// Every kind of bad input: exit code 2, one exact error line, and the existing output
// file is neither clobbered nor joined by a leftover temporary file.
TEST(CliErrors, BadInputsExitTwoAndLeaveOutputAlone) {
  TempDir dir, outdir;
  const std::string out = outdir.file("out.tif");
  write_bytes(out, "precious");

  const std::string missing = dir.file("missing.tif");
  const std::string text = dir.file("text.tif");
  write_bytes(text, "just some text\n");
  const std::string trunc = dir.file("trunc.tif");
  {
    write_raw_tiff(trunc, std::vector<RawPage>(3, make_page<uint8_t>(16, 16, [](uint32_t, uint32_t) { return 1; })));
    const std::string b = read_bytes(trunc);
    write_bytes(trunc, b.substr(0, b.size() - 30));
  }
  const std::string huge = dir.file("huge.tif");
  write_raw_tiff(huge, std::vector<RawPage>(2, make_page<uint16_t>(8, 8, [](uint32_t, uint32_t) { return 1; })));
  patch_first_ifd_long(huge, TIFFTAG_IMAGEWIDTH, 200000);
  patch_first_ifd_long(huge, TIFFTAG_IMAGELENGTH, 200000);
  patch_first_ifd_long(huge, TIFFTAG_ROWSPERSTRIP, 200000);
  const std::string flat = dir.file("flat.tif");
  write_raw_tiff(flat, {make_page<uint16_t>(7, 5, [](uint32_t, uint32_t) { return 1; })});
  const std::string i16 = dir.file("i16.tif");
  write_raw_tiff(i16, std::vector<RawPage>(2, make_page<int16_t>(4, 4, [](uint32_t, uint32_t) { return -1; })));
  const std::string mixed = dir.file("mixed.tif");
  write_raw_tiff(mixed, {make_page<uint8_t>(8, 8, [](uint32_t, uint32_t) { return 1; }),
                         make_page<uint8_t>(8, 6, [](uint32_t, uint32_t) { return 1; })});

  const struct {
    std::string in, message;
  } cases[] = {
      {missing, "input file not found: " + missing},
      {text, "not a TIFF file: " + text + " (no TIFF header at the start)"},
      {trunc, "truncated or corrupt TIFF file " + trunc + ": "},  // + libtiff's reason
      {huge, "implausible TIFF header in " + huge +
                 ": 200000x200000 pixels x 2 pages of uint16 (149.0 GiB) but the file has only "},
      {flat, flat + " is a 2D image (7x5 pixels, one plane): a 3D stack (several z planes) is needed"},
      {i16, "unsupported sample format in " + i16 + ": int16 (supported: uint8, uint16, float32)"},
      {mixed, "pages of different sizes in " + mixed + ": page 1 is 8x6 but page 0 is 8x8"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    const CliResult r = run_cli({"convert", c.in, out});
    EXPECT_EQ(r.exit_code, 2);
    const std::string line = error_line(r.err);
    EXPECT_EQ(line.substr(0, c.message.size()), c.message) << r.err;
    EXPECT_EQ(read_text(out), "precious");
    EXPECT_EQ(files_in(outdir.path()), std::vector<std::string>{"out.tif"});
  }
  // The huge-header file is refused without trying to allocate 149 GiB (exit 2, not 1).
  // The 2D file converts when asked to.
  const CliResult r2d = run_cli({"convert", flat, outdir.file("flat2d.tif"), "--allow-2d"});
  EXPECT_EQ(r2d.exit_code, 0) << r2d.err;
}

// Output paths: a missing directory, the input itself, a malformed --voxel-size.
TEST(CliErrors, BadOutputPathsAndFlags) {
  TempDir dir;
  const std::string in = small_stack(dir);
  const std::string before = read_bytes(in);
  CliResult r = run_cli({"convert", in, dir.file("no/such/dir/out.tif")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err),
            "output directory does not exist: " + dir.file("no/such/dir") + " (for " + dir.file("no/such/dir/out.tif") + ")");
  r = run_cli({"convert", in, in});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), "output path is the same file as the input: " + in);
  EXPECT_EQ(read_bytes(in), before);
  r = run_cli({"convert", in, dir.file("o.tif"), "--voxel-size", "1,2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), "--voxel-size expects three comma-separated numbers z,y,x, got '1,2'");
  EXPECT_FALSE(fs::exists(dir.file("o.tif")));
  r = run_cli({"info", dir.file("absent.tif")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), "input file not found: " + dir.file("absent.tif"));
}

// OME-Zarr and HDF5 through the CLI: convert writes them (compressor, pyramid), info shows
// their format and voxel size, and predict reads and writes a store like any stack.
TEST(CliZarr, ConvertInfoPredict) {
  TempDir dir;
  const std::string in = small_stack(dir), zarr = dir.file("out.ome.zarr");
  CliResult r = run_cli({"convert", in, zarr, "--compression", "zstd", "--pyramid", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "wrote " + zarr + ": 3x5x6 uint16, voxel 0.5 x 0.1 x 0.1 \xC2\xB5m, OME-Zarr 0.4, 2 levels, zstd\n");
  r = run_cli({"info", zarr});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("format       OME-Zarr 0.4, Zarr v2, array 0 (level 0 of 2), zstd, chunks 3x5x6\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("voxel size   0.5 x 0.1 x 0.1 \xC2\xB5m (z, y, x)\n"), std::string::npos) << r.out;
  const Volume tif = read_volume(in), z = read_volume(zarr);
  EXPECT_EQ(std::memcmp(tif.raw(), z.raw(), tif.size_bytes()), 0);
  EXPECT_EQ(z.voxel_size(), tif.voxel_size());

  r = run_cli({"convert", zarr, dir.file("out.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "wrote " + dir.file("out.h5") + ": 3x5x6 uint16, voxel 0.5 x 0.1 x 0.1 \xC2\xB5m, HDF5\n");
  const Volume h5 = read_volume(dir.file("out.h5:/data"));
  EXPECT_EQ(std::memcmp(tif.raw(), h5.raw(), tif.size_bytes()), 0);
  EXPECT_EQ(h5.voxel_size(), tif.voxel_size());

  // predict reads the store and writes one (the interpolation: no model needed).
  r = run_cli({"predict", zarr, "-o", dir.file("iso.zarr"), "--mode", "interp"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume iso = read_volume(dir.file("iso.zarr"));
  EXPECT_EQ(iso.shape(), (Shape3{15, 5, 6}));
  EXPECT_EQ(iso.voxel_size(), (VoxelSize{0.1, 0.1, 0.1}));
}

// Bad OME-Zarr and HDF5 usage: exit 2 and one line naming the value.
TEST(CliZarr, Errors) {
  TempDir dir;
  const std::string in = small_stack(dir);
  CliResult r = run_cli({"convert", in, dir.file("o.zarr"), "--compression", "lzw"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), "unknown Zarr compressor 'lzw' (expected blosc-lz4, blosc-zstd, zstd, zlib, gzip or none)");
  r = run_cli({"convert", in, dir.file("o.tif"), "--pyramid", "2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), "--pyramid and --chunks are for OME-Zarr outputs (a path ending in .zarr), not " +
                                   dir.file("o.tif"));
  fs::create_directories(dir.file("bad.zarr"));
  std::ofstream(dir.file("bad.zarr/.zarray")) << R"({"zarr_format": 2, "shape": [2, 2, 2], "chunks": [1, 1, 1],
    "dtype": "<i8", "compressor": null, "fill_value": 0})";
  r = run_cli({"info", dir.file("bad.zarr")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), "unsupported dtype '<i8' in " + dir.file("bad.zarr/.zarray") +
                                   " (supported: |u1, <u2, >u2, <f4, >f4)");
  r = run_cli({"convert", dir.file("nothing.zarr"), dir.file("o.tif")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(error_line(r.err), "input file not found: " + dir.file("nothing.zarr"));
}
