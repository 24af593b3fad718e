// Issue 14: crafted and unlucky inputs through the built binary. Each case asserts the exit
// code (2: the input is at fault) and the one-line message; none may crash, hang, or exit 0
// with garbage. Cases are batched per command to keep binary starts (~1.5 s each) few.
#include <caffe2/serialize/inline_container.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "isoprompt/checkpoint.h"
#include "isoprompt/io.h"
#include "isoprompt/model.h"
#include "test_util.h"
#include "tiff_fixtures.h"

using namespace isoprompt;
using namespace isoprompt::test;
using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

const std::string kDefaultModel =
    std::string(ISO_SOURCE_DIR) + "/models/isoprompt-default.safetensors";

// `pages` uint8 pages of 8x8 with `desc` on the first.
std::string tiff_with_description(const TempDir& dir, const std::string& name, int pages,
                                  const std::string& desc) {
  std::vector<RawPage> p(static_cast<size_t>(pages),
                         make_page<uint8_t>(8, 8, [](uint32_t y, uint32_t x) { return y + x; }));
  p[0].description = desc;
  write_raw_tiff(dir.file(name), p);
  return dir.file(name);
}

// A 4-page TIFF whose last IFD points back to the second.
std::string tiff_with_ifd_loop(const TempDir& dir) {
  const std::string path = dir.file("loop.tif");
  write_raw_tiff(path, std::vector<RawPage>(
                           4, make_page<uint8_t>(8, 8, [](uint32_t, uint32_t) { return 1; })));
  std::string b = read_bytes(path);
  std::vector<uint32_t> ifds;
  uint32_t off;
  std::memcpy(&off, &b[4], 4);
  while (off != 0 && ifds.size() < 4) {
    ifds.push_back(off);
    uint16_t n;
    std::memcpy(&n, &b[off], 2);
    std::memcpy(&off, &b[off + 2 + 12 * size_t(n)], 4);
  }
  uint16_t n;
  std::memcpy(&n, &b[ifds[3]], 2);
  std::memcpy(&b[ifds[3] + 2 + 12 * size_t(n)], &ifds[1], 4);
  write_bytes(path, b);
  return path;
}

// A torch.save-style zip archive with `pickle` as data.pkl and one 4-float storage "0".
std::string torch_zip(const TempDir& dir, const std::string& name, const std::string& pickle) {
  const std::string path = dir.file(name);
  caffe2::serialize::PyTorchStreamWriter w(path);
  w.writeRecord("data.pkl", pickle.data(), pickle.size());
  const float storage[4] = {1, 2, 3, 4};
  w.writeRecord("data/0", storage, sizeof storage);
  w.writeEndOfFile();
  return path;
}

std::string binunicode(const std::string& s) {
  std::string out = "X";
  const uint32_t n = static_cast<uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + s;
}
std::string binint(int32_t v) {
  return "J" + std::string(reinterpret_cast<const char*>(&v), 4);
}
std::string long8(int64_t v) {
  return "\x8a\x08"s + std::string(reinterpret_cast<const char*>(&v), 8);
}

// {'w': _rebuild_tensor_v2(storage '0' of 4 floats, offset, (size,), (stride,))}
std::string tensor_pickle(const std::string& offset, const std::string& size,
                          const std::string& stride) {
  return std::string("\x80\x02}") + binunicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + "(" +
         binunicode("storage") + "ctorch\nFloatStorage\n" + binunicode("0") + binunicode("cpu") +
         "K\x04tQ" + offset + "(" + size + "t(" + stride + "ttRs.";
}

void write_backbone_variant(
    const std::string& path,
    const std::function<void(TensorList&, std::map<std::string, std::string>&)>& edit) {
  std::map<std::string, std::string> md;
  std::vector<std::string> order;
  const TensorMap t = read_safetensors(kDefaultModel, &md, &order);
  TensorList l;
  for (const auto& k : order) l.emplace_back(k, t.at(k).clone());
  edit(l, md);
  write_safetensors(path, l, md);
}

// A 3-plane float32 stack 6x5, calibrated 0.5 x 0.1 x 0.1 um, with the given values.
std::string float_stack(const TempDir& dir, const std::string& name,
                        const std::function<float(int, uint32_t, uint32_t)>& f) {
  std::vector<RawPage> pages;
  for (int z = 0; z < 3; ++z) {
    RawPage p = make_page<float>(16, 16, [&](uint32_t y, uint32_t x) { return f(z, y, x); });
    p.description = "ImageJ=1.53t\nimages=3\nslices=3\nunit=micron\nspacing=0.4\nloop=false\n";
    p.xres = 10;
    pages.push_back(p);
  }
  write_raw_tiff(dir.file(name), pages);
  return dir.file(name);
}

