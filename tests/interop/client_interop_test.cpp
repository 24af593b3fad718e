// isoprompt's outputs opened in the real clients, ImageJ 1.x and tifffile (napari's TIFF
// reader), and ImageJ's own files read by isoprompt. Every writer path is covered: ImageJ
// and OME flavour, no/deflate/LZW compression, classic TIFF, ImageJ's large-stack layout
// and BigTIFF, uint8/uint16/float32, 1, 2, 3, 5 and many planes, tiny and normal planes.
// One JVM (or Python) start checks all files: starting ImageJ under Xvfb costs seconds.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "clients.h"
#include "interop_common.h"
#include "isoprompt/io.h"
#include "test_util.h"

using namespace isoprompt;
using namespace isoprompt::test;

namespace {

const char* comp_name(WriteOptions::Compression c) {
  return c == WriteOptions::None ? "none" : c == WriteOptions::Deflate ? "deflate" : "lzw";
}

// Writes one file per variant into `dir`; `with_bigtiff` adds the BigTIFF ones (which
// ImageJ 1.x cannot open).
std::vector<Variant> write_variants(const TempDir& dir, bool with_bigtiff) {
  std::vector<Variant> out;
  int n = 0;
  auto add = [&](DType dtype, Shape3 shape, WriteOptions wo, bool calibrated) {
    Variant v;
    v.dtype = dtype;
    v.shape = shape;
    v.opts = wo;
    v.calibrated = calibrated;
    const std::string stem =
        fmt::format("v{:03d}_{}_{}_{}_{}x{}x{}{}{}{}", n++, dtype_name(dtype),
                    wo.flavor == WriteOptions::OME ? "ome" : "ij", comp_name(wo.compression),
                    shape.z, shape.y, shape.x, wo.force_bigtiff ? "_big" : "",
                    wo.large_stack_layout ? "_large" : "", calibrated ? "" : "_uncal");
    v.path = dir.file(stem + (wo.flavor == WriteOptions::OME ? ".ome.tif" : ".tif"));
    v.raw = dir.file(stem + ".raw");
    const Volume vol = interop_volume(dtype, shape, calibrated);
    v.voxel = vol.voxel_size();
    write_volume(v.path, vol, wo);
    write_raw_bytes(v.raw, vol);
    out.push_back(v);
  };
  const Shape3 planes[] = {{0, 16, 16}, {0, 23, 37}};
  for (DType dtype : {DType::U8, DType::U16, DType::F32})
    for (auto flavor : {WriteOptions::ImageJ, WriteOptions::OME})
      for (auto comp : {WriteOptions::None, WriteOptions::Deflate, WriteOptions::LZW})
        for (int64_t nz : {1, 2, 3, 5, 40})
          for (Shape3 p : planes) {
            WriteOptions wo;
            wo.flavor = flavor;
            wo.compression = comp;
            // Provenance notes (restore writes them) must not disturb what clients read.
            if (nz == 3) wo.notes = {{"method", "prompt"}, {"fallback", "a = b, c"}};
            add(dtype, {nz, p.y, p.x}, wo, true);
            if (with_bigtiff && p.x == 16 && nz <= 5) {
              wo.force_bigtiff = true;
              add(dtype, {nz, p.y, p.x}, wo, true);
            }
          }
  // ImageJ's large-stack layout (used by itself past 4 GiB), on small stacks.
  for (DType dtype : {DType::U8, DType::U16, DType::F32})
    for (int64_t nz : {2, 5, 40}) {
      WriteOptions wo;
      wo.flavor = WriteOptions::ImageJ;
      wo.large_stack_layout = true;
      add(dtype, {nz, 16, 16}, wo, true);
    }
  // Uncalibrated volumes stay uncalibrated in both flavours.
  for (auto flavor : {WriteOptions::ImageJ, WriteOptions::OME}) {
    WriteOptions wo;
    wo.flavor = flavor;
    add(DType::U16, {3, 16, 16}, wo, false);
  }
  return out;
}

// ImageJ macro: per file its dimensions, bit depth, calibration and, per slice, the
// exact integer sums S0 = sum k*v and S1 = sum k*v*w(x, y) with a position weight w, so a
// shifted, swapped or wrong plane changes them (k = 8 makes the float test values
// integers).
const char* kMacroFunctions = R"(
setBatchMode(true);
function check(path, k) {
  open(path);
  getDimensions(w, h, c, z, t);
  getVoxelSize(pw, ph, pd, unit);
  print("FILE " + path);
  print("DIM " + w + " " + h + " " + c + " " + z + " " + t + " " + bitDepth());
  print("CAL " + d2s(pw, -9) + " " + d2s(ph, -9) + " " + d2s(pd, -9) + " " + unit);
  for (s = 1; s <= nSlices; s++) {
    setSlice(s);
    s0 = 0;
    s1 = 0;
    for (y = 0; y < h; y++) {
      for (x = 0; x < w; x++) {
        v = getPixel(x, y) * k;
        s0 += v;
        s1 += v * ((x * 7 + y * 13) % 31 + 1);
      }
    }
    print("SLICE " + s + " " + d2s(s0, 0) + " " + d2s(s1, 0));
  }
  close();
}
)";

