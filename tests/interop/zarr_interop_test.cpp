// OME-Zarr and HDF5 against the real clients: zarr-python with numcodecs (what napari's
// OME-Zarr reader and ome-zarr-py use) and h5py. Files they write (every compressor, both
// dimension separators, big-endian, missing chunks, 3D and 5D NGFF metadata; chunked and
// contiguous HDF5 with element_size_um) are read exactly, voxel size included; the stores
// isoprompt writes are read back by zarr-python bit-exactly, with their multiscales axes,
// units, scales and pyramid levels checked. One Python start per direction.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "clients.h"
#include "interop_common.h"
#include "isoprompt/io.h"
#include "test_util.h"

using namespace isoprompt;
using namespace isoprompt::test;

namespace {

const std::string kScript = std::string(ISO_SOURCE_DIR) + "/tests/interop/zarr_check.py";

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string f;
  while (std::getline(ss, f, '\t')) out.push_back(f);
  return out;
}

std::string read_error(const std::string& path) {
  try {
    read_volume(path);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

}  // namespace

// Every file zarr-python and h5py wrote reads with its exact voxels and voxel size.
TEST(ZarrInterop, ReadsWhatZarrPythonAndH5pyWrite) {
  ISO_REQUIRE_CLIENT(zarr_missing());
  ISO_REQUIRE_CLIENT(h5py_missing());
  TempDir dir;
  const CliResult w = run_tifffile_script(kScript, {"write", dir.path()}, 120);
  ASSERT_EQ(w.exit_code, 0) << w.out << w.err;
  std::ifstream manifest(dir.file("manifest.tsv"));
  std::string line;
  int n = 0, n_zarr = 0, n_h5 = 0;
  while (std::getline(manifest, line)) {
    const auto f = split_tabs(line);
    ASSERT_EQ(f.size(), 10u) << line;
    const std::string& path = f[0];
    SCOPED_TRACE(path);
    ReadOptions ro;
    ro.channel = std::stoi(f[9]);
    TiffFileInfo fi;
    const Volume v = read_volume(path, ro, &fi);
    const std::string raw = read_text(f[1]);
    EXPECT_EQ(dtype_name(v.dtype()), f[2]);
    EXPECT_EQ(v.shape(), (Shape3{std::stoll(f[3]), std::stoll(f[4]), std::stoll(f[5])}));
    ASSERT_EQ(raw.size(), v.size_bytes());
    EXPECT_EQ(std::memcmp(raw.data(), v.raw(), raw.size()), 0);
    const VoxelSize want{std::stod(f[6]), std::stod(f[7]), std::stod(f[8])};
    if (want.z > 0) {
      EXPECT_TRUE(fi.calibrated);
      EXPECT_EQ(v.voxel_size(),
                want);  // exactly: JSON and HDF5 doubles, nm converted by the decimal exponent
      EXPECT_EQ(v.unit(), "micron");
    } else {
      EXPECT_FALSE(fi.calibrated);
      EXPECT_EQ(v.unit(), "pixel");
    }
    (fi.container == "Zarr" ? n_zarr : n_h5) += 1;
    ++n;
  }
  EXPECT_EQ(n_zarr, 28);
  EXPECT_EQ(n_h5, 6);
  EXPECT_EQ(n, 34);
  // What isoprompt refuses, and how it says so.
  EXPECT_EQ(read_error(dir.file("h5_lzf.h5")),
            dir.file("h5_lzf.h5") +
                ":/data is compressed with lzf (HDF5 filter 32000), which this HDF5 library cannot "
                "decode (rewrite it with gzip, e.g. h5py compression='gzip')");
  EXPECT_EQ(read_error(dir.file("h5_two.h5")),
            dir.file("h5_two.h5") + " has 2 datasets: choose one as " + dir.file("h5_two.h5") +
                ":/NAME (/a (2x3x4), /g/b (3x4x5))");
  EXPECT_EQ(read_error(dir.file("h5_int16.h5")), "unsupported dtype int16 of dataset " +
                                                     dir.file("h5_int16.h5") +
                                                     ":/data (supported: uint8, uint16, float32)");
  EXPECT_EQ(read_error(dir.file("zarr_5d.ome.zarr")),
            dir.file("zarr_5d.ome.zarr") + " has 2 channels: choose one with --channel (0..1)");
  std::printf("%s", w.out.c_str());  // the client versions
}

// zarr-python and h5py read what isoprompt writes bit-exactly, with the NGFF axes, units,
// scales and pyramid levels (2x2 means) a viewer needs to place the image.
TEST(ZarrInterop, ZarrPythonAndH5pyReadWhatIsopromptWrites) {
  ISO_REQUIRE_CLIENT(zarr_missing());
  ISO_REQUIRE_CLIENT(h5py_missing());
  TempDir dir;
  std::string manifest;
  int n = 0;
  auto add = [&](DType t, Shape3 s, ZarrWriteOptions zo, bool calibrated,
                 const std::string& ext = ".ome.zarr") {
    const std::string stem =
        fmt::format("w{:02d}_{}_{}_{}x{}x{}_l{}", n++, dtype_name(t),
                    zarr_compressor_name(zo.compressor), s.z, s.y, s.x, zo.levels);
    const Volume v = interop_volume(t, s, calibrated);
    WriteOptions wo;
    wo.zarr = zo;
    wo.compression = ext == ".h5" && t == DType::U16 ? WriteOptions::Deflate : WriteOptions::None;
    write_volume(dir.file(stem + ext), v, wo);
    write_raw_bytes(dir.file(stem + ".raw"), v);
    const VoxelSize vs = calibrated ? v.voxel_size() : VoxelSize{1, 1, 1};
    manifest += fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n", dir.file(stem + ext),
                            dir.file(stem + ".raw"), numpy_dtype(t), s.z, s.y, s.x, vs.z, vs.y,
                            vs.x, zo.levels, calibrated ? "micrometer" : "");
  };
  for (ZarrCompressor c :
       {ZarrCompressor::BloscLz4, ZarrCompressor::BloscZstd, ZarrCompressor::Zstd,
        ZarrCompressor::Zlib, ZarrCompressor::Gzip, ZarrCompressor::None})
    for (DType t : {DType::U8, DType::U16, DType::F32}) {
      ZarrWriteOptions zo;
      zo.compressor = c;
      zo.chunks = {2, 8, 16};  // partial edge chunks in every axis
      add(t, {5, 23, 37}, zo, true);
    }
  for (DType t : {DType::U8, DType::U16, DType::F32}) {
    ZarrWriteOptions zo;
    zo.levels = 3;
    zo.chunks = {3, 4, 8};
    add(t, {4, 13, 22}, zo,
        true);  // odd sizes: edge cells of the lower levels average fewer pixels
  }
  add(DType::U16, {3, 16, 16}, ZarrWriteOptions{}, false);  // uncalibrated: scale 1, no unit
  add(DType::U16, {40, 64, 48}, ZarrWriteOptions{}, true);  // automatic chunks
  for (DType t : {DType::U8, DType::U16, DType::F32})
    add(t, {3, 9, 7}, ZarrWriteOptions{}, true, ".h5");
  std::ofstream(dir.file("manifest.tsv")) << manifest;
  const CliResult r = run_tifffile_script(kScript, {"check", dir.file("manifest.tsv")}, 120);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  int ok = 0;
  std::stringstream ss(r.out);
  std::string line;
  while (std::getline(ss, line)) {
    EXPECT_EQ(line.rfind("OK ", 0), 0u) << line;
    ok += line.rfind("OK ", 0) == 0;
  }
  EXPECT_EQ(ok, n) << r.out << r.err;
}
