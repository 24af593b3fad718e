// PlaneReader / PlaneWriter (library level): plane-wise reading and writing give exactly
// what read_volume and write_volume give, for every format and flavour; range and count
// errors; temporaries; the NaN policies over plane groups; and a file larger than memory.
#include "isoprompt/planes.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "clients.h"
#include "io/hdf5_handle.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "test_util.h"
#include "tiff_fixtures.h"

using namespace isoprompt;
using namespace isoprompt::test;
namespace fs = std::filesystem;

namespace {

// Deterministic values over the dtype's range (float: negative, tiny and huge too).
Volume pattern(DType t, Shape3 s = {7, 9, 13}, VoxelSize vs = {0.3, 0.033855, 0.0338542}) {
  Volume v(s, t, vs, "micron");
  for (int64_t i = 0; i < v.numel(); ++i) {
    const uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
    if (t == DType::U8) v.data<uint8_t>()[i] = static_cast<uint8_t>(h >> 24);
    if (t == DType::U16) v.data<uint16_t>()[i] = static_cast<uint16_t>(h >> 16);
    if (t == DType::F32) {
      const float vals[] = {-3.5f, 0.1f, 1e-30f, 2e37f, -0.0f, 12345.678f};
      v.data<float>()[i] = vals[i % 6] * float(1 + (h >> 28));
    }
  }
  return v;
}

// A copy of planes [z0, z0 + n) of v.
Volume planes_of(const Volume& v, int64_t z0, int64_t n) {
  Volume p({n, v.ny(), v.nx()}, v.dtype(), v.voxel_size(), v.unit());
  const size_t plane = v.size_bytes() / static_cast<size_t>(v.nz());
  std::memcpy(p.raw(), static_cast<const uint8_t*>(v.raw()) + static_cast<size_t>(z0) * plane,
              p.size_bytes());
  return p;
}

// Groups of 1, 3 and the rest (or fewer for a short stack): uneven on purpose.
std::vector<int64_t> uneven_groups(int64_t nz) {
  std::vector<int64_t> g;
  for (int64_t z = 0, k = 0; z < nz; ++k) {
    const int64_t n = std::min<int64_t>(nz - z, k == 0 ? 1 : k == 1 ? 3 : nz);
    g.push_back(n);
    z += n;
  }
  return g;
}

// The whole volume read plane-wise in uneven groups, put back together.
Volume read_in_groups(PlaneReader& r) {
  Volume all(r.shape(), r.dtype(), r.voxel_size(), r.unit());
  const size_t plane = all.size_bytes() / static_cast<size_t>(all.nz());
  int64_t z = 0;
  for (int64_t n : uneven_groups(r.shape().z)) {
    const Volume p = r.read_planes(z, n);
    EXPECT_EQ(p.shape(), (Shape3{n, r.shape().y, r.shape().x}));
    EXPECT_EQ(p.voxel_size(), r.voxel_size());
    EXPECT_EQ(p.unit(), r.unit());
    std::memcpy(static_cast<uint8_t*>(all.raw()) + static_cast<size_t>(z) * plane, p.raw(),
                p.size_bytes());
    z += n;
  }
  return all;
}

void write_in_groups(const std::string& path, const Volume& v, const WriteOptions& wo = {}) {
  PlaneWriter w(path, v.shape(), v.dtype(), v.voxel_size(), v.unit(), wo);
  int64_t z = 0;
  for (int64_t n : uneven_groups(v.nz())) {
    w.write_planes(planes_of(v, z, n));
    z += n;
    EXPECT_EQ(w.planes_written(), z);
  }
  w.commit();
}

bool same_voxels(const Volume& a, const Volume& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

// read_volume and the plane reader agree on voxels, calibration and what info says.
void expect_planes_match(const std::string& path, const ReadOptions& ro = {}) {
  SCOPED_TRACE(path);
  TiffFileInfo want_info;
  const Volume want = read_volume(path, ro, &want_info);
  PlaneReader r(path, ro);
  EXPECT_EQ(r.shape(), want.shape());
  EXPECT_EQ(r.dtype(), want.dtype());
  const Volume got = read_in_groups(r);
  EXPECT_TRUE(same_voxels(got, want));
  EXPECT_EQ(got.voxel_size(), want.voxel_size());
  EXPECT_EQ(got.unit(), want.unit());
  const TiffFileInfo& i = r.info();
  EXPECT_EQ(i.container, want_info.container);
  EXPECT_EQ(i.flavor, want_info.flavor);
  EXPECT_EQ(i.compression, want_info.compression);
  EXPECT_EQ(i.big_endian, want_info.big_endian);
  EXPECT_EQ(i.tiled, want_info.tiled);
  EXPECT_EQ(i.pages, want_info.pages);
  EXPECT_EQ(i.channels, want_info.channels);
  EXPECT_EQ(i.channel, want_info.channel);
  EXPECT_EQ(i.times, want_info.times);
  EXPECT_EQ(i.time, want_info.time);
  EXPECT_EQ(i.calibrated, want_info.calibrated);
  EXPECT_EQ(i.chunks, want_info.chunks);
  EXPECT_EQ(i.dataset, want_info.dataset);
  EXPECT_EQ(i.nan_count, want_info.nan_count);
  EXPECT_EQ(i.inf_count, want_info.inf_count);
}

std::string tiff_description(const std::string& path) {
  TIFF* t = TIFFOpen(path.c_str(), "r");
  char* d = nullptr;
  std::string s;
  if (t && TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &d)) s = d;
  if (t) TIFFClose(t);
  return s;
}

template <typename E, typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no exception)";
}