int value_scale(DType t) {
  return t == DType::F32 ? 8 : 1;
}

// The SLICE lines ImageJ must print for `v`.
std::vector<std::string> expected_slices(const Volume& v) {
  std::vector<std::string> lines;
  const int k = value_scale(v.dtype());
  for (int64_t z = 0; z < v.nz(); ++z) {
    int64_t s0 = 0, s1 = 0;
    for (int64_t y = 0; y < v.ny(); ++y)
      for (int64_t x = 0; x < v.nx(); ++x) {
        const double d = v.dtype() == DType::U8    ? v.at<uint8_t>(z, y, x)
                         : v.dtype() == DType::U16 ? v.at<uint16_t>(z, y, x)
                                                   : v.at<float>(z, y, x);
        const auto s = static_cast<int64_t>(std::llround(d * k));
        s0 += s;
        s1 += s * ((x * 7 + y * 13) % 31 + 1);
      }
    lines.push_back(fmt::format("SLICE {} {} {}", z + 1, s0, s1));
  }
  return lines;
}

// ImageJ's output, split per FILE block.
std::map<std::string, std::vector<std::string>> blocks_by_file(const std::string& out) {
  std::map<std::string, std::vector<std::string>> m;
  std::istringstream in(out);
  std::string line, current;
  while (std::getline(in, line)) {
    if (line == "DONE")
      current.clear();
    else if (line.rfind("FILE ", 0) == 0)
      current = line.substr(5);
    else if (!current.empty())
      m[current].push_back(line);
  }
  return m;
}

// "CAL pw ph pd unit" -> numbers and unit.
struct Cal {
  double pw = 0, ph = 0, pd = 0;
  std::string unit;
};
Cal parse_cal(const std::string& line) {
  Cal c;
  std::istringstream in(line.substr(4));
  in >> c.pw >> c.ph >> c.pd;
  std::getline(in, c.unit);
  if (!c.unit.empty() && c.unit[0] == ' ') c.unit.erase(0, 1);
  return c;
}

}  // namespace

