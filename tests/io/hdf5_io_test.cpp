// HDF5 input and output (library level): round trips, element_size_um, dataset selection,
// byte order, the RAII handle, and the InputError message of each refused file.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/hdf5_handle.h"
#include "isoprompt/io.h"
#include "test_util.h"

using namespace isoprompt;
using namespace isoprompt::test;
namespace fs = std::filesystem;
using isoprompt::io::H5Handle;

namespace {

std::string read_error(const std::string& path, const ReadOptions& o = {}) {
  try {
    read_volume(path, o);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

// Adds dataset `name` of `file_type` with `dims` (values 0, 1, 2, ... as uint16 in memory)
// and, when `voxel_count` > 0, an element_size_um of that many doubles.
void add_dataset(hid_t file, const char* name, hid_t file_type, std::vector<hsize_t> dims,
                 int voxel_count = 0, const double* voxel = nullptr) {
  H5Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  H5Handle d(H5Dcreate2(file, name, file_type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
             H5Dclose);
  ASSERT_TRUE(d);
  hsize_t n = 1;
  for (hsize_t x : dims) n *= x;
  std::vector<uint16_t> vals(n);
  for (hsize_t i = 0; i < n; ++i) vals[i] = static_cast<uint16_t>(i * 7);
  if (H5Tget_class(file_type) == H5T_INTEGER || H5Tget_class(file_type) == H5T_FLOAT) {
    ASSERT_GE(H5Dwrite(d.get(), H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals.data()), 0);
  }
  if (voxel_count > 0) {
    const hsize_t vn = static_cast<hsize_t>(voxel_count);
    H5Handle as(H5Screate_simple(1, &vn, nullptr), H5Sclose);
    H5Handle a(
        H5Acreate2(d.get(), "element_size_um", H5T_IEEE_F64LE, as.get(), H5P_DEFAULT, H5P_DEFAULT),
        H5Aclose);
    ASSERT_GE(H5Awrite(a.get(), H5T_NATIVE_DOUBLE, voxel), 0);
  }
}

H5Handle create_file(const std::string& path) {
  io::hdf5_quiet();
  return H5Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
}

}  // namespace

// write_volume / read_volume round trip every dtype, contiguous and deflate, with the voxel
// size exact in element_size_um.
TEST(Hdf5Io, RoundTrip) {
  TempDir dir;
  for (auto comp : {WriteOptions::None, WriteOptions::Deflate})
    for (DType t : {DType::U8, DType::U16, DType::F32}) {
      Volume v({3, 5, 300}, t, {0.15, 0.033855, 0.0338542}, "micron");
      for (int64_t i = 0; i < v.numel(); ++i) {
        const uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
        if (t == DType::U8) v.data<uint8_t>()[i] = static_cast<uint8_t>(h >> 24);
        if (t == DType::U16) v.data<uint16_t>()[i] = static_cast<uint16_t>(h >> 16);
        if (t == DType::F32) v.data<float>()[i] = float(h >> 8) / 3.0f;
      }
      WriteOptions wo;
      wo.compression = comp;
      const std::string path = dir.file(fmt::format("{}_{}.h5", dtype_name(t), int(comp)));
      write_volume(path + ":/g/vol", v, wo);
      TiffFileInfo fi;
      const Volume r = read_volume(path, {}, &fi);  // the only 3D dataset
      ASSERT_EQ(r.shape(), v.shape());
      EXPECT_EQ(std::memcmp(r.raw(), v.raw(), v.size_bytes()), 0);
      EXPECT_EQ(r.voxel_size(), v.voxel_size());
      EXPECT_EQ(r.unit(), "micron");
      EXPECT_EQ(fi.container, "HDF5");
      EXPECT_EQ(fi.dataset, "/g/vol");
      EXPECT_EQ(fi.tiled, comp == WriteOptions::Deflate);
      EXPECT_EQ(fi.compression, comp == WriteOptions::Deflate ? "shuffle+gzip" : "none");
      if (comp == WriteOptions::Deflate) {
        EXPECT_EQ(fi.chunks, (Shape3{3, 5, 256}));
      }
    }
  // Without a length unit there is no element_size_um, and the volume reads uncalibrated.
  Volume px({2, 2, 2}, DType::U8, {1, 1, 1}, "pixel");
  write_volume(dir.file("px.h5"), px);
  TiffFileInfo fi;
  EXPECT_EQ(read_volume(dir.file("px.h5"), {}, &fi).unit(), "pixel");
  EXPECT_FALSE(fi.calibrated);
  EXPECT_EQ(fi.dataset, "/data");
}

// Big-endian file types read in the machine's order; the dataset is picked by name, or as
// the only 3D one next to 2D and 4D datasets.
TEST(Hdf5Io, DatasetSelectionAndByteOrder) {
  TempDir dir;
  const std::string path = dir.file("multi.h5");
  const double vs[3] = {2.0, 0.5, 0.25};
  {
    H5Handle f = create_file(path);
    add_dataset(f.get(), "/raw/stack", H5T_STD_U16BE, {2, 3, 4}, 3, vs);
    add_dataset(f.get(), "/preview", H5T_STD_U8LE, {3, 4});
    add_dataset(f.get(), "/d4", H5T_STD_U8LE, {1, 2, 3, 4});
  }
  TiffFileInfo fi;
  const Volume v = read_volume(path, {}, &fi);
  ASSERT_EQ(v.shape(), (Shape3{2, 3, 4}));
  EXPECT_EQ(v.at<uint16_t>(1, 2, 3), 23 * 7);
  EXPECT_EQ(v.at<uint16_t>(0, 1, 0), 4 * 7);
  EXPECT_EQ(v.voxel_size(), (VoxelSize{2.0, 0.5, 0.25}));
  EXPECT_TRUE(fi.big_endian);
  EXPECT_EQ(fi.dataset, "/raw/stack");
  EXPECT_EQ(read_volume(path + ":raw/stack").at<uint16_t>(1, 0, 0), 12 * 7);
  EXPECT_EQ(
      read_error(path + ":/d4"),
      "dataset " + path + ":/d4 has 4 dimensions (1x2x3x4): a 3D (z, y, x) dataset is needed");
  EXPECT_EQ(
      read_error(path + ":/preview"),
      "dataset " + path + ":/preview has 2 dimensions (3x4): a 3D (z, y, x) dataset is needed");
  EXPECT_EQ(read_error(path + ":/nope"),
            "no dataset /nope in " + path + " (its 3D datasets: /raw/stack (2x3x4))");
  EXPECT_EQ(read_error(path + ":/raw"),
            "/raw in " + path + " is not a dataset (its 3D datasets: /raw/stack (2x3x4))");
  ReadOptions ro;
  ro.allow_2d = true;
  EXPECT_EQ(read_volume(path + ":/preview", ro).shape(), (Shape3{1, 3, 4}));
}

// Files isoprompt refuses, each with one line naming the file and the value.
TEST(Hdf5Io, RefusedFiles) {
  TempDir dir;
  const double two[2] = {1.0, 2.0}, negative[3] = {1.0, -0.5, 0.5};
  {
    H5Handle f = create_file(dir.file("bad.h5"));
    add_dataset(f.get(), "/i16", H5T_STD_I16LE, {2, 2, 2});
    add_dataset(f.get(), "/f64", H5T_IEEE_F64LE, {2, 2, 2});
    add_dataset(f.get(), "/two", H5T_STD_U8LE, {2, 2, 2}, 2, two);
    add_dataset(f.get(), "/neg", H5T_STD_U8LE, {2, 2, 2}, 3, negative);
    add_dataset(f.get(), "/flat", H5T_STD_U8LE, {1, 2, 2});
  }
  const std::string b = dir.file("bad.h5");
  EXPECT_EQ(read_error(b + ":/i16"), "unsupported dtype int16 of dataset " + b +
                                         ":/i16 (supported: uint8, uint16, float32)");
  EXPECT_EQ(read_error(b + ":/f64"), "unsupported dtype float64 of dataset " + b +
                                         ":/f64 (supported: uint8, uint16, float32)");
  EXPECT_EQ(read_error(b + ":/two"),
            "bad element_size_um attribute of " + b +
                ":/two: 2 float64 values (three numbers z, y, x in micrometres are needed)");
  EXPECT_EQ(read_error(b + ":/neg"), "bad element_size_um attribute of " + b +
                                         ":/neg: [1, -0.5, 0.5] (voxel sizes must be positive)");
  EXPECT_EQ(
      read_error(b + ":/flat"),
      b + ":/flat is a 2D image (2x2 pixels, one plane): a 3D stack (several z planes) is needed");
  EXPECT_EQ(read_error(b),
            b + " has 5 datasets: choose one as " + b +
                ":/NAME (/f64 (2x2x2), /flat (1x2x2), /i16 (2x2x2), /neg (2x2x2), /two (2x2x2))");
  {
    H5Handle f = create_file(dir.file("none.h5"));
    add_dataset(f.get(), "/flat", H5T_STD_U8LE, {2, 2});
  }
  EXPECT_EQ(read_error(dir.file("none.h5")), dir.file("none.h5") + " has no 3D dataset");
  std::ofstream(dir.file("text.h5")) << "not hdf5";
  EXPECT_EQ(read_error(dir.file("text.h5")),
            "not an HDF5 file: " + dir.file("text.h5") + " (no HDF5 signature)");
  EXPECT_EQ(read_error(dir.file("missing.h5:/data")),
            "input file not found: " + dir.file("missing.h5"));
}

// H5Handle closes its identifier when it dies and when another handle is moved onto it.
TEST(Hdf5Io, HandleClosesOnMoveAndDestruction) {
  TempDir dir;
  const hid_t first = H5Fcreate(dir.file("a.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hid_t second = H5Fcreate(dir.file("b.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  {
    H5Handle a(first, H5Fclose), b(second, H5Fclose);
    a = std::move(b);
    EXPECT_LE(H5Iis_valid(first), 0);
    EXPECT_GT(H5Iis_valid(second), 0);
    EXPECT_FALSE(b);
    EXPECT_EQ(a.get(), second);
  }
  EXPECT_LE(H5Iis_valid(second), 0);
}