// ImageJ's large-stack layout, little-endian: one IFD describing image 0 and
// `desc` (images=N); the data start at `data_offset` and the file is `file_size` bytes
// (extended sparsely: the images past what is written read as zeros).
void write_imagej_contiguous_le(const std::string& path, uint32_t w, uint32_t h,
                                const std::string& desc, uint64_t data_offset,
                                const std::string& data, uint64_t file_size) {
  std::string b = "II";
  auto u16 = [&](uint16_t v) { b += char(v & 0xFF), b += char(v >> 8); };
  auto u32 = [&](uint32_t v) { u16(uint16_t(v & 0xFFFF)), u16(uint16_t(v >> 16)); };
  u16(42);
  u32(8);
  const uint32_t desc_off = 8 + 2 + 10 * 12 + 4;
  u16(10);
  auto entry = [&](uint16_t tag, uint16_t type, uint32_t count, uint32_t value) {
    u16(tag), u16(type), u32(count);
    if (type == TIFF_SHORT)
      u16(uint16_t(value)), u16(0);
    else
      u32(value);
  };
  entry(256, TIFF_LONG, 1, w);
  entry(257, TIFF_LONG, 1, h);
  entry(258, TIFF_SHORT, 1, 8);
  entry(259, TIFF_SHORT, 1, 1);
  entry(262, TIFF_SHORT, 1, 1);
  entry(270, TIFF_ASCII, uint32_t(desc.size() + 1), desc_off);
  entry(273, TIFF_LONG, 1, uint32_t(data_offset));
  entry(277, TIFF_SHORT, 1, 1);
  entry(278, TIFF_LONG, 1, h);
  entry(279, TIFF_LONG, 1, w * h);
  u32(0);
  b += desc;
  b += '\0';
  b.resize(static_cast<size_t>(data_offset), '\0');
  b += data;
  write_bytes(path, b);
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(file_size)), 0);
}

// Counts the warnings logged while it lives.
class WarningCounter {
 public:
  WarningCounter() {
    set_log_sink([this](LogLevel l, const std::string& m) {
      if (l == LogLevel::Warn) messages.push_back(m);
    });
  }
  ~WarningCounter() { set_log_sink(nullptr); }
  std::vector<std::string> messages;
};

}  // namespace

// ---- reading ------------------------------------------------------------------------------

