// TIFF / OME-TIFF reading and writing (library level).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <limits>

#include "io/metadata.h"
#include "io/tiff_handle.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "test_util.h"
#include "tiff_fixtures.h"

using namespace isoprompt;
using namespace isoprompt::test;
namespace fs = std::filesystem;

namespace {

// Volume with values that exercise the whole range of the dtype (and, for float,
// negative, tiny and huge values), deterministic in (z, y, x).
Volume pattern_volume(DType t, Shape3 s = {3, 17, 23}) {
  Volume v(s, t, {0.15, 0.033855, 0.033855}, "micron");
  for (int64_t i = 0; i < v.numel(); ++i) {
    const uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
    switch (t) {
      case DType::U8: static_cast<uint8_t*>(v.raw())[i] = static_cast<uint8_t>(h >> 24); break;
      case DType::U16: static_cast<uint16_t*>(v.raw())[i] = static_cast<uint16_t>(h >> 16); break;
      case DType::F32: {
        const float vals[] = {-3.5f, 0.1f, 1e-30f, 2e37f, -0.0f, 12345.678f};
        static_cast<float*>(v.raw())[i] = vals[i % 6] * float(1 + (h >> 28));
        break;
      }
    }
  }
  return v;
}

bool same_bytes(const Volume& a, const Volume& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

std::string tiff_description(const std::string& path) {
  TIFF* t = TIFFOpen(path.c_str(), "r");
  char* d = nullptr;
  std::string s;
  if (t && TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &d)) s = d;
  if (t) TIFFClose(t);
  return s;
}

std::string read_error(const std::string& path, const ReadOptions& o = {}) {
  try {
    read_volume(path, o);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

}  // namespace

// ---- round trips ------------------------------------------------------------------------

// Every dtype x flavour x classic/BigTIFF x compression: values come back bit-exact,
// voxel sizes as the same doubles, and the file is what was asked for. (One test, not 36
// parametrised ones: ctest starts a process per test, and each start loads LibTorch.)
TEST(TiffRoundTrip, AllDtypesFlavoursContainersCompressions) {
  for (DType dtype : {DType::U8, DType::U16, DType::F32})
    for (auto flavor : {WriteOptions::ImageJ, WriteOptions::OME})
      for (bool bigtiff : {false, true})
        for (auto comp : {WriteOptions::None, WriteOptions::Deflate, WriteOptions::LZW}) {
          SCOPED_TRACE(fmt::format("{} {} bigtiff={} compression={}", dtype_name(dtype),
                                   flavor == WriteOptions::OME ? "OME" : "ImageJ", bigtiff, int(comp)));
          TempDir dir;
          const std::string path = dir.file(flavor == WriteOptions::OME ? "v.ome.tif" : "v.tif");
          const Volume v = pattern_volume(dtype);
          WriteOptions wo;
          wo.flavor = WriteOptions::Auto;  // chosen from the name
          wo.compression = comp;
          wo.force_bigtiff = bigtiff;
          write_volume(path, v, wo);
          TiffFileInfo fi;
          const Volume r = read_volume(path, {}, &fi);
          EXPECT_TRUE(same_bytes(v, r));
          EXPECT_EQ(r.voxel_size(), v.voxel_size());  // exact double equality
          EXPECT_EQ(r.unit(), "micron");
          EXPECT_EQ(fi.flavor, flavor == WriteOptions::OME ? "OME" : "ImageJ");
          EXPECT_EQ(fi.bigtiff, bigtiff);
          EXPECT_EQ(fi.compression,
                    comp == WriteOptions::None ? "none" : comp == WriteOptions::LZW ? "LZW" : "deflate");
          EXPECT_TRUE(fi.calibrated);
          EXPECT_EQ(fi.pages, 3);
          // No temporary file is left next to the output.
          int n_files = 0;
          for (auto& e : fs::directory_iterator(dir.path())) n_files += e.is_regular_file();
          EXPECT_EQ(n_files, 1);
        }
}

// Voxel sizes that are not binary fractions, in every axis, survive both flavours exactly.
TEST(TiffWrite, AwkwardVoxelSizesReadBackExactly) {
  TempDir dir;
  Volume v = pattern_volume(DType::U16, {2, 5, 7});
  v.set_voxel_size({0.1499999999996362, 0.1 + 0.2, 1.0 / 3.0});
  for (const char* name : {"a.tif", "a.ome.tif"}) {
    write_volume(dir.file(name), v);
    EXPECT_EQ(read_volume(dir.file(name)).voxel_size(), v.voxel_size()) << name;
  }
}

// The ImageJ description is what Fiji and tifffile parse; the resolution tags carry 1/pixel size.
TEST(TiffWrite, ImageJMetadataIsWhatFijiExpects) {
  TempDir dir;
  const Volume v = pattern_volume(DType::F32, {3, 4, 5});
  write_volume(dir.file("f.tif"), v);
  const std::string d = tiff_description(dir.file("f.tif"));
  EXPECT_EQ(d.rfind("ImageJ=1.11a\nimages=3\nslices=3\nunit=micron\nspacing=0.15\n", 0), 0u) << d;
  EXPECT_NE(d.find("loop=false\n"), std::string::npos);
  EXPECT_NE(d.find("min=-"), std::string::npos);  // float display range
  TIFF* t = TIFFOpen(dir.file("f.tif").c_str(), "r");
  ASSERT_NE(t, nullptr);
  float xres = 0, yres = 0;
  uint16_t unit = 0;
  ASSERT_TRUE(TIFFGetField(t, TIFFTAG_XRESOLUTION, &xres));
  ASSERT_TRUE(TIFFGetField(t, TIFFTAG_YRESOLUTION, &yres));
  ASSERT_TRUE(TIFFGetField(t, TIFFTAG_RESOLUTIONUNIT, &unit));
  EXPECT_FLOAT_EQ(xres, float(1.0 / 0.033855));
  EXPECT_FLOAT_EQ(yres, float(1.0 / 0.033855));
  EXPECT_EQ(unit, RESUNIT_NONE);
  EXPECT_EQ(TIFFNumberOfDirectories(t), 3);
  TIFFClose(t);
}

// The OME-XML has PhysicalSize* in µm, DimensionOrder XYZCT and a TiffData for all planes.
TEST(TiffWrite, OmeXmlIsValidAndCalibrated) {
  TempDir dir;
  const Volume v = pattern_volume(DType::U16, {4, 3, 2});
  write_volume(dir.file("o.ome.tiff"), v);
  const std::string d = tiff_description(dir.file("o.ome.tiff"));
  const io::OmeMeta m = io::parse_ome(d, "o", 4);
  EXPECT_EQ(m.size_x, 2);
  EXPECT_EQ(m.size_y, 3);
  EXPECT_EQ(m.size_z, 4);
  EXPECT_EQ(m.dimension_order, "XYZCT");
  EXPECT_EQ(m.type, "uint16");
  EXPECT_EQ(m.phys[0], 0.15);
  EXPECT_EQ(m.phys[2], 0.033855);
  EXPECT_EQ(m.phys_unit[2], "\xC2\xB5m");
  EXPECT_NE(d.find("PhysicalSizeX=\"0.033855\""), std::string::npos);
  EXPECT_NE(d.find("<TiffData IFD=\"0\" PlaneCount=\"4\""), std::string::npos);
  EXPECT_NE(d.find("xmlns=\"http://www.openmicroscopy.org/Schemas/OME/2016-06\""), std::string::npos);
}

// --format wins over the file name; an uncalibrated volume stays uncalibrated.
TEST(TiffWrite, FlavorOverrideAndUncalibrated) {
  TempDir dir;
  Volume v = pattern_volume(DType::U8, {2, 3, 4});
  v.set_unit("pixel");
  v.set_voxel_size({1, 1, 1});
  WriteOptions wo;
  wo.flavor = WriteOptions::OME;
  write_volume(dir.file("plain.tif"), v, wo);
  TiffFileInfo fi;
  const Volume r = read_volume(dir.file("plain.tif"), {}, &fi);
  EXPECT_EQ(fi.flavor, "OME");
  EXPECT_FALSE(fi.calibrated);
  EXPECT_EQ(r.unit(), "pixel");
  EXPECT_EQ(r.voxel_size(), (VoxelSize{1, 1, 1}));
  wo.flavor = WriteOptions::ImageJ;
  write_volume(dir.file("ij.ome.tif"), v, wo);
  read_volume(dir.file("ij.ome.tif"), {}, &fi);
  EXPECT_EQ(fi.flavor, "ImageJ");
  EXPECT_FALSE(fi.calibrated);
}

// Writing over an existing file replaces it only once the new one is complete.
TEST(TiffWrite, ReplacesExistingOutputAtomically) {
  TempDir dir;
  write_bytes(dir.file("o.tif"), "old");
  write_volume(dir.file("o.tif"), pattern_volume(DType::U8));
  EXPECT_TRUE(same_bytes(read_volume(dir.file("o.tif")), pattern_volume(DType::U8)));
  EXPECT_THROW(write_volume(dir.file("missing/o.tif"), pattern_volume(DType::U8)), InputError);
}

TEST(TiffWrite, BigTiffThresholdIsBelowFourGiB) {
  EXPECT_LT(bigtiff_threshold_bytes(), uint64_t(4) << 30);
  EXPECT_GT(bigtiff_threshold_bytes(), uint64_t(4000) << 20);
}

// ---- reading files written by other software ------------------------------------------

// Tiled pages with partial edge tiles, deflate-compressed, are reassembled exactly.
TEST(TiffRead, TiledDeflate) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int z = 0; z < 3; ++z) {
    RawPage p = make_page<uint16_t>(40, 37, [z](uint32_t y, uint32_t x) { return z * 10000 + y * 100 + x; });
    p.tiled = true;
    p.compression = COMPRESSION_ADOBE_DEFLATE;
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("tiled.tif"), pages);
  TiffFileInfo fi;
  const Volume v = read_volume(dir.file("tiled.tif"), {}, &fi);
  EXPECT_TRUE(fi.tiled);
  EXPECT_EQ(fi.compression, "deflate");
  EXPECT_EQ(v.shape(), (Shape3{3, 37, 40}));
  EXPECT_EQ(v.at<uint16_t>(0, 0, 0), 0);
  EXPECT_EQ(v.at<uint16_t>(2, 36, 39), 2 * 10000 + 36 * 100 + 39);
  EXPECT_EQ(v.at<uint16_t>(1, 17, 33), 10000 + 1700 + 33);
  for (int64_t z = 0; z < 3; ++z)
    for (int64_t y = 0; y < 37; ++y)
      for (int64_t x = 0; x < 40; ++x) ASSERT_EQ(v.at<uint16_t>(z, y, x), z * 10000 + y * 100 + x);
}