// Every classic-TIFF output opens in ImageJ 1.x with the written pixels in every slice,
// the written shape and the written calibration: x, y, z and unit for ImageJ TIFF, x and y
// (from the resolution tags, in cm) for OME-TIFF, which plain ImageJ reads as a TIFF.
TEST(ImageJOpens, EveryClassicWriterPathExactly) {
  ISO_REQUIRE_CLIENT(imagej_missing());
  TempDir dir;
  const std::vector<Variant> variants = write_variants(dir, /*with_bigtiff=*/false);
  std::string macro = kMacroFunctions;
  for (const Variant& v : variants)
    macro += fmt::format("check(\"{}\", {});\n", v.path, value_scale(v.dtype));
  macro += "print(\"DONE\");\n";
  std::ofstream(dir.file("check.ijm")) << macro;
  const CliResult r = run_imagej_macro(dir.file("check.ijm"), 600);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_NE(r.out.find("\nDONE"), std::string::npos)
      << "ImageJ stopped early:\n"
      << r.out.substr(r.out.size() > 3000 ? r.out.size() - 3000 : 0) << r.err;
  const auto blocks = blocks_by_file(r.out);
  int checked = 0;
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.path);
    const auto it = blocks.find(v.path);
    ASSERT_NE(it, blocks.end()) << "ImageJ printed nothing for it";
    const std::vector<std::string>& got = it->second;
    const Volume vol = interop_volume(v.dtype, v.shape, v.calibrated);
    const std::vector<std::string> slices = expected_slices(vol);
    ASSERT_EQ(got.size(), 2 + slices.size()) << fmt::format("{}", fmt::join(got, "\n"));
    EXPECT_EQ(got[0], fmt::format("DIM {} {} 1 {} 1 {}", v.shape.x, v.shape.y, v.shape.z,
                                  dtype_size(v.dtype) * 8));
    const Cal cal = parse_cal(got[1]);
    if (!v.calibrated) {
      EXPECT_EQ(cal.unit, "pixels") << got[1];
      EXPECT_EQ(cal.pw, 1.0);
      EXPECT_EQ(cal.pd, 1.0);
    } else if (v.ome()) {
      // Plain ImageJ reads no OME-XML: x and y come from X/YResolution, in centimetres,
      // which ImageJ shows in µm. libtiff (compressed files) holds them as float32.
      const double rel = v.opts.compression == WriteOptions::None ? 2e-9 : 1e-7;
      EXPECT_EQ(cal.unit, "\xC2\xB5m") << got[1];
      EXPECT_NEAR(cal.pw, v.voxel.x, rel * v.voxel.x) << got[1];
      EXPECT_NEAR(cal.ph, v.voxel.y, rel * v.voxel.y) << got[1];
    } else {
      EXPECT_EQ(cal.unit, "microns") << got[1];
      // z (spacing=) is a decimal in the description: exact to the printed digits.
      const double rel = v.opts.compression == WriteOptions::None ? 2e-9 : 1e-7;
      EXPECT_NEAR(cal.pw, v.voxel.x, rel * v.voxel.x) << got[1];
      EXPECT_NEAR(cal.ph, v.voxel.y, rel * v.voxel.y) << got[1];
      EXPECT_NEAR(cal.pd, v.voxel.z, 2e-9 * v.voxel.z) << got[1];
    }
    for (size_t s = 0; s < slices.size(); ++s)
      EXPECT_EQ(got[2 + s], slices[s]) << "slice " << s + 1;
    ++checked;
  }
  std::printf("ImageJ %s opened %d isoprompt outputs exactly\n", imagej_version().c_str(), checked);
}

// Every output, BigTIFF included, reads in tifffile bit-exactly with the right series
// shape, page count (layout), container and calibration (ImageJ spacing/unit and
// resolution; OME PhysicalSize* and resolution in cm).
TEST(TifffileReads, EveryWriterPathExactly) {
  ISO_REQUIRE_CLIENT(tifffile_missing());
  TempDir dir;
  const std::vector<Variant> variants = write_variants(dir, /*with_bigtiff=*/true);
  std::string manifest;
  for (const Variant& v : variants) {
    const bool large =
        v.opts.large_stack_layout && !v.ome() && v.opts.compression == WriteOptions::None;
    manifest += manifest_line(v, large ? "large" : "ifds");
  }
  std::ofstream(dir.file("manifest.tsv")) << manifest;
  const CliResult r =
      run_tifffile_script(std::string(ISO_SOURCE_DIR) + "/tests/interop/tifffile_check.py",
                          {dir.file("manifest.tsv")}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(fmt::format("checked {} files, 0 failures", variants.size())),
            std::string::npos)
      << r.out << r.err;
  std::printf("tifffile %s read %zu isoprompt outputs exactly\n", tifffile_version().c_str(),
              variants.size());
}

// ---- the other direction: files ImageJ saves ----------------------------------------------