// TIFF written by write_volume in every flavour, dtype and compression: the planes read in
// groups of 1, 3 and the rest are read_volume's voxels, with the same calibration and info.
TEST(PlanesRead, TiffFlavoursDtypesCompressions) {
  TempDir dir;
  for (DType t : {DType::U8, DType::U16, DType::F32})
    for (const char* ext : {".tif", ".ome.tif"})
      for (auto comp : {WriteOptions::None, WriteOptions::Deflate, WriteOptions::LZW}) {
        WriteOptions wo;
        wo.compression = comp;
        const std::string path = dir.file(fmt::format("{}_{}{}", dtype_name(t), int(comp), ext));
        write_volume(path, pattern(t), wo);
        expect_planes_match(path);
      }
  // BigTIFF and ImageJ's large-stack layout (one IFD, planes read at their offsets).
  WriteOptions big;
  big.force_bigtiff = true;
  write_volume(dir.file("big.tif"), pattern(DType::U16), big);
  expect_planes_match(dir.file("big.tif"));
  WriteOptions large;
  large.large_stack_layout = true;
  write_volume(dir.file("large.tif"), pattern(DType::F32), large);
  TiffFileInfo fi;
  read_volume(dir.file("large.tif"), {}, &fi);
  ASSERT_EQ(fi.pages, 1);
  expect_planes_match(dir.file("large.tif"));
}