// Big-endian files with several strips per page, float and LZW, read back exactly.
TEST(TiffRead, BigEndianMultiStripFloatLzw) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int z = 0; z < 2; ++z) {
    RawPage p = make_page<float>(9, 11, [z](uint32_t y, uint32_t x) { return z - 0.25f * y + 1e-3f * x; });
    p.rows_per_strip = 4;
    p.compression = COMPRESSION_LZW;
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("be.tif"), pages, "wb");
  TiffFileInfo fi;
  const Volume v = read_volume(dir.file("be.tif"), {}, &fi);
  EXPECT_TRUE(fi.big_endian);
  EXPECT_EQ(fi.flavor, "plain");
  EXPECT_FALSE(fi.calibrated);
  EXPECT_EQ(v.unit(), "pixel");
  EXPECT_EQ(v.at<float>(1, 10, 8), 1 - 0.25f * 10 + 1e-3f * 8);
  EXPECT_EQ(v.at<float>(0, 5, 3), 0 - 0.25f * 5 + 1e-3f * 3);
}

// ImageJ's own files: unit written as the \u00B5m escape, resolution as a rational.
TEST(TiffRead, ImageJEscapedMicronAndResolution) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int z = 0; z < 2; ++z) {
    RawPage p = make_page<uint8_t>(4, 4, [z](uint32_t, uint32_t x) { return z + x; });
    p.description = "ImageJ=1.53q\nimages=2\nslices=2\nunit=\\u00B5m\nspacing=0.1499999999996362\nloop=false\n";
    p.xres = 29.53846f;
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("ij.tif"), pages);
  TiffFileInfo fi;
  const Volume v = read_volume(dir.file("ij.tif"), {}, &fi);
  EXPECT_EQ(fi.flavor, "ImageJ");
  EXPECT_EQ(fi.file_unit, "\xC2\xB5m");
  EXPECT_EQ(v.unit(), "micron");
  EXPECT_EQ(v.voxel_size().z, 0.1499999999996362);
  // 1/29.53846 = 0.0338541668..., float noise removed at 7 significant digits.
  EXPECT_EQ(v.voxel_size().x, 0.03385417);
  EXPECT_NEAR(v.voxel_size().anisotropy(), 4.4307, 1e-4);
}