namespace {

// The value ImageJ's macro puts at (x, y) of slice s (1-based), channel c, frame t; the
// same formula in the macro below. Floats are multiples of 1/8: exact in the macro.
double imagej_value(int bits, int64_t x, int64_t y, int64_t s, int64_t c = 1, int64_t t = 1) {
  const int64_t k = x * 3 + y * 5 + s * 7 + c * 11 + t * 13;
  if (bits == 8) return double(k % 256);
  if (bits == 16) return double((k * 997) % 65536);
  return double(k * 8 - 300) / 8.0 - double(y);
}

const char* kImageJSaveMacro = R"(
setBatchMode(true);
dir = getArgument();
function value(bits, x, y, s, c, t) {
  k = x * 3 + y * 5 + s * 7 + c * 11 + t * 13;
  if (bits == 8) return k % 256;
  if (bits == 16) return (k * 997) % 65536;
  return (k * 8 - 300) / 8 - y;
}
function fill(bits) {
  getDimensions(w, h, nc, nz, nt);
  for (t = 1; t <= nt; t++) for (c = 1; c <= nc; c++) for (z = 1; z <= nz; z++) {
    Stack.setPosition(c, z, t);
    for (y = 0; y < h; y++) for (x = 0; x < w; x++) setPixel(x, y, value(bits, x, y, z, c, t));
  }
}
// pw, ph, pd are strings: the macro language would print numbers with 4 decimals.
function stack(name, type, bits, w, h, c, z, t, unit, pw, ph, pd) {
  newImage(name, type + " black", w, h, c, z, t);
  fill(bits);
  run("Properties...", "channels=" + c + " slices=" + z + " frames=" + t + " unit=" + unit + " pixel_width=" + pw +
      " pixel_height=" + ph + " voxel_depth=" + pd);
  saveAs("Tiff", dir + "/" + name + ".tif");
  close();
  reopen(name);
}
// What ImageJ itself reads back (its resolution rationals keep about 7 digits).
function reopen(name) {
  open(dir + "/" + name + ".tif");
  getVoxelSize(pw, ph, pd, unit);
  print("CAL " + name + " " + d2s(pw, -9) + " " + d2s(ph, -9) + " " + d2s(pd, -9) + " " + unit);
  close();
}
stack("u8", "8-bit", 8, 17, 11, 1, 4, 1, "um", "0.0338542", "0.033855", "0.15");
stack("u16", "16-bit", 16, 16, 16, 1, 2, 1, "micron", "0.1", "0.1", "0.5");
stack("f32", "32-bit", 32, 13, 9, 1, 5, 1, "nm", "33.8542", "33.855", "150");
stack("one", "16-bit", 16, 12, 10, 1, 1, 1, "um", "0.2", "0.2", "1");
stack("hyper", "16-bit", 16, 9, 7, 2, 3, 2, "um", "0.25", "0.25", "1.5");
// A virtual stack saved again: ImageJ writes it plane by plane from the file.
run("TIFF Virtual Stack...", "open=[" + dir + "/u8.tif]");
saveAs("Tiff", dir + "/virtual.tif");
close();
reopen("virtual");
print("SAVED");
)";

// ImageJ's own reading of a file it saved: "CAL name pw ph pd unit".
struct ImageJCal {
  VoxelSize micron;  // z, y, x converted to micrometres
  std::string unit;
};
std::map<std::string, ImageJCal> imagej_cals(const std::string& out) {
  std::map<std::string, ImageJCal> m;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CAL ", 0) != 0) continue;
    std::istringstream f(line.substr(4));
    std::string name;
    ImageJCal c;
    f >> name >> c.micron.x >> c.micron.y >> c.micron.z >> c.unit;
    const double k = c.unit == "nm" ? 1e-3 : 1.0;
    c.micron = {c.micron.z * k, c.micron.y * k, c.micron.x * k};
    m[name] = c;
  }
  return m;
}