void expect_refused(const CliResult& r, const std::string& message_start) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(error_line(r.err), StartsWith(message_start)) << r.err;
}

}  // namespace

// Header arithmetic: counts whose products overflow int64 (before: SIGFPE, SIGSEGV and
// heap writes), a plane count no file of 212 bytes can hold (before: exit 1), an IFD loop
// (before: exit 0 with fewer planes), a LERC/zstd header claiming gigabytes in kilobytes.
TEST(Hardening, CraftedTiffHeadersExitTwo) {
  TempDir dir, out;
  const std::string ij_ct = tiff_with_description(
      dir, "ij_ct.tif", 2, "ImageJ=1.11a\nchannels=4294967296\nframes=4294967296\n");
  const std::string ij_cs = tiff_with_description(
      dir, "ij_cs.tif", 2, "ImageJ=1.11a\nchannels=4294967296\nslices=4294967296\n");
  const std::string ome = tiff_with_description(
      dir, "ome.tif", 2,
      "<?xml version=\"1.0\"?><OME><Image><Pixels DimensionOrder=\"XYZCT\" SizeX=\"8\" SizeY=\"8\" "
      "SizeZ=\"4294967296\" SizeC=\"4294967296\" SizeT=\"1\" Type=\"uint8\"/></Image></OME>");
  const std::string ome_first = tiff_with_description(
      dir, "ome_first.tif", 2,
      "<OME><Image><Pixels DimensionOrder=\"XYZCT\" SizeX=\"8\" SizeY=\"8\" SizeZ=\"2\" "
      "Type=\"uint8\">"
      "<TiffData FirstZ=\"-9223372036854775807\" IFD=\"0\"/></Pixels></Image></OME>");
  const std::string tf = tiff_with_description(
      dir, "tifffile.tif", 1, "{\"shape\": [7, 7905747460161236407, 1, 1], \"axes\": \"ZCYX\"}");
  const std::string many =
      tiff_with_description(dir, "many.tif", 1, "ImageJ=1.11a\nimages=1000000000000000\n");
  const std::string loop = tiff_with_ifd_loop(dir);
  const uint16_t codec = TIFFIsCODECConfigured(COMPRESSION_LERC) ? uint16_t(COMPRESSION_LERC)
                                                                 : uint16_t(COMPRESSION_ZSTD);
  const std::string claim = dir.file("claim.tif");
  {
    std::vector<RawPage> p(2, make_page<uint8_t>(16, 16, [](uint32_t, uint32_t) { return 3; }));
    for (auto& q : p) q.compression = codec;
    write_raw_tiff(claim, p);
    patch_first_ifd_long(claim, TIFFTAG_IMAGEWIDTH, 46000);
    patch_first_ifd_long(claim, TIFFTAG_IMAGELENGTH, 46000);
    patch_first_ifd_long(claim, TIFFTAG_ROWSPERSTRIP, 46000);
  }
  const struct {
    std::string in, message;
  } cases[] = {
      {ij_ct, "bad ImageJ metadata in " + ij_ct +
                  ": channels=4294967296 x slices=1 x frames=4294967296 does not equal images=2"},
      {ij_cs, "bad ImageJ metadata in " + ij_cs +
                  ": channels=4294967296 x slices=4294967296 x frames=1 does not equal images=2"},
      {ome, "bad OME-XML in " + ome +
                ": SizeZ x SizeC x SizeT = 4294967296 x 4294967296 x 1 planes is implausible"},
      {ome_first,
       "bad OME-XML in " + ome_first +
           ": TiffData FirstZ=-9223372036854775807 FirstC=0 FirstT=0 is outside SizeZ=2"},
      {tf, tf + " is a 2D image (8x8 pixels, one plane): a 3D stack (several z planes) is needed"},
      {many, "truncated TIFF file " + many +
                 ": its ImageJ metadata says images=1000000000000000 stored after page 0, "
                 "which needs 64000000000000008 bytes but the file has only "},
      {loop,
       "corrupt TIFF file " + loop + ": its chain of page directories loops back after 4 pages"},
      {claim,
       "implausible TIFF header in " + claim + ": 46000x46000 pixels x 2 pages of uint8 (3.9 GiB)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    // Refused from the header alone (the messages say so), before any plane is decoded or
    // allocated: no wall-clock check here, which a loaded or sanitized run would fail.
    const CliResult r = run_cli({"convert", c.in, out.file("o.tif")});
    expect_refused(r, c.message);
    EXPECT_EQ(files_in(out.path()), std::vector<std::string>{});
  }
}

// Model files: pickle structures that overflowed the stack, tensor views with negative or
// 2^62 sizes, safetensors shapes whose size overflows, aliased byte ranges, an absurd
// configuration, a 30-digit layer index and NaN weights: each exit 2 with its reason.
TEST(Hardening, CraftedModelFilesExitTwo) {
  TempDir dir;
  const std::string self =
      torch_zip(dir, "self.pt", "\x80\x02}q\x00"s + binunicode("a") + "h\x00s."s);
  std::string deep = "\x80\x02";
  const int depth = 2000000;
  deep.append(depth, ']');
  deep.append(depth - 1, 'a');
  deep += '.';
  const std::string nested = torch_zip(dir, "nested.pt", deep);
  const std::string neg_offset =
      torch_zip(dir, "neg_offset.pt", tensor_pickle(binint(-1), binint(2), binint(1)));
  const std::string neg_size =
      torch_zip(dir, "neg_size.pt", tensor_pickle(binint(0), binint(-3), binint(1)));
  const std::string neg_stride =
      torch_zip(dir, "neg_stride.pt", tensor_pickle(binint(0), binint(2), binint(-1)));
  const std::string huge =
      torch_zip(dir, "huge.pt", tensor_pickle(binint(0), long8(int64_t(1) << 62), binint(4)));

  const std::string big_shape = dir.file("big_shape.safetensors");
  {
    const std::string header =
        R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})";
    std::string b(8, '\0');
    const uint64_t n = header.size();
    std::memcpy(&b[0], &n, 8);
    write_bytes(big_shape, b + header);
  }
  const std::string shared = dir.file("shared.safetensors");
  {
    const std::string header =
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string b(8, '\0');
    const uint64_t n = header.size();
    std::memcpy(&b[0], &n, 8);
    write_bytes(shared, b + header + std::string(8, '\0'));
  }
  const std::string wide = dir.file("wide.safetensors");
  write_backbone_variant(wide, [](TensorList&, std::map<std::string, std::string>& md) {
    auto j = nlohmann::json::parse(md.at("config"));
    j["embed_dim"] = int64_t(120000000000);  // divisible by every head count: only the size is wrong
    md["config"] = j.dump();
  });
  const std::string index = dir.file("index.safetensors");
  write_backbone_variant(index, [](TensorList& l, std::map<std::string, std::string>& md) {
    md.erase("config");
    l.emplace_back("layers.123456789012345678901234567890.residual_group.blocks.0.norm1.weight",
                   at::zeros({2}));
  });
  const std::string nan = dir.file("nan.safetensors");
  std::string nan_tensor;
  write_backbone_variant(nan, [&](TensorList& l, std::map<std::string, std::string>&) {
    nan_tensor = l[3].first;
    l[3].second.view({-1})[1] = std::numeric_limits<float>::quiet_NaN();
  });

  const struct {
    std::string in, message;
  } cases[] = {
      {self, self + " is not a state_dict: the dict at 'a' contains itself"},
      {nested, nested + " does not hold a state_dict (top-level object is not a dict)"},
      {neg_offset,
       neg_offset +
           ": cannot read the pickle in this checkpoint: tensor storage offset -1 is negative"},
      {neg_size, neg_size + ": cannot read the pickle in this checkpoint: tensor size is not a "
                            "list of non-negative"},
      {neg_stride,
       neg_stride +
           ": cannot read the pickle in this checkpoint: tensor stride is not a list of non-neg"},
      {huge, huge + ": cannot read the pickle in this checkpoint: tensor view "
                    "[4611686018427387904] (stride [4], "
                    "offset 0) exceeds its storage of 4 elements"},
      {big_shape,
       big_shape +
           ": tensor 'w' has an implausible shape [4294967296, 4294967296] (its size overflows)"},
      {shared, shared + ": tensors 'a' and 'b' overlap in the data (bytes 0-8 and 0-8)"},
      {wide, wide + ": invalid model configuration"},
      {index,
       index + ": tensor "
               "'layers.123456789012345678901234567890.residual_group.blocks.0.norm1.weight' has "
               "an implausible layer or block index"},
      {nan, nan + ": tensor '" + nan_tensor + "' has 1 NaN/Inf values (first at element 1 of "},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    expect_refused(run_cli({"model", "info", c.in}), c.message);
  }
  // The absurd width is named.
  EXPECT_THAT(error_line(run_cli({"model", "info", wide}).err),
              HasSubstr("embed_dim must be <= 8192"));
}