// Lengths in nm / mm are converted to µm, in ImageJ and OME metadata alike.
TEST(TiffRead, UnitsAreConvertedToMicrons) {
  TempDir dir;
  RawPage p = make_page<uint8_t>(4, 4, [](uint32_t, uint32_t) { return 1; });
  p.description = "ImageJ=1.11a\nimages=2\nslices=2\nunit=nm\nspacing=150\n";
  p.xres = 0.02f;  // 50 nm pixels
  write_raw_tiff(dir.file("nm.tif"), {p, p});
  const Volume a = read_volume(dir.file("nm.tif"));
  EXPECT_EQ(a.unit(), "micron");
  EXPECT_EQ(a.voxel_size(), (VoxelSize{0.15, 0.05, 0.05}));

  p.description =
      "<?xml version=\"1.0\"?><OME xmlns=\"http://www.openmicroscopy.org/Schemas/OME/2016-06\"><Image ID=\"Image:0\">"
      "<Pixels ID=\"Pixels:0\" DimensionOrder=\"XYZCT\" Type=\"uint8\" SizeX=\"4\" SizeY=\"4\" SizeZ=\"2\" SizeC=\"1\" "
      "SizeT=\"1\" PhysicalSizeX=\"33.855\" PhysicalSizeXUnit=\"nm\" PhysicalSizeY=\"0.033855\" "
      "PhysicalSizeZ=\"0.00015\" PhysicalSizeZUnit=\"mm\"><TiffData/></Pixels></Image></OME>";
  p.xres = 0;
  write_raw_tiff(dir.file("nm.ome.tif"), {p, p});
  const Volume b = read_volume(dir.file("nm.ome.tif"));
  EXPECT_EQ(b.unit(), "micron");
  EXPECT_DOUBLE_EQ(b.voxel_size().z, 0.15);
  EXPECT_EQ(b.voxel_size().y, 0.033855);  // default unit µm
  EXPECT_EQ(b.voxel_size().x, 0.033855);  // 33.855 / 1000 exactly
}

// Two-channel ImageJ hyperstack (channels fastest): a channel must be chosen, and the
// chosen one is read from the right pages.
TEST(TiffRead, ImageJHyperstackChannelSelection) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int page = 0; page < 6; ++page) {  // c = page % 2, z = page / 2
    RawPage p = make_page<uint16_t>(5, 4, [page](uint32_t y, uint32_t x) { return page * 100 + y * 10 + x; });
    p.description = "ImageJ=1.53t\nimages=6\nchannels=2\nslices=3\nhyperstack=true\nmode=composite\nunit=micron\n"
                    "spacing=0.5\nloop=false\n";
    p.xres = 10;
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("hs.tif"), pages);
  EXPECT_EQ(read_error(dir.file("hs.tif")),
            dir.file("hs.tif") + " has 2 channels: choose one with --channel (0..1)");
  ReadOptions o;
  o.channel = 1;
  TiffFileInfo fi;
  const Volume v = read_volume(dir.file("hs.tif"), o, &fi);
  EXPECT_EQ(fi.channels, 2);
  EXPECT_EQ(fi.channel, 1);
  EXPECT_EQ(v.shape(), (Shape3{3, 4, 5}));
  EXPECT_EQ(v.at<uint16_t>(0, 0, 0), 100);      // page 1
  EXPECT_EQ(v.at<uint16_t>(2, 3, 4), 534);      // page 5
  EXPECT_EQ(v.voxel_size(), (VoxelSize{0.5, 0.1, 0.1}));
  o.channel = 2;
  EXPECT_EQ(read_error(dir.file("hs.tif"), o),
            "--channel 2 is out of range for " + dir.file("hs.tif") + ": it has 2 channels (0..1)");
}

