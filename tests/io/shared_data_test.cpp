// Reading the real volumes in ../shared/data (files written by tifffile and by Fiji).
// Expected shapes, dtypes and voxel sizes are those of ../shared/data/README.md.
#include <gtest/gtest.h>

#include <cstring>

#include "isoprompt/io.h"
#include "isoprompt/stats.h"
#include "test_util.h"

using namespace isoprompt;
using namespace isoprompt::test;

namespace {

struct Expected {
  const char* file;
  Shape3 shape;
  DType dtype;
  bool calibrated;
  double z_um, xy_um;  // README values, compared to 4 significant digits
  const char* compression;
  bool big_endian;
};

const Expected kFiles[] = {
    {"data/fib25_sample1_8nm.tif", {250, 250, 250}, DType::U8, true, 0.008, 0.008, "deflate", false},
    {"data/cells3d_nucleus_crop.tif", {60, 60, 50}, DType::U16, false, 1, 1, "none", false},
    {"data/neubias_chromosomes.tif", {40, 152, 126}, DType::U16, true, 0.15, 0.033855, "none", true},
    {"data/neubias_nuclei.tif", {37, 118, 132}, DType::U8, true, 4.0, 0.8286, "none", true},
    {"data/cellfinder_brain_crop.tif", {30, 256, 256}, DType::U16, true, 5.0, 2.0, "deflate", false},
};

}  // namespace

// Every shared file reads with the README's shape, dtype and voxel size.
TEST(SharedData, ShapesDtypesAndVoxelSizes) {
  for (const Expected& e : kFiles) {
    ISO_REQUIRE_SHARED(path, e.file);
    SCOPED_TRACE(e.file);
    TiffFileInfo fi;
    const Volume v = read_volume(path, {}, &fi);
    EXPECT_EQ(v.shape(), e.shape);
    EXPECT_EQ(v.dtype(), e.dtype);
    EXPECT_EQ(fi.calibrated, e.calibrated);
    EXPECT_EQ(fi.compression, e.compression);
    EXPECT_EQ(fi.big_endian, e.big_endian);
    EXPECT_EQ(v.unit(), e.calibrated ? "micron" : "pixel");
    EXPECT_NEAR(v.voxel_size().z, e.z_um, 1e-4 * e.z_um);
    EXPECT_NEAR(v.voxel_size().x, e.xy_um, 1e-4 * e.xy_um);
    EXPECT_EQ(v.voxel_size().y, v.voxel_size().x);
  }
}

// The chromosome stack (Fiji-written, big-endian): z 0.15 µm, xy 1/29.53846 µm, anisotropy 4.43.
TEST(SharedData, ChromosomesCalibrationAndValues) {
  ISO_REQUIRE_SHARED(path, "data/neubias_chromosomes.tif");
  TiffFileInfo fi;
  const Volume v = read_volume(path, {}, &fi);
  EXPECT_EQ(fi.flavor, "ImageJ");
  EXPECT_EQ(fi.file_unit, "\xC2\xB5m");  // written as the escape \u00B5m
  EXPECT_EQ(v.voxel_size().z, 0.1499999999996362);  // spacing= as written by Fiji
  // XResolution = 29538460/1000000 px/µm -> 0.0338541667 µm (the README rounds it to 0.033855).
  EXPECT_EQ(v.voxel_size().x, 0.03385417);
  EXPECT_NEAR(v.voxel_size().anisotropy(), 4.43, 0.005);
  const IntensityStats s = intensity_stats(v);
  EXPECT_EQ(s.min, 35);
  EXPECT_EQ(s.max, 237);
  EXPECT_EQ(s.finite_count, 40 * 152 * 126);
}

// A real file survives a write/read round trip in both flavours, values and calibration exact.
TEST(SharedData, RoundTripThroughBothFlavours) {
  ISO_REQUIRE_SHARED(path, "data/neubias_nuclei.tif");
  const Volume v = read_volume(path);
  TempDir dir;
  for (const char* name : {"n.tif", "n.ome.tif"}) {
    WriteOptions wo;
    wo.compression = WriteOptions::Deflate;
    write_volume(dir.file(name), v, wo);
    const Volume r = read_volume(dir.file(name));
    EXPECT_EQ(r.voxel_size(), v.voxel_size()) << name;
    EXPECT_EQ(r.unit(), "micron");
    ASSERT_EQ(r.shape(), v.shape());
    EXPECT_EQ(std::memcmp(r.raw(), v.raw(), v.size_bytes()), 0) << name;
  }
}