// Reads `path` and checks it against the macro's formula, and its voxel size against
// ImageJ's own reading of the file (to 1e-6: both round the float resolution rationals)
// and, for z (a decimal in the description), against `z_step` exactly.
void expect_imagej_stack(const std::string& path, int bits, Shape3 s, const ImageJCal& ij,
                         double z_step, int64_t c = 1, int64_t t = 1, int64_t nc = 1,
                         int64_t nt = 1) {
  SCOPED_TRACE(path);
  ReadOptions ro;
  ro.allow_2d = true;
  if (nc > 1) ro.channel = static_cast<int>(c - 1);
  if (nt > 1) ro.time = static_cast<int>(t - 1);
  TiffFileInfo fi;
  const Volume v = read_volume(path, ro, &fi);
  ASSERT_EQ(v.shape(), s);
  EXPECT_EQ(fi.flavor, "ImageJ");
  EXPECT_EQ(fi.channels, nc);
  EXPECT_EQ(fi.times, nt);
  EXPECT_EQ(v.unit(), "micron");
  EXPECT_NEAR(v.voxel_size().x, ij.micron.x, 1e-6 * ij.micron.x);
  EXPECT_NEAR(v.voxel_size().y, ij.micron.y, 1e-6 * ij.micron.y);
  EXPECT_NEAR(v.voxel_size().z, ij.micron.z, 1e-6 * ij.micron.z);
  if (s.z > 1) {
    EXPECT_EQ(v.voxel_size().z, z_step);
  }
  EXPECT_EQ(dtype_size(v.dtype()) * 8, size_t(bits));
  int64_t bad = 0;
  for (int64_t z = 0; z < s.z; ++z)
    for (int64_t y = 0; y < s.y; ++y)
      for (int64_t x = 0; x < s.x; ++x) {
        const double want = imagej_value(bits, x, y, z + 1, c, t);
        const double got = bits == 8    ? v.at<uint8_t>(z, y, x)
                           : bits == 16 ? v.at<uint16_t>(z, y, x)
                                        : v.at<float>(z, y, x);
        bad += got != want;
      }
  EXPECT_EQ(bad, 0) << "voxels differ from what ImageJ wrote";
}

}  // namespace