// tifffile.imwrite(f, zyx, imagej=True) without axes writes channels=N (its description,
// copied verbatim): the message says so and how to save a z stack, not only --channel.
TEST(TiffRead, TifffileStackWithoutAxesExplainsChannels) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int page = 0; page < 5; ++page) {
    RawPage p = make_page<uint16_t>(8, 8, [page](uint32_t y, uint32_t x) { return page * 64 + y * 8 + x; });
    if (page == 0) p.description = "ImageJ=1.11a\nimages=5\nchannels=5\nhyperstack=true\nmode=grayscale";
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("noaxes.tif"), pages);
  EXPECT_EQ(read_error(dir.file("noaxes.tif")),
            dir.file("noaxes.tif") +
                " has 5 channels and one z plane, which is how tifffile.imwrite(file, array, imagej=True) saves a "
                "3D array without axes: if they are z planes, save it with metadata={'axes': 'ZYX'} (or in Fiji: "
                "Image > Hyperstacks > Re-order Hyperstacks, channels to slices); if they are channels, choose one "
                "with --channel (0..4)");
  ReadOptions o;
  o.channel = 3;
  o.allow_2d = true;
  const Volume v = read_volume(dir.file("noaxes.tif"), o);
  EXPECT_EQ(v.shape(), (Shape3{1, 8, 8}));
  EXPECT_EQ(v.at<uint16_t>(0, 0, 0), 3 * 64);
}

// ImageJ frames: a time point must be chosen when there are several.
TEST(TiffRead, ImageJTimeSelection) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int page = 0; page < 4; ++page) {  // z = page % 2, t = page / 2
    RawPage p = make_page<uint8_t>(3, 2, [page](uint32_t, uint32_t) { return page; });
    p.description = "ImageJ=1.11a\nimages=4\nslices=2\nframes=2\nhyperstack=true\n";
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("t.tif"), pages);
  EXPECT_EQ(read_error(dir.file("t.tif")), dir.file("t.tif") + " has 2 time points: choose one with --time (0..1)");
  ReadOptions o;
  o.time = 1;
  const Volume v = read_volume(dir.file("t.tif"), o);
  EXPECT_EQ(v.at<uint8_t>(0, 0, 0), 2);
  EXPECT_EQ(v.at<uint8_t>(1, 1, 2), 3);
}

// OME DimensionOrder XYCZT without TiffData: planes stored c fastest.
TEST(TiffRead, OmeDimensionOrderAndChannels) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int page = 0; page < 6; ++page) {
    RawPage p = make_page<uint8_t>(2, 2, [page](uint32_t, uint32_t) { return page; });
    if (page == 0)
      p.description =
          "<OME xmlns=\"http://www.openmicroscopy.org/Schemas/OME/2016-06\"><Image ID=\"Image:0\"><Pixels "
          "DimensionOrder=\"XYCZT\" Type=\"uint8\" SizeX=\"2\" SizeY=\"2\" SizeZ=\"3\" SizeC=\"2\" SizeT=\"1\" "
          "PhysicalSizeX=\"0.2\" PhysicalSizeY=\"0.2\" PhysicalSizeZ=\"1\"/></Image></OME>";
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("c.ome.tif"), pages);
  EXPECT_EQ(read_error(dir.file("c.ome.tif")),
            dir.file("c.ome.tif") + " has 2 channels: choose one with --channel (0..1)");
  ReadOptions o;
  o.channel = 0;
  Volume v = read_volume(dir.file("c.ome.tif"), o);
  EXPECT_EQ(v.at<uint8_t>(0, 0, 0), 0);
  EXPECT_EQ(v.at<uint8_t>(1, 0, 0), 2);
  EXPECT_EQ(v.at<uint8_t>(2, 0, 0), 4);
  o.channel = 1;
  v = read_volume(dir.file("c.ome.tif"), o);
  EXPECT_EQ(v.at<uint8_t>(2, 1, 1), 5);
  EXPECT_EQ(v.voxel_size(), (VoxelSize{1, 0.2, 0.2}));
}

// tifffile's shaped description: axes say which leading axis is z; without axes, more
// than one leading axis is refused as ambiguous; a plain [z, y, x] shape needs nothing.
TEST(TiffRead, TifffileShapedDescription) {
  TempDir dir;
  auto write = [&](const std::string& name, const std::string& desc) {
    std::vector<RawPage> pages;
    for (int page = 0; page < 6; ++page) {
      RawPage p = make_page<uint8_t>(2, 2, [page](uint32_t, uint32_t) { return page; });
      if (page == 0) p.description = desc;
      pages.push_back(p);
    }
    write_raw_tiff(dir.file(name), pages);
    return dir.file(name);
  };
  const std::string czyx = write("czyx.tif", "{\"shape\": [2, 3, 2, 2], \"axes\": \"CZYX\"}");
  ReadOptions o;
  o.channel = 1;
  Volume v = read_volume(czyx, o);  // pages: c * 3 + z
  ASSERT_EQ(v.nz(), 3);
  EXPECT_EQ(v.at<uint8_t>(0, 0, 0), 3);
  EXPECT_EQ(v.at<uint8_t>(2, 1, 1), 5);
  const std::string zcyx = write("zcyx.tif", "{\"shape\": [1, 3, 2, 2, 2], \"axes\": \"TZCYX\"}");
  v = read_volume(zcyx, o);  // pages: z * 2 + c
  EXPECT_EQ(v.at<uint8_t>(0, 0, 0), 1);
  EXPECT_EQ(v.at<uint8_t>(2, 0, 0), 5);
  const std::string noaxes = write("noaxes.tif", "{\"shape\": [2, 3, 2, 2]}");
  EXPECT_EQ(read_error(noaxes), noaxes + " was written by tifffile with shape [2,3,2,2] and no axes: more than one "
                                         "axis besides y and x, so the z axis is ambiguous (save it as an ImageJ "
                                         "hyperstack or OME-TIFF)");
  const std::string plain = write("plain.tif", "{\"shape\": [6, 2, 2]}");
  EXPECT_EQ(read_volume(plain).nz(), 6);
}