// Files other programs write: tiled deflate with partial edge tiles, big-endian LZW with
// several strips per page, ImageJ hyperstacks (channel and time chosen), big-endian
// ImageJ contiguous layout.
TEST(PlanesRead, TiledBigEndianHyperstacksContiguous) {
  TempDir dir;
  std::vector<RawPage> tiled, be;
  for (int z = 0; z < 6; ++z) {
    RawPage p = make_page<uint16_t>(
        40, 37, [z](uint32_t y, uint32_t x) { return z * 10000 + y * 100 + x; });
    p.tiled = true;
    p.compression = COMPRESSION_ADOBE_DEFLATE;
    tiled.push_back(p);
    RawPage q =
        make_page<float>(9, 11, [z](uint32_t y, uint32_t x) { return z - 0.25f * y + 1e-3f * x; });
    q.rows_per_strip = 4;
    q.compression = COMPRESSION_LZW;
    be.push_back(q);
  }
  write_raw_tiff(dir.file("tiled.tif"), tiled);
  write_raw_tiff(dir.file("be.tif"), be, "wb");
  expect_planes_match(dir.file("tiled.tif"));
  expect_planes_match(dir.file("be.tif"));

  // 2 channels x 5 slices x 2 frames, channels fastest (ImageJ's order).
  std::vector<RawPage> hs;
  for (int page = 0; page < 20; ++page) {
    RawPage p = make_page<uint16_t>(
        5, 4, [page](uint32_t y, uint32_t x) { return page * 100 + y * 10 + x; });
    p.description =
        "ImageJ=1.53t\nimages=20\nchannels=2\nslices=5\nframes=2\nhyperstack=true\nmode=composite\n"
        "unit=micron\nspacing=0.5\nloop=false\n";
    p.xres = 10;
    hs.push_back(p);
  }
  write_raw_tiff(dir.file("hs.tif"), hs);
  for (int c = 0; c < 2; ++c)
    for (int t = 0; t < 2; ++t) {
      ReadOptions ro;
      ro.channel = c;
      ro.time = t;
      expect_planes_match(dir.file("hs.tif"), ro);
      PlaneReader r(dir.file("hs.tif"), ro);
      // Plane z of channel c, frame t is page (t * 5 + z) * 2 + c.
      EXPECT_EQ(r.read_planes(3, 1).at<uint16_t>(0, 0, 0), ((t * 5 + 3) * 2 + c) * 100);
    }
  // Without a channel the plane reader refuses as read_volume does.
  EXPECT_EQ(error_of<InputError>([&] { PlaneReader r(dir.file("hs.tif")); }),
            dir.file("hs.tif") + " has 2 channels: choose one with --channel (0..1)");

  // ImageJ's large-stack layout, big-endian uint16: each image is swapped as it is read.
  {
    const uint32_t w = 5, h = 3, n = 6;
    std::string b = "MM";
    auto u16 = [&](uint16_t v) { b += char(v >> 8), b += char(v & 0xFF); };
    auto u32 = [&](uint32_t v) { u16(uint16_t(v >> 16)), u16(uint16_t(v & 0xFFFF)); };
    const std::string desc =
        "ImageJ=1.54f\nimages=6\nslices=6\nunit=micron\nspacing=2.0\nloop=false\n";
    u16(42);
    const uint32_t data_bytes = w * h * n * 2, desc_off = 8 + data_bytes;
    const uint32_t ifd_off = desc_off + uint32_t(desc.size()) + 1 + ((desc.size() + 1) % 2);
    u32(ifd_off);
    for (uint32_t i = 0; i < w * h * n; ++i) u16(uint16_t(1000 + 300 * i));
    b += desc;
    b += '\0';
    while (b.size() < ifd_off) b += '\0';
    u16(10);
    auto entry = [&](uint16_t tag, uint16_t type, uint32_t count, uint32_t value) {
      u16(tag), u16(type), u32(count);
      if (type == TIFF_SHORT)
        u16(uint16_t(value)), u16(0);
      else
        u32(value);
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
    write_bytes(dir.file("contig_be.tif"), b);
    expect_planes_match(dir.file("contig_be.tif"));
    PlaneReader r(dir.file("contig_be.tif"));
    EXPECT_TRUE(r.info().big_endian);
    EXPECT_EQ(r.read_planes(4, 1).at<uint16_t>(0, 2, 3),
              uint16_t(1000 + 300 * (4 * 15 + 2 * 5 + 3)));
  }
}

// HDF5, contiguous and chunked (also chunks shallower than the group sizes read), and
// OME-Zarr with chunk edges that do not divide the volume.
TEST(PlanesRead, Hdf5AndZarr) {
  TempDir dir;
  for (DType t : {DType::U8, DType::U16, DType::F32})
    for (auto comp : {WriteOptions::None, WriteOptions::Deflate}) {
      WriteOptions wo;
      wo.compression = comp;
      const std::string path = dir.file(fmt::format("{}_{}.h5", dtype_name(t), int(comp)));
      write_volume(path + ":/g/vol", pattern(t), wo);
      expect_planes_match(path);
      WriteOptions zo;
      zo.zarr.chunks = {2, 4, 5};
      const std::string zpath = dir.file(fmt::format("{}.ome.zarr", dtype_name(t)));
      write_volume(zpath, pattern(t), zo);
      expect_planes_match(zpath);
    }
  // A chunked dataset with 2-plane chunks, as h5py writes it, big-endian.
  const std::string path = dir.file("chunked.h5");
  {
    io::hdf5_quiet();
    io::H5Handle f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    const hsize_t dims[3] = {7, 6, 5}, chunk[3] = {2, 3, 5};
    io::H5Handle space(H5Screate_simple(3, dims, nullptr), H5Sclose);
    io::H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_chunk(dcpl.get(), 3, chunk);
    H5Pset_deflate(dcpl.get(), 4);
    io::H5Handle d(H5Dcreate2(f.get(), "/stack", H5T_STD_U16BE, space.get(), H5P_DEFAULT,
                              dcpl.get(), H5P_DEFAULT),
                   H5Dclose);
    std::vector<uint16_t> vals(7 * 6 * 5);
    for (size_t i = 0; i < vals.size(); ++i) vals[i] = static_cast<uint16_t>(i * 211);
    ASSERT_GE(H5Dwrite(d.get(), H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals.data()), 0);
  }
  expect_planes_match(path);
  PlaneReader r(path);
  EXPECT_EQ(r.info().chunks, (Shape3{2, 3, 5}));
  EXPECT_EQ(r.read_planes(5, 2).at<uint16_t>(1, 4, 3), uint16_t((6 * 30 + 4 * 5 + 3) * 211));
}

// Planes outside the volume, or an empty range, are an InputError naming the file.
TEST(PlanesRead, OutOfRangePlanes) {
  TempDir dir;
  const std::string path = dir.file("v.tif");
  write_volume(path, pattern(DType::U16));
  PlaneReader r(path);
  const std::string tail = ": it has 7 planes (0..6)";
  EXPECT_EQ(error_of<InputError>([&] { r.read_planes(-1, 1); }),
            "planes -1..-1 are outside " + path + tail);
  EXPECT_EQ(error_of<InputError>([&] { r.read_planes(7, 1); }),
            "planes 7..7 are outside " + path + tail);
  EXPECT_EQ(error_of<InputError>([&] { r.read_planes(5, 3); }),
            "planes 5..7 are outside " + path + tail);
  EXPECT_EQ(error_of<InputError>([&] { r.read_planes(2, 0); }),
            "planes 2..1 are outside " + path + tail);
  EXPECT_EQ(r.read_planes(6, 1).nz(), 1);  // the reader still works
  // Opening a missing file is read_volume's error.
  EXPECT_EQ(error_of<InputError>([&] { PlaneReader m(dir.file("none.tif")); }),
            error_of<InputError>([&] { read_volume(dir.file("none.tif")); }));
}

// NaN policies over plane groups: Keep warns once and keeps the bits; Refuse names the
// first non-finite voxel's position in the whole volume; Replace gives replace_non_finite's
// values on the whole volume, neighbours across group boundaries included, and refuses
// only where that needs the whole volume's median.
TEST(PlanesRead, NanPolicies) {
  TempDir dir;
  Volume v = pattern(DType::F32, {7, 6, 5});
  // NaNs on both sides of the group boundaries (groups are planes 0 | 1..3 | 4..6).
  v.at<float>(0, 2, 2) = NAN;
  v.at<float>(1, 2, 3) = INFINITY;
  v.at<float>(3, 0, 0) = NAN;
  v.at<float>(4, 0, 1) = -INFINITY;
  v.at<float>(6, 5, 4) = NAN;
  const std::string path = dir.file("nan.tif");
  write_volume(path, v);

  {
    WarningCounter warnings;
    expect_planes_match(path);                // Keep: bit-exact NaNs, the same counts in info()
    ASSERT_EQ(warnings.messages.size(), 2u);  // read_volume's and the plane reader's one
    EXPECT_EQ(warnings.messages[0], path + " contains 3 NaN and 2 Inf voxels");
    EXPECT_EQ(warnings.messages[1], path + " contains 1 NaN and 0 Inf voxels in planes 0..0");
  }
  ReadOptions refuse;
  refuse.nan = NanPolicy::Refuse;
  {
    PlaneReader r(path, refuse);
    EXPECT_EQ(r.read_planes(5, 1).nz(), 1);  // no NaN there
    const std::string msg = error_of<InputError>([&] { r.read_planes(2, 3); });
    EXPECT_EQ(
        msg.rfind(
            path + " contains 1 NaN and 1 Inf voxels in planes 2..4 (the first at z 3, y 0, x 0)",
            0),
        0u)
        << msg;
  }
  ReadOptions replace;
  replace.nan = NanPolicy::Replace;
  expect_planes_match(path, replace);
  {
    // Groups of every size and offset agree with the whole volume's replacement.
    const Volume want = read_volume(path, replace);
    PlaneReader r(path, replace);
    for (int64_t z0 = 0; z0 < 7; ++z0)
      for (int64_t n = 1; z0 + n <= 7; ++n)
        ASSERT_TRUE(same_voxels(r.read_planes(z0, n), planes_of(want, z0, n))) << z0 << " " << n;
  }
  // A NaN whose 3x3x3 neighbourhood is all NaN gets the whole volume's median: read_volume
  // gives it, the plane reader cannot and says so (for the planes that hold it).
  for (int64_t z = 1; z <= 3; ++z)
    for (int64_t y = 1; y <= 3; ++y)
      for (int64_t x = 1; x <= 3; ++x) v.at<float>(z, y, x) = NAN;
  write_volume(path, v);
  const Volume whole = read_volume(path, replace);
  EXPECT_TRUE(std::isfinite(whole.at<float>(2, 2, 2)));
  PlaneReader r(path, replace);
  EXPECT_TRUE(same_voxels(r.read_planes(5, 2), planes_of(whole, 5, 2)));
  EXPECT_TRUE(same_voxels(r.read_planes(0, 2), planes_of(whole, 0, 2)));  // (2,2,2) not in them
  EXPECT_EQ(error_of<InputError>([&] { r.read_planes(1, 3); }),
            path +
                ": --nan replace needs the whole volume in memory here: the non-finite voxel at z "
                "2, y 2, x 2 "
                "has no finite neighbour, and such a voxel gets the median of all finite voxels of "
                "the volume");
}

// A volume larger than this machine's memory: read_volume refuses it, the plane reader
// opens it and reads planes anywhere in it. The file is ImageJ's large-stack layout whose
// images are stored as a sparse file (the disk holds two planes), so it is really as
// large as its header says.
TEST(PlanesRead, VolumeLargerThanMemory) {
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  const uint32_t w = 4096, h = 4096;
  const uint64_t plane = uint64_t(w) * h, data_offset = 4096;
  const uint64_t n = static_cast<uint64_t>(1.25 * ram / double(plane)) + 1;
  TempDir dir;
  const std::string path = dir.file("huge.tif");
  std::string first(plane, '\0');
  for (uint64_t i = 0; i < plane; ++i) first[i] = char(i * 7 % 251);
  write_imagej_contiguous_le(path, w, h,
                             fmt::format("ImageJ=1.54f\nimages={}\nslices={}\nloop=false\n", n, n),
                             data_offset, first, data_offset + n * plane);
  if (HasFatalFailure()) return;
  {
    // The last image holds a marker (written into the sparse tail).
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(data_offset + (n - 1) * plane + 12345));
    f.put(char(99));
  }
  const std::string msg = error_of<InputError>([&] { read_volume(path); });
  EXPECT_EQ(msg.rfind(path + " is too large for this machine: " + std::to_string(n) +
                          "x4096x4096 uint8 needs ",
                      0),
            0u)
      << msg;
  PlaneReader r(path);
  ASSERT_EQ(r.shape(), (Shape3{int64_t(n), int64_t(h), int64_t(w)}));
  const Volume p0 = r.read_planes(0, 1);
  EXPECT_EQ(std::memcmp(p0.raw(), first.data(), plane), 0);
  const Volume last = r.read_planes(int64_t(n) - 2, 2);
  EXPECT_EQ(last.at<uint8_t>(0, 0, 12345), 0);
  EXPECT_EQ(last.at<uint8_t>(1, 12345 / w, 12345 % w), 99);
}