// Flags with sane ranges, and outputs that would overwrite one of the command's inputs.
TEST(Hardening, FlagRangesAndOutputsOverInputs) {
  TempDir dir;
  const std::string in =
      float_stack(dir, "in.tif", [](int z, uint32_t y, uint32_t x) { return float(z + y + x); });
  const std::string precious = dir.file("precious.safetensors");
  write_bytes(precious, "precious");

  CliResult r = run_cli({"--threads", "100000", "info", in});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--threads: Value 100000 not in range 0 to 1024"));
  r = run_cli({"tune", in, "-o", dir.file("p.safetensors"), "--seed", "-1"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err,
              HasSubstr("--seed: must be a whole number from 0 to 18446744073709551615, got '-1'"));
  if (!torch::cuda::is_available()) {
    r = run_cli(
        {"--device", "cuda", "predict", in, "-o", dir.file("o.tif"), "--mode", "zero-shot"});
    expect_refused(r, "--device cuda: no CUDA device is available");
  }
  const std::string same = "output path is the same file as the input: " + precious;
  expect_refused(run_cli({"predict", in, "-o", precious, "--prompt", precious}), same);
  expect_refused(
      run_cli({"predict", in, "-o", precious, "--backbone", precious, "--mode", "zero-shot"}),
      same);
  expect_refused(run_cli({"tune", in, "-o", precious, "--backbone", precious}), same);
  expect_refused(run_cli({"restore", in, "-o", dir.file("o.tif"), "--prompt-out", precious,
                          "--resume", precious}),
                 same);
  expect_refused(run_cli({"simulate", in, "-o", precious, "--factor", "2", "--model", "psf",
                          "--psf-file", precious}),
                 same);
  EXPECT_EQ(read_text(precious), "precious");
}

// NaN/Inf: refused by default with the count and first position; replaced when asked, and
// said so; finite values near the float32 limit give a finite result.
TEST(Hardening, NanPolicy) {
  TempDir dir;
  const std::string bad = float_stack(dir, "bad.tif", [](int z, uint32_t y, uint32_t x) {
    if (z == 1 && y == 2 && x == 3) return std::numeric_limits<float>::quiet_NaN();
    if (z == 2 && y == 0 && x == 0) return std::numeric_limits<float>::infinity();
    if (z == 2 && y == 5 && x == 5) return std::numeric_limits<float>::quiet_NaN();
    return float(100 + z * 10 + y + x);
  });
  const std::string refused =
      bad + " contains 2 NaN and 1 Inf voxels (the first at z 1, y 2, x 3): refused";
  expect_refused(run_cli({"baseline", bad, "-o", dir.file("b.tif"), "--factor", "2"}), refused);
  expect_refused(run_cli({"tune", bad, "-o", dir.file("p.safetensors"), "--steps", "1"}), refused);
  expect_refused(run_cli({"eval", "--gt", bad, "--pred", bad}), refused);
  EXPECT_FALSE(fs::exists(dir.file("b.tif")));

  CliResult r =
      run_cli({"baseline", bad, "-o", dir.file("b.tif"), "--factor", "2", "--nan", "replace"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(
      r.err,
      HasSubstr(bad +
                ": replaced 2 NaN and 1 Inf voxels (the first at z 1, y 2, x 3) by the median "
                "of their finite 3x3x3 neighbours"));
  const Volume b = read_volume(dir.file("b.tif"));
  for (int64_t i = 0; i < b.numel(); ++i) ASSERT_TRUE(std::isfinite(b.data<float>()[i])) << i;

  const std::string extreme = float_stack(dir, "extreme.tif", [](int z, uint32_t y, uint32_t x) {
    return (z + y + x) % 2 ? 3e38f : -3e38f;
  });
  r = run_cli(
      {"predict", extreme, "-o", dir.file("e.tif"), "--mode", "zero-shot", "--factor", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume e = read_volume(dir.file("e.tif"));
  int64_t non_finite = 0;
  for (int64_t i = 0; i < e.numel(); ++i) non_finite += !std::isfinite(e.data<float>()[i]);
  EXPECT_EQ(non_finite, 0);
}

// A temporary output left by a killed process is removed by the next writer of that output.
TEST(Hardening, StaleTemporaryOfADeadProcessIsRemoved) {
  TempDir dir;
  const std::string in =
      float_stack(dir, "in.tif", [](int z, uint32_t y, uint32_t x) { return float(z + y + x); });
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // now a pid of no process
  const std::string stale = dir.file(".out.tif.tmp-" + std::to_string(child));
  const std::string alive = dir.file(".out.tif.tmp-" + std::to_string(getpid()));
  write_bytes(stale, "half written");
  write_bytes(alive, "still being written");
  const CliResult r = run_cli({"convert", in, dir.file("out.tif")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(alive));  // its process (this test) still runs
  EXPECT_THAT(r.err, HasSubstr("removed " + stale + ", a temporary file left by process " +
                               std::to_string(child) + " that no longer runs"));
}