// TiffData with FirstZ/IFD maps planes to arbitrary pages.
TEST(TiffRead, OmeTiffDataMapsPlanes) {
  const std::string xml =
      "<OME><Image><Pixels DimensionOrder=\"XYZCT\" SizeX=\"1\" SizeY=\"1\" SizeZ=\"3\">"
      "<TiffData FirstZ=\"2\" IFD=\"0\"/><TiffData FirstZ=\"0\" IFD=\"1\" PlaneCount=\"2\"/></Pixels></Image></OME>";
  const io::OmeMeta m = io::parse_ome(xml, "x", 3);
  EXPECT_EQ(m.ifd_of(2, 0, 0), 0);
  EXPECT_EQ(m.ifd_of(0, 0, 0), 1);
  EXPECT_EQ(m.ifd_of(1, 0, 0), 2);
}

// Writes ImageJ's layout for stacks over 4 GiB, small: a big-endian classic TIFF whose
// only IFD describes image 0, with all n images stored back to back from byte 8.
void write_imagej_contiguous(const std::string& path, uint32_t w, uint32_t h, uint32_t n,
                             const std::vector<uint16_t>& values, const std::string& desc) {
  std::string b = "MM";
  auto u16 = [&](uint16_t v) { b += char(v >> 8), b += char(v & 0xFF); };
  auto u32 = [&](uint32_t v) { u16(uint16_t(v >> 16)), u16(uint16_t(v & 0xFFFF)); };
  u16(42);
  const uint32_t data_bytes = w * h * n * 2;
  const uint32_t desc_off = 8 + data_bytes;
  const uint32_t ifd_off = desc_off + uint32_t(desc.size()) + 1 + ((desc.size() + 1) % 2);
  u32(ifd_off);
  for (uint16_t v : values) u16(v);
  b += desc;
  b += '\0';
  while (b.size() < ifd_off) b += '\0';
  u16(10);
  auto entry = [&](uint16_t tag, uint16_t type, uint32_t count, uint32_t value) {
    u16(tag), u16(type), u32(count);
    if (type == TIFF_SHORT) u16(uint16_t(value)), u16(0);
    else u32(value);
  };
  entry(256, TIFF_LONG, 1, w);
  entry(257, TIFF_LONG, 1, h);
  entry(258, TIFF_SHORT, 1, 16);
  entry(259, TIFF_SHORT, 1, 1);
  entry(262, TIFF_SHORT, 1, 1);
  entry(270, TIFF_ASCII, uint32_t(desc.size() + 1), desc_off);
  entry(273, TIFF_LONG, 1, 8);
  entry(277, TIFF_SHORT, 1, 1);
  entry(278, TIFF_LONG, 1, h);
  entry(279, TIFF_LONG, 1, w * h * 2);
  u32(0);
  write_bytes(path, b);
}

// ImageJ's large-stack layout (one IFD, images=N contiguous), big-endian: all planes read.
TEST(TiffRead, ImageJContiguousLargeStackLayout) {
  TempDir dir;
  std::vector<uint16_t> values(4 * 3 * 5);
  for (size_t i = 0; i < values.size(); ++i) values[i] = uint16_t(1000 + 300 * i);
  const std::string desc = "ImageJ=1.54f\nimages=4\nslices=4\nunit=micron\nspacing=2.0\nloop=false\n";
  write_imagej_contiguous(dir.file("big.tif"), 5, 3, 4, values, desc);
  TiffFileInfo fi;
  const Volume v = read_volume(dir.file("big.tif"), {}, &fi);
  EXPECT_EQ(fi.pages, 1);
  EXPECT_TRUE(fi.big_endian);
  ASSERT_EQ(v.shape(), (Shape3{4, 3, 5}));
  for (int64_t i = 0; i < v.numel(); ++i) ASSERT_EQ(v.data<uint16_t>()[i], values[size_t(i)]) << i;
  EXPECT_EQ(v.voxel_size().z, 2.0);
  // Cut the last image short: truncation, named with the number of bytes needed.
  write_imagej_contiguous(dir.file("short.tif"), 5, 3, 4, values, "ImageJ=1.54f\nimages=20\nslices=20\n");
  const std::string msg = read_error(dir.file("short.tif"));
  EXPECT_EQ(msg.rfind("truncated TIFF file " + dir.file("short.tif") +
                          ": its ImageJ metadata says images=20 stored after page 0, which needs 608 bytes",
                      0),
            0u)
      << msg;
}

// ---- bad input: one InputError line naming the file and the value ----------------------

TEST(TiffReadErrors, MissingAndNotTiff) {
  TempDir dir;
  EXPECT_EQ(read_error(dir.file("nope.tif")), "input file not found: " + dir.file("nope.tif"));
  write_bytes(dir.file("text.tif"), "hello, this is not an image\n");
  EXPECT_EQ(read_error(dir.file("text.tif")),
            "not a TIFF file: " + dir.file("text.tif") + " (no TIFF header at the start)");
  write_bytes(dir.file("empty.tif"), "");
  EXPECT_EQ(read_error(dir.file("empty.tif")),
            "not a TIFF file: " + dir.file("empty.tif") + " (no TIFF header at the start)");
}

// A file cut in the middle of its last page is reported as truncated.
TEST(TiffReadErrors, TruncatedPixelData) {
  TempDir dir;
  const std::string path = dir.file("t.tif");
  std::vector<RawPage> pages(4, make_page<uint16_t>(64, 64, [](uint32_t y, uint32_t x) { return y + x; }));
  write_raw_tiff(path, pages);
  TIFF* t = TIFFOpen(path.c_str(), "r");
  ASSERT_NE(t, nullptr);
  TIFFSetDirectory(t, 3);
  const uint64_t off = TIFFGetStrileOffset(t, 0);
  TIFFClose(t);
  const std::string b = read_bytes(path);
  ASSERT_GT(b.size(), off + 100);
  write_bytes(path, b.substr(0, off + 100));
  const std::string msg = read_error(path);
  EXPECT_EQ(msg.rfind("truncated or corrupt TIFF file " + path + ": ", 0), 0u) << msg;
}