// ---- writing ------------------------------------------------------------------------------

// Plane-wise TIFF writing, in uneven groups, gives write_volume's file byte for byte
// wherever the metadata are known up front: every dtype of OME-TIFF, ImageJ uint8/uint16,
// compressed or not, BigTIFF, the large-stack layout.
TEST(PlanesWrite, TiffIsByteIdentical) {
  TempDir dir;
  struct Case {
    DType t;
    const char* ext;
    WriteOptions::Compression comp;
    bool bigtiff, large_stack;
  };
  std::vector<Case> cases;
  for (DType t : {DType::U8, DType::U16, DType::F32})
    for (const char* ext : {".tif", ".ome.tif"})
      for (auto comp : {WriteOptions::None, WriteOptions::Deflate, WriteOptions::LZW})
        if (!(t == DType::F32 && std::string(ext) == ".tif"))
          cases.push_back({t, ext, comp, false, false});
  cases.push_back({DType::U16, ".tif", WriteOptions::None, true, false});
  cases.push_back({DType::U16, ".ome.tif", WriteOptions::Deflate, true, false});
  cases.push_back({DType::U8, ".tif", WriteOptions::None, false, true});
  int i = 0;
  for (const Case& c : cases) {
    WriteOptions wo;
    wo.compression = c.comp;
    wo.force_bigtiff = c.bigtiff;
    wo.large_stack_layout = c.large_stack;
    wo.notes = {{"method", "planes"}};
    // The same name in two folders: OME-XML names the file.
    fs::create_directories(dir.file(fmt::format("whole{}", i)));
    fs::create_directories(dir.file(fmt::format("planes{}", i)));
    const std::string a = dir.file(fmt::format("whole{}/v{}", i, c.ext)),
                      b = dir.file(fmt::format("planes{}/v{}", i, c.ext));
    ++i;
    const Volume v = pattern(c.t);
    write_volume(a, v, wo);
    write_in_groups(b, v, wo);
    EXPECT_TRUE(read_bytes(a) == read_bytes(b)) << a << " and " << b << " differ";
  }
}

