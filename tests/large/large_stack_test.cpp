// A 5 GiB output, written from a generated volume: it gets ImageJ's large-stack layout
// (a classic TIFF whose IFD 0 and images=N describe all planes, back to back past 4 GiB),
// and tifffile, isoprompt and ImageJ read it. Labelled `large` (about a minute; needs
// ~11 GiB of memory and disk, else it prints SKIPPED).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "clients.h"
#include "interop_common.h"
#include "io/tiff_handle.h"
#include "isoprompt/io.h"
#include "test_util.h"

using namespace isoprompt;
using namespace isoprompt::test;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kNz = 1280, kNy = 1024, kNx = 2048;  // uint16: 4 MiB a plane, 5 GiB in all

uint16_t value_at(int64_t z, int64_t y, int64_t x) {
  return static_cast<uint16_t>(z * 131 + y * 7 + x * 3 + (x >> 5));
}

void fill_plane(uint16_t* p, int64_t z) {
  for (int64_t y = 0; y < kNy; ++y)
    for (int64_t x = 0; x < kNx; ++x) p[y * kNx + x] = value_at(z, y, x);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST(LargeStack, FiveGiBImageJLayoutReadsInTifffileIsopromptAndImageJ) {
  const uint64_t bytes = uint64_t(kNz) * kNy * kNx * 2;
  TempDir dir;
  std::error_code ec;
  const auto space = fs::space(dir.path(), ec);
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (ec || space.available < bytes + (uint64_t(1) << 30) || ram < 2.5 * double(bytes)) {
    std::printf("SKIPPED: needs %.1f GiB free disk and %.1f GiB of memory\n",
                double(bytes) / (1 << 30), 2.5 * double(bytes) / (1 << 30));
    GTEST_SKIP();
  }
  const std::string path = dir.file("big.tif");
  const std::vector<int64_t> spot = {0,    1,    1023,
                                     1024, 1100, kNz - 1};  // planes 1024.. lie past 4 GiB
  {
    Volume v({kNz, kNy, kNx}, DType::U16, {0.3, 0.1, 0.125}, "micron");
    auto* d = static_cast<uint16_t*>(v.raw());
#pragma omp parallel for schedule(static)
    for (int64_t z = 0; z < kNz; ++z) fill_plane(d + z * kNy * kNx, z);
    const auto t0 = std::chrono::steady_clock::now();
    write_volume(path, v);
    std::printf("wrote %.2f GiB in %.1f s\n", double(bytes) / (1 << 30), seconds_since(t0));
  }
  // The layout ImageJ uses for large stacks: classic TIFF, one IFD, images=N, planes
  // contiguous from IFD 0's strip, the file ending with the last plane.
  {
    io::TiffFile tf = io::TiffFile::open(path, "r");
    ASSERT_TRUE(tf);
    EXPECT_FALSE(TIFFIsBigTIFF(tf.get()));
    EXPECT_EQ(TIFFNumberOfDirectories(tf.get()), 1);
    char* desc = nullptr;
    ASSERT_TRUE(TIFFGetField(tf.get(), TIFFTAG_IMAGEDESCRIPTION, &desc));
    EXPECT_NE(std::string(desc).find(fmt::format("\nimages={}\nslices={}\n", kNz, kNz)),
              std::string::npos);
    const uint64_t offset = TIFFGetStrileOffset(tf.get(), 0);
    EXPECT_EQ(fs::file_size(path), offset + bytes);
  }
  // tifffile: shape, spacing, resolution and the spot planes through tifffile.memmap.
  if (tifffile_missing().empty()) {
    Variant var;
    var.path = path;
    var.raw = dir.file("spot.raw");
    var.dtype = DType::U16;
    var.shape = {kNz, kNy, kNx};
    var.voxel = {0.3, 0.1, 0.125};
    {
      std::ofstream raw(var.raw, std::ios::binary);
      std::vector<uint16_t> plane(size_t(kNy * kNx));
      for (int64_t z : spot) {
        fill_plane(plane.data(), z);
        raw.write(reinterpret_cast<const char*>(plane.data()), std::streamsize(plane.size() * 2));
      }
    }
    std::string planes;
    for (int64_t z : spot) planes += (planes.empty() ? "" : ",") + std::to_string(z);
    std::ofstream(dir.file("manifest.tsv")) << manifest_line(var, "large", planes);
    const auto t0 = std::chrono::steady_clock::now();
    const CliResult r =
        run_tifffile_script(std::string(ISO_SOURCE_DIR) + "/tests/interop/tifffile_check.py",
                            {dir.file("manifest.tsv")}, 300);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("checked 1 files, 0 failures"), std::string::npos) << r.out << r.err;
    std::printf("tifffile %s checked it in %.1f s\n", tifffile_version().c_str(),
                seconds_since(t0));
  } else {
    std::printf("SKIPPED (tifffile part): %s\n", tifffile_missing().c_str());
  }
  // ImageJ: opened as a virtual stack (no 5 GiB heap needed); slice count, calibration and
  // the exact pixel sums of the spot planes.
  if (imagej_missing().empty()) {
    std::string macro = fmt::format(
        "run(\"TIFF Virtual Stack...\", \"open=[{}]\");\n"
        "getVoxelSize(pw, ph, pd, unit);\n"
        "print(\"N \" + nSlices + \" \" + getWidth() + \" \" + getHeight() + \" \" + bitDepth());\n"
        "print(\"CAL \" + d2s(pw, 9) + \" \" + d2s(ph, 9) + \" \" + d2s(pd, 9) + \" \" + unit);\n",
        path);
    for (int64_t z : spot)
      macro += fmt::format("setSlice({}); print(\"SUM {} \" + d2s(getValue(\"RawIntDen\"), 0));\n",
                           z + 1, z);
    std::ofstream(dir.file("big.ijm")) << macro;
    const auto t0 = std::chrono::steady_clock::now();
    const CliResult r = run_imagej_macro(dir.file("big.ijm"), 300);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find(fmt::format("N {} {} {} 16\n", kNz, kNx, kNy)), std::string::npos)
        << r.out << r.err;
    EXPECT_NE(r.out.find("CAL 0.125000000 0.100000000 0.300000000 microns\n"), std::string::npos)
        << r.out;
    std::vector<uint16_t> plane(size_t(kNy * kNx));
    for (int64_t z : spot) {
      fill_plane(plane.data(), z);
      uint64_t sum = 0;
      for (uint16_t p : plane) sum += p;
      EXPECT_NE(r.out.find(fmt::format("SUM {} {}\n", z, sum)), std::string::npos)
          << "plane " << z << "\n"
          << r.out;
    }
    std::printf("ImageJ %s checked it in %.1f s\n", imagej_version().c_str(), seconds_since(t0));
  } else {
    std::printf("SKIPPED (ImageJ part): %s\n", imagej_missing().c_str());
  }
  // isoprompt reads it back.
  {
    const auto t0 = std::chrono::steady_clock::now();
    TiffFileInfo fi;
    const Volume r = read_volume(path, {}, &fi);
    std::printf("isoprompt read it in %.1f s\n", seconds_since(t0));
    EXPECT_EQ(r.shape(), (Shape3{kNz, kNy, kNx}));
    EXPECT_EQ(r.voxel_size(), (VoxelSize{0.3, 0.1, 0.125}));
    EXPECT_EQ(fi.pages, 1);
    std::vector<uint16_t> plane(size_t(kNy * kNx));
    for (int64_t z : spot) {
      fill_plane(plane.data(), z);
      EXPECT_EQ(std::memcmp(r.data<uint16_t>() + z * kNy * kNx, plane.data(), plane.size() * 2), 0)
          << "plane " << z;
    }
  }
}