// Pixel data that would run past the end of the file is refused before decoding.
TEST(TiffReadErrors, StripPastEndOfFile) {
  TempDir dir;
  const std::string path = dir.file("t.tif");
  std::vector<RawPage> pages(3, make_page<uint8_t>(16, 16, [](uint32_t y, uint32_t x) { return y + x; }));
  write_raw_tiff(path, pages);
  const uint64_t size = fs::file_size(path);
  patch_first_ifd_long(path, TIFFTAG_STRIPOFFSETS, static_cast<uint32_t>(size - 10));
  EXPECT_EQ(read_error(path), fmt::format("truncated TIFF file {}: page 0 of 3 has data up to byte {} but the file "
                                          "has only {} bytes",
                                          path, size - 10 + 256, size));
}

// Cut inside the IFD chain: also reported as truncation, not a silent shorter stack.
TEST(TiffReadErrors, TruncatedDirectoryChain) {
  TempDir dir;
  const std::string path = dir.file("t.tif");
  std::vector<RawPage> pages(4, make_page<uint8_t>(16, 16, [](uint32_t y, uint32_t x) { return y ^ x; }));
  write_raw_tiff(path, pages);
  const std::string b = read_bytes(path);
  write_bytes(path, b.substr(0, b.size() - 20));  // the last IFD is at the end
  const std::string msg = read_error(path);
  EXPECT_EQ(msg.rfind("truncated or corrupt TIFF file " + path + ": ", 0), 0u) << msg;
}

// A page that holds less compressed data than its header promises is caught when decoding.
TEST(TiffReadErrors, CorruptCompressedData) {
  TempDir dir;
  const std::string path = dir.file("c.tif");
  std::vector<RawPage> pages(2, make_page<uint16_t>(64, 64, [](uint32_t y, uint32_t x) { return y * x; }));
  for (auto& p : pages) p.compression = COMPRESSION_ADOBE_DEFLATE;
  write_raw_tiff(path, pages);
  TIFF* t = TIFFOpen(path.c_str(), "r");
  ASSERT_NE(t, nullptr);
  const uint64_t off = TIFFGetStrileOffset(t, 0), cnt = TIFFGetStrileByteCount(t, 0);
  TIFFClose(t);
  std::string b = read_bytes(path);
  for (uint64_t i = off + 2; i < off + cnt; ++i) b[i] = static_cast<char>(0xA5 ^ i);
  write_bytes(path, b);
  const std::string msg = read_error(path);
  EXPECT_EQ(msg.rfind("truncated or corrupt TIFF file " + path + ": page 0 of 2: ", 0), 0u) << msg;
}

// A header claiming 100000 x 100000 pixels in a tiny file is refused before allocation.
TEST(TiffReadErrors, ImplausibleHeaderDimensions) {
  TempDir dir;
  for (uint16_t comp : {uint16_t(COMPRESSION_NONE), uint16_t(COMPRESSION_ADOBE_DEFLATE)}) {
    const std::string path = dir.file(fmt::format("huge{}.tif", comp));
    std::vector<RawPage> pages(2, make_page<uint16_t>(16, 16, [](uint32_t, uint32_t) { return 7; }));
    for (auto& p : pages) p.compression = comp;
    write_raw_tiff(path, pages);
    patch_first_ifd_long(path, TIFFTAG_IMAGEWIDTH, 100000);
    patch_first_ifd_long(path, TIFFTAG_IMAGELENGTH, 100000);
    patch_first_ifd_long(path, TIFFTAG_ROWSPERSTRIP, 100000);
    const std::string msg = read_error(path);
    EXPECT_EQ(msg.rfind("implausible TIFF header in " + path + ": 100000x100000 pixels x 2 pages of uint16 (37.3 GiB)", 0), 0u)
        << msg;
  }
}

// Tiles far larger than the image and the file (found by the tiff_file fuzzer): refused
// before the tile buffer is allocated.
TEST(TiffReadErrors, ImplausibleTileSize) {
  TempDir dir;
  const std::string path = dir.file("huge_tile.tif");
  std::vector<RawPage> pages(2, make_page<uint16_t>(16, 16, [](uint32_t, uint32_t) { return 7; }));
  for (auto& p : pages) p.tiled = true;
  write_raw_tiff(path, pages);
  patch_first_ifd_long(path, TIFFTAG_TILEWIDTH, 65536);
  patch_first_ifd_long(path, TIFFTAG_TILELENGTH, 65536);
  EXPECT_EQ(read_error(path),
            "implausible TIFF header in " + path +
                ": page 0 of 2 has tiles of 65536x65536 pixels (8.0 GiB) but the file has only " +
                std::to_string(std::filesystem::file_size(path)) + " bytes");
}

// A plausible header (zstd can compress far beyond 2000:1) whose stack exceeds the
// machine's memory is refused with the sizes, not left to the OOM killer.
TEST(TiffReadErrors, StackLargerThanMemory) {
  if (!TIFFIsCODECConfigured(COMPRESSION_ZSTD)) GTEST_SKIP() << "libtiff without zstd";
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  // Incompressible pages of ram/1e5 bytes, so the file backs up to ~2 x ram bytes of
  // claimed data under the 1e5:1 bound; then claim a little more than ram (ratio ~5e4).
  const uint32_t side = static_cast<uint32_t>(std::sqrt(ram / 1e5 / 2)) + 1;
  uint32_t seed = 1;
  RawPage p = make_page<uint16_t>(side, side, [&](uint32_t, uint32_t) { return (seed = seed * 1103515245u + 12345u) >> 16; });
  p.compression = COMPRESSION_ZSTD;
  TempDir dir;
  const std::string path = dir.file("big.tif");
  write_raw_tiff(path, {p, p});
  const uint32_t claim = static_cast<uint32_t>(std::sqrt(ram / 2 / 2)) + 16;  // 2 pages of uint16 > ram
  patch_first_ifd_long(path, TIFFTAG_IMAGEWIDTH, claim);
  patch_first_ifd_long(path, TIFFTAG_IMAGELENGTH, claim);
  patch_first_ifd_long(path, TIFFTAG_ROWSPERSTRIP, claim);
  // (Page 1 keeps its true size: the memory check must come before the per-page checks.)
  const std::string msg = read_error(path);
  EXPECT_EQ(msg.rfind(path + " is too large for this machine: 2x" + std::to_string(claim) + "x" +
                          std::to_string(claim) + " uint16 needs ",
                      0),
            0u)
      << msg;
}