// A float ImageJ stack written plane-wise: its display range (min/max in the
// description) is found over the planes and written into the reserved field at commit. The
// description then reads as write_volume's plus a last line of spaces (the field's padding),
// the voxels are the same, and tifffile reads it like write_volume's file.
TEST(PlanesWrite, FloatImageJDisplayRange) {
  TempDir dir;
  Volume v = pattern(DType::F32);
  v.at<float>(4, 1, 1) = NAN;  // not part of the range
  std::string manifest;
  for (auto comp : {WriteOptions::None, WriteOptions::Deflate}) {
    WriteOptions wo;
    wo.compression = comp;
    wo.notes = {{"method", "planes"}};
    const std::string a = dir.file(fmt::format("whole{}.tif", int(comp))),
                      b = dir.file(fmt::format("planes{}.tif", int(comp)));
    write_volume(a, v, wo);
    write_in_groups(b, v, wo);
    const std::string desc = tiff_description(a);
    ASSERT_NE(desc.find("min=-56\nmax="), std::string::npos) << desc;
    const std::string padded = tiff_description(b);
    EXPECT_EQ(padded.substr(0, desc.size()), desc);
    EXPECT_GT(padded.size(), desc.size());
    EXPECT_EQ(padded.find_first_not_of(' ', desc.size()), std::string::npos) << padded;
    TiffFileInfo ia, ib;
    const Volume ra = read_volume(a, {}, &ia), rb = read_volume(b, {}, &ib);
    EXPECT_TRUE(same_voxels(ra, rb));
    EXPECT_EQ(rb.voxel_size(), v.voxel_size());
    EXPECT_EQ(ib.notes, ia.notes);
    EXPECT_EQ(ib.compression, ia.compression);
    manifest += a + "\n" + b + "\n";
  }
  // All non-finite: no range at all, as write_volume writes it.
  Volume nan({2, 3, 4}, DType::F32, {1, 1, 1}, "micron");
  for (int64_t k = 0; k < nan.numel(); ++k) nan.data<float>()[k] = NAN;
  write_volume(dir.file("nan_a.tif"), nan);
  write_in_groups(dir.file("nan_b.tif"), nan);
  const std::string nan_desc = tiff_description(dir.file("nan_a.tif"));
  EXPECT_EQ(tiff_description(dir.file("nan_b.tif")).substr(0, nan_desc.size()), nan_desc);
  EXPECT_EQ(nan_desc.find("min="), std::string::npos);

  ISO_REQUIRE_CLIENT(tifffile_missing());
  std::ofstream(dir.file("check.py")) << R"(import sys, tifffile, numpy
names = open(sys.argv[1]).read().split()
for a, b in zip(names[0::2], names[1::2]):
    with tifffile.TiffFile(a) as ta, tifffile.TiffFile(b) as tb:
        assert ta.is_imagej and tb.is_imagej, (a, b)
        ma, mb = ta.imagej_metadata, tb.imagej_metadata
        assert ma == mb, (ma, mb)
        assert numpy.array_equal(ta.asarray(), tb.asarray(), equal_nan=True)
        assert ta.series[0].shape == tb.series[0].shape
print('SAME', len(names) // 2)
)";
  std::ofstream(dir.file("manifest.txt")) << manifest;
  const CliResult r = run_tifffile_script(dir.file("check.py"), {dir.file("manifest.txt")}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("SAME 2"), std::string::npos) << r.out;
}