// Stacks, a 2D image, a channels x slices x frames hyperstack and a re-saved virtual stack,
// all saved by ImageJ itself, read exactly: pixels, shape, channel/time selection, voxel
// size (ImageJ's µm, micron and nm units).
TEST(ImageJSaved, FilesReadExactlyByIsoprompt) {
  ISO_REQUIRE_CLIENT(imagej_missing());
  TempDir dir;
  std::ofstream(dir.file("save.ijm")) << kImageJSaveMacro;
  // -batch passes the argument after the macro path to getArgument().
  const CliResult r = run_imagej_macro(dir.file("save.ijm"), 300, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_NE(r.out.find("SAVED"), std::string::npos) << r.out << r.err;
  auto cals = imagej_cals(r.out);
  for (const char* name : {"u8", "u16", "f32", "one", "hyper", "virtual"})
    ASSERT_TRUE(cals.count(name)) << "ImageJ did not reopen " << name << "\n" << r.out;
  expect_imagej_stack(dir.file("u8.tif"), 8, {4, 11, 17}, cals["u8"], 0.15);
  expect_imagej_stack(dir.file("u16.tif"), 16, {2, 16, 16}, cals["u16"], 0.5);
  expect_imagej_stack(dir.file("f32.tif"), 32, {5, 9, 13}, cals["f32"], 0.15);
  expect_imagej_stack(dir.file("one.tif"), 16, {1, 10, 12}, cals["one"], 1);
  for (int64_t c = 1; c <= 2; ++c)
    for (int64_t t = 1; t <= 2; ++t)
      expect_imagej_stack(dir.file("hyper.tif"), 16, {3, 7, 9}, cals["hyper"], 1.5, c, t, 2, 2);
  expect_imagej_stack(dir.file("virtual.tif"), 8, {4, 11, 17}, cals["virtual"], 0.15);
}

// Files napari's writer (tifffile) saves: with axes='ZYX' a calibrated z stack reads
// exactly; without axes its channels=N gets a message that says what happened and how to
// save a z stack.
TEST(TifffileSaved, ZStacksReadAndStacksWithoutAxesAreExplained) {
  ISO_REQUIRE_CLIENT(tifffile_missing());
  TempDir dir;
  std::ofstream(dir.file("save.py")) << R"(import sys
import numpy as np
import tifffile
d = sys.argv[1]
v = (np.arange(5 * 6 * 7, dtype=np.uint32) * 2654435761 % 65536).astype(np.uint16).reshape(5, 6, 7)
v.tofile(d + '/v.raw')
tifffile.imwrite(d + '/noaxes.tif', v, imagej=True)
tifffile.imwrite(d + '/zyx.tif', v, imagej=True, resolution=(1 / 0.125, 1 / 0.25),
                 metadata={'axes': 'ZYX', 'spacing': 0.75, 'unit': 'um'})
print('SAVED')
)";
  const CliResult r = run_tifffile_script(dir.file("save.py"), {dir.path()}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Volume want({5, 6, 7}, DType::U16);
  {
    std::ifstream raw(dir.file("v.raw"), std::ios::binary);
    raw.read(static_cast<char*>(want.raw()), static_cast<std::streamsize>(want.size_bytes()));
  }
  const Volume zyx = read_volume(dir.file("zyx.tif"));
  EXPECT_EQ(std::memcmp(zyx.raw(), want.raw(), want.size_bytes()), 0);
  EXPECT_EQ(zyx.voxel_size(), (VoxelSize{0.75, 0.25, 0.125}));
  EXPECT_EQ(zyx.unit(), "micron");
  const CliResult info = run_cli({"info", dir.file("noaxes.tif")});
  EXPECT_EQ(info.exit_code, 2);
  EXPECT_NE(
      info.err.find(
          "has 5 channels and one z plane, which is how tifffile.imwrite(file, array, imagej=True) "
          "saves a 3D array without axes: if they are z planes, save it with "
          "metadata={'axes': 'ZYX'}"),
      std::string::npos)
      << info.err;
}

// restore's provenance notes (method, held-out scores, fallback) as napari's reader shows
// them: imagej_metadata keys of an ImageJ TIFF, the "isoprompt" MapAnnotation of an OME-TIFF.
TEST(TifffileReads, ProvenanceNotes) {
  ISO_REQUIRE_CLIENT(tifffile_missing());
  TempDir dir;
  WriteOptions wo;
  wo.notes = {{"method", "interp"}, {"fallback", "the tuned model was not better (1 = 2)"}};
  const Volume v = interop_volume(DType::U16, {3, 8, 8}, true);
  write_volume(dir.file("n.tif"), v, wo);
  write_volume(dir.file("n.ome.tif"), v, wo);
  std::ofstream(dir.file("notes.py")) << R"(import sys
import xml.etree.ElementTree as ET
import tifffile
d = sys.argv[1]
with tifffile.TiffFile(d + '/n.tif') as t:
    m = t.imagej_metadata
    print('IJ', m['isoprompt.method'], '|', m['isoprompt.fallback'], '|', m['images'])
with tifffile.TiffFile(d + '/n.ome.tif') as t:
    root = ET.fromstring(t.ome_metadata)
    ns = '{http://www.openmicroscopy.org/Schemas/OME/2016-06}'
    for a in root.iter(ns + 'MapAnnotation'):
        print('OME', a.get('Namespace'), '|', ' | '.join(m.get('K') + '=' + m.text for m in a.iter(ns + 'M')))
    print('SHAPE', t.series[0].shape)
)";
  const CliResult r = run_tifffile_script(dir.file("notes.py"), {dir.path()}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // '=' is written as ':' (tifffile skips a description line with two '=').
  EXPECT_NE(r.out.find("IJ interp | the tuned model was not better (1 : 2) | 3"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("OME isoprompt | method=interp | fallback=the tuned model was not better (1 : 2)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("SHAPE (3, 8, 8)"), std::string::npos) << r.out;
  for (const char* name : {"n.tif", "n.ome.tif"}) {
    TiffFileInfo info;
    read_volume(dir.file(name), {}, &info);
    EXPECT_EQ(info.notes, (FileNotes{{"method", "interp"},
                                     {"fallback", "the tuned model was not better (1 : 2)"}}))
        << name;
  }
}