TEST(TiffReadErrors, TwoDimensionalImageNeedsAllow2d) {
  TempDir dir;
  write_raw_tiff(dir.file("2d.tif"), {make_page<uint16_t>(12, 10, [](uint32_t, uint32_t) { return 1; })});
  EXPECT_EQ(read_error(dir.file("2d.tif")),
            dir.file("2d.tif") + " is a 2D image (12x10 pixels, one plane): a 3D stack (several z planes) is needed");
  ReadOptions o;
  o.allow_2d = true;
  EXPECT_EQ(read_volume(dir.file("2d.tif"), o).shape(), (Shape3{1, 10, 12}));
}

// A time series of single planes is not mistaken for a z stack.
TEST(TiffReadErrors, FramesOfSinglePlanes) {
  TempDir dir;
  RawPage p = make_page<uint8_t>(3, 3, [](uint32_t, uint32_t) { return 1; });
  p.description = "ImageJ=1.11a\nimages=3\nframes=3\n";
  write_raw_tiff(dir.file("ts.tif"), {p, p, p});
  EXPECT_EQ(read_error(dir.file("ts.tif")),
            dir.file("ts.tif") + " holds 3 time points of a single plane, not a z stack; if its frames are really z "
                                 "planes, swap them in Fiji (Image > Hyperstacks > Re-order Hyperstacks) and save again");
}

// Random byte corruptions of a valid file never crash: each read succeeds or throws InputError.
TEST(TiffReadErrors, RandomCorruptionsOnlyGiveInputErrors) {
  TempDir dir;
  std::vector<RawPage> pages;
  for (int z = 0; z < 3; ++z) {
    RawPage p = make_page<uint16_t>(20, 12, [z](uint32_t y, uint32_t x) { return z * 7 + y * 3 + x; });
    p.description = "ImageJ=1.11a\nimages=3\nslices=3\nunit=micron\nspacing=0.5\n";
    p.compression = z == 1 ? COMPRESSION_ADOBE_DEFLATE : COMPRESSION_NONE;
    p.rows_per_strip = 5;
    pages.push_back(p);
  }
  write_raw_tiff(dir.file("ok.tif"), pages);
  const std::string good = read_bytes(dir.file("ok.tif"));
  uint64_t state = 12345;
  auto rnd = [&] { return (state = state * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
  int n_errors = 0, n_ok = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string b = good;
    const int n_flips = 1 + int(rnd() % 4);
    for (int k = 0; k < n_flips; ++k) b[rnd() % b.size()] = static_cast<char>(rnd() & 0xFF);
    if (trial % 10 == 0) b.resize(rnd() % b.size());
    write_bytes(dir.file("bad.tif"), b);
    try {
      const Volume v = read_volume(dir.file("bad.tif"));
      EXPECT_EQ(v.shape().y * v.shape().x, 240);
      ++n_ok;
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      ++n_errors;
    }
  }
  EXPECT_GT(n_errors, 30);  // most corruptions are detected...
  EXPECT_GT(n_ok, 30);      // ...and flips inside pixel data are just different values
}

TEST(TiffReadErrors, UnsupportedSampleFormats) {
  TempDir dir;
  const std::string i16 = dir.file("i16.tif"), f64 = dir.file("f64.tif"), rgb = dir.file("rgb.tif"),
                    u32 = dir.file("u32.tif");
  write_raw_tiff(i16, std::vector<RawPage>(2, make_page<int16_t>(4, 4, [](uint32_t, uint32_t) { return -3; })));
  write_raw_tiff(f64, std::vector<RawPage>(2, make_page<double>(4, 4, [](uint32_t, uint32_t) { return 0.5; })));
  write_raw_tiff(u32, std::vector<RawPage>(2, make_page<uint32_t>(4, 4, [](uint32_t, uint32_t) { return 5; })));
  RawPage c = make_page<uint8_t>(12, 4, [](uint32_t, uint32_t) { return 9; });
  c.w = 4;
  c.spp = 3;
  write_raw_tiff(rgb, {c, c});
  EXPECT_EQ(read_error(i16), "unsupported sample format in " + i16 + ": int16 (supported: uint8, uint16, float32)");
  EXPECT_EQ(read_error(f64), "unsupported sample format in " + f64 + ": float64 (supported: uint8, uint16, float32)");
  EXPECT_EQ(read_error(u32), "unsupported sample format in " + u32 + ": uint32 (supported: uint8, uint16, float32)");
  EXPECT_EQ(read_error(rgb), "unsupported image in " + rgb +
                                 ": 3 samples per pixel (RGB/colour); only single-channel grayscale pages are supported");
}

TEST(TiffReadErrors, PagesOfDifferentSizes) {
  TempDir dir;
  const std::string path = dir.file("mixed.tif");
  write_raw_tiff(path, {make_page<uint8_t>(32, 32, [](uint32_t, uint32_t) { return 1; }),
                        make_page<uint8_t>(32, 32, [](uint32_t, uint32_t) { return 1; }),
                        make_page<uint8_t>(16, 24, [](uint32_t, uint32_t) { return 1; })});
  EXPECT_EQ(read_error(path), "pages of different sizes in " + path + ": page 2 is 16x24 but page 0 is 32x32");
}

// NaN / Inf in float data are counted and reported as a warning, not an error.
TEST(TiffRead, NonFiniteFloatsAreReported) {
  TempDir dir;
  Volume v({2, 3, 3}, DType::F32);
  v.at<float>(0, 0, 0) = std::numeric_limits<float>::quiet_NaN();
  v.at<float>(1, 2, 2) = std::numeric_limits<float>::quiet_NaN();
  v.at<float>(1, 0, 1) = -std::numeric_limits<float>::infinity();
  write_volume(dir.file("nan.tif"), v);
  std::vector<std::string> warnings;
  set_log_sink([&](LogLevel l, const std::string& m) {
    if (l == LogLevel::Warn) warnings.push_back(m);
  });
  TiffFileInfo fi;
  const Volume r = read_volume(dir.file("nan.tif"), {}, &fi);
  set_log_sink(nullptr);
  EXPECT_EQ(fi.nan_count, 2);
  EXPECT_EQ(fi.inf_count, 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], dir.file("nan.tif") + " contains 2 NaN and 1 Inf voxels");
  EXPECT_TRUE(same_bytes(v, r));
}