// HDF5 and OME-Zarr written plane-wise read back as write_volume's files, with the same
// chunks and compression; an OME-Zarr store is the same files byte for byte.
TEST(PlanesWrite, Hdf5AndZarr) {
  TempDir dir;
  for (DType t : {DType::U8, DType::U16, DType::F32})
    for (auto comp : {WriteOptions::None, WriteOptions::Deflate}) {
      const Volume v = pattern(t, {37, 9, 13});  // chunks of 32 planes and a short one
      WriteOptions wo;
      wo.compression = comp;
      const std::string a = dir.file(fmt::format("a{}{}.h5", int(t), int(comp))),
                        b = dir.file(fmt::format("b{}{}.h5", int(t), int(comp)));
      write_volume(a + ":/g/vol", v, wo);
      write_in_groups(b + ":/g/vol", v, wo);
      TiffFileInfo ia, ib;
      const Volume ra = read_volume(a, {}, &ia), rb = read_volume(b, {}, &ib);
      EXPECT_TRUE(same_voxels(rb, v));
      EXPECT_EQ(rb.voxel_size(), v.voxel_size());
      EXPECT_EQ(ib.dataset, "/g/vol");
      EXPECT_EQ(ib.chunks, ia.chunks);
      EXPECT_EQ(ib.compression, ia.compression);
    }
  for (DType t : {DType::U8, DType::F32}) {
    const Volume v = pattern(t, {7, 9, 13});
    WriteOptions wo;
    wo.zarr.chunks = {2, 4, 8};
    wo.zarr.levels = 2;
    const std::string a = dir.file(fmt::format("a{}.ome.zarr", int(t))),
                      b = dir.file(fmt::format("b{}.ome.zarr", int(t)));
    write_volume(a, v, wo);
    write_in_groups(b, v, wo);
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(a))
      if (e.is_regular_file()) files.push_back(fs::relative(e.path(), a).string());
    ASSERT_GT(files.size(), 20u);
    for (const std::string& f : files) {
      if (f == ".zattrs") continue;  // names the store
      EXPECT_EQ(read_bytes(a + "/" + f), read_bytes(b + "/" + f)) << f;
    }
    EXPECT_TRUE(same_voxels(read_volume(b), v));
  }
}