// ---- the libtiff handle -----------------------------------------------------------------

// Errors are captured on the handle (not printed), and move-assignment closes the old handle.
TEST(TiffHandle, CapturesErrorsAndClosesOnMove) {
  TempDir dir;
  write_bytes(dir.file("bad.tif"), std::string("II*\0garbage", 11));
  io::TiffFile bad = io::TiffFile::open(dir.file("bad.tif"), "r");
  EXPECT_FALSE(bad);
  EXPECT_GE(bad.messages().n_errors, 1);
  EXPECT_FALSE(bad.messages().first_error.empty());

  write_raw_tiff(dir.file("a.tif"), {make_page<uint8_t>(2, 2, [](uint32_t, uint32_t) { return 1; })});
  io::TiffFile a = io::TiffFile::open(dir.file("a.tif"), "r");
  ASSERT_TRUE(a);
  io::TiffFile w = io::TiffFile::open(dir.file("w.tif"), "w");
  ASSERT_TRUE(w);
  // Replacing the writer closes it: an (empty) file is left, and it is no longer open.
  w = std::move(a);
  EXPECT_TRUE(w);
  EXPECT_EQ(TIFFNumberOfDirectories(w.get()), 1);
  EXPECT_TRUE(fs::exists(dir.file("w.tif")));
  w.close();
  EXPECT_FALSE(w);
}

// File descriptors are released by the destructor and by move-assignment.
TEST(TiffHandle, ReleasesFileDescriptors) {
  TempDir dir;
  write_raw_tiff(dir.file("a.tif"), {make_page<uint8_t>(2, 2, [](uint32_t, uint32_t) { return 1; })});
  auto open_fds = [] {
    int n = 0;
    for (auto& e : fs::directory_iterator("/proc/self/fd")) n += e.exists() ? 1 : 0;
    return n;
  };
  const int before = open_fds();
  {
    io::TiffFile a = io::TiffFile::open(dir.file("a.tif"), "r");
    io::TiffFile b = io::TiffFile::open(dir.file("a.tif"), "r");
    ASSERT_TRUE(a && b);
    EXPECT_EQ(open_fds(), before + 2);
    a = std::move(b);  // a's first handle is closed here
    EXPECT_EQ(open_fds(), before + 1);
  }
  EXPECT_EQ(open_fds(), before);
}

// ---- metadata helpers --------------------------------------------------------------------

TEST(IoMetadata, UnitsAndExactNumbers) {
  EXPECT_EQ(unit_to_micron("micron"), 1.0);
  EXPECT_EQ(unit_to_micron("\xC2\xB5m"), 1.0);
  EXPECT_EQ(unit_to_micron("\\u00B5m"), 1.0);
  EXPECT_EQ(unit_to_micron("um"), 1.0);
  EXPECT_EQ(unit_to_micron("nm"), 1e-3);
  EXPECT_EQ(unit_to_micron("\xC3\x85"), 1e-4);  // Å
  EXPECT_EQ(unit_to_micron("mm"), 1e3);
  EXPECT_EQ(unit_to_micron("pixel"), 0.0);
  EXPECT_EQ(unit_to_micron(""), 0.0);
  EXPECT_EQ(scale_to_micron(150, 1e-3), 0.15);
  EXPECT_EQ(scale_to_micron(33.855, 1e-3), 0.033855);
  EXPECT_EQ(scale_to_micron(1.5e-5, 1e3), 0.015);
  EXPECT_EQ(scale_to_micron(2, 25400), 50800);
  EXPECT_EQ(io::printable("\xB5m"), "\xC2\xB5m");         // Latin-1 micro sign -> UTF-8
  EXPECT_EQ(io::printable("\xC2\xB5m\n\x01"), "\xC2\xB5m??");  // UTF-8 kept, controls replaced
  EXPECT_EQ(io::exact_number(0.15), "0.15");
  EXPECT_EQ(io::exact_number(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(io::round_significant(1.0 / double(29.53846f), 7), 0.03385417);
}

TEST(IoMetadata, ImageJParsing) {
  const io::ImageJMeta m =
      io::parse_imagej("ImageJ=1.53t\nimages=12\nchannels=3\nslices=4\nunit=micron\nspacing=2.5\n", "f.tif");
  EXPECT_EQ(m.images, 12);
  EXPECT_EQ(m.channels, 3);
  EXPECT_EQ(m.slices, 4);
  EXPECT_EQ(m.frames, 1);
  EXPECT_EQ(m.spacing, 2.5);
  EXPECT_EQ(m.unit, "micron");
  try {
    io::parse_imagej("ImageJ=1.53t\nimages=12\nspacing=abc\n", "f.tif");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "bad ImageJ metadata in f.tif: spacing=abc is not a positive number");
  }
}