// Too few planes: commit throws and nothing is under the final name; too many or wrong
// planes are refused; a writer destroyed without commit leaves nothing behind.
TEST(PlanesWrite, CountsShapesAndTemporaries) {
  TempDir dir;
  const Volume v = pattern(DType::U16);
  for (const char* name : {"a.tif", "a.ome.tif", "c.tif", "a.h5", "a.ome.zarr"}) {
    SCOPED_TRACE(name);
    const std::string path = dir.file(name);
    WriteOptions wo;
    if (std::string(name) == "c.tif") wo.compression = WriteOptions::Deflate;
    {
      PlaneWriter w(path, v.shape(), v.dtype(), v.voxel_size(), v.unit(), wo);
      w.write_planes(planes_of(v, 0, 4));
      EXPECT_EQ(error_of<Error>([&] { w.commit(); }), path + ": 4 of 7 planes were written");
      EXPECT_FALSE(fs::exists(path));
      EXPECT_EQ(error_of<Error>([&] { w.write_planes(planes_of(v, 0, 4)); }),
                path + ": 4 more planes after 4 would pass the volume's 7");
      EXPECT_EQ(error_of<Error>([&] {
                  w.write_planes(pattern(DType::U8, {1, 9, 13}));
                }),
                path + ": planes of 1x9x13 uint8 do not fit a volume of 7x9x13 uint16");
      EXPECT_EQ(error_of<Error>([&] {
                  w.write_planes(pattern(DType::U16, {1, 9, 12}));
                }),
                path + ": planes of 1x9x12 uint16 do not fit a volume of 7x9x13 uint16");
      EXPECT_EQ(w.planes_written(), 4);
    }
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(files_in(dir.path()).empty());  // no temporary either
    {
      PlaneWriter w(path, v.shape(), v.dtype(), v.voxel_size(), v.unit(), wo);
      w.write_planes(v);
    }
    EXPECT_TRUE(files_in(dir.path()).empty());
    // After commit the file is there, and more planes are refused.
    PlaneWriter w(path, v.shape(), v.dtype(), v.voxel_size(), v.unit(), wo);
    w.write_planes(v);
    w.commit();
    EXPECT_TRUE(same_voxels(read_volume(path), v));
    EXPECT_EQ(error_of<Error>([&] { w.write_planes(planes_of(v, 0, 1)); }),
              path + ": write_planes after commit");
    fs::remove_all(path);
  }
  // An output that cannot be created is write_volume's InputError.
  EXPECT_EQ(error_of<InputError>([&] {
              PlaneWriter w(dir.file("no/such/dir/x.tif"), v.shape(), v.dtype(), v.voxel_size(),
                            v.unit());
            }),
            error_of<InputError>([&] { write_volume(dir.file("no/such/dir/x.tif"), v); }));
}
