// `isoprompt predict` and `isoprompt restore`: outputs, geometry, modes, errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/model.h"
#include "isoprompt/ops.h"
#include "isoprompt/pretrain.h"
#include "isoprompt/tensor.h"
#include "isoprompt/train.h"
#include "test_util.h"
#include "tiny_models.h"

using namespace isoprompt;
using isoprompt::test::run_cli;
using isoprompt::test::TempDir;

namespace {

// A smooth random uint16 volume (blurred noise), calibrated.
Volume smooth_volume(Shape3 s, VoxelSize vs, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor t = at::rand({1, 1, s.z, s.y, s.x});
  t = at::avg_pool3d(t, {3, 3, 3}, {1, 1, 1}, {1, 1, 1});
  VolumeTensor vt;
  vt.data = (t.squeeze() * 20000 + 1000).floor();
  vt.voxel = vs;
  return to_volume(vt, DType::U16);
}

// A tiny random SwinIR saved as a model file.
std::string tiny_backbone(const TempDir& d, const std::string& name, uint64_t seed) {
  at::manual_seed(seed);
  SwinIR net(test::tiny_swin_config());
  const std::string path = d.file(name);
  save_backbone(path, net);
  return path;
}

bool same_voxels(const Volume& a, const Volume& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

}  // namespace

// --mode interp writes ops' cubic (B-spline, the default of --interp auto without a backbone)
// upsampling with voxel z = z / K exactly, in the input dtype.
TEST(PredictCli, InterpModeGeometryAndValues) {
  TempDir d;
  const Volume v = smooth_volume({6, 20, 16}, {2.2, 0.5, 0.5}, 1);
  write_volume(d.file("in.tif"), v);
  const auto r =
      run_cli({"predict", d.file("in.tif"), "-o", d.file("out.tif"), "--mode", "interp"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mode interp, factor 4.4"), std::string::npos) << r.out;
  const Volume out = read_volume(d.file("out.tif"));
  EXPECT_EQ(out.shape(), (Shape3{26, 20, 16}));  // round(6 * 4.4) = 26
  EXPECT_EQ(out.dtype(), DType::U16);
  EXPECT_NEAR(out.voxel_size().z, 0.5, 1e-12);
  EXPECT_EQ(out.voxel_size().x, 0.5);
  const Volume ref =
      denormalize(upsample(v, 0, 2.2 / 0.5, Interp::BSpline3), Normalizer{0, 1}, DType::U16);
  EXPECT_TRUE(same_voxels(out, ref));
}

// z-alignment: simulate --factor 4, then `predict --mode interp` (default cubic) scores exactly
// like `baseline --method cubic` (same voxels, same metrics).
TEST(PredictCli, InterpModeScoresExactlyLikeBaseline) {
  TempDir d;
  write_volume(d.file("gt.tif"), smooth_volume({32, 24, 20}, {0.5, 0.5, 0.5}, 2));
  auto r = run_cli({"simulate", d.file("gt.tif"), "-o", d.file("lo.tif"), "--factor", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"baseline", d.file("lo.tif"), "-o", d.file("base.tif"), "--method", "cubic"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"predict", d.file("lo.tif"), "-o", d.file("pred.tif"), "--mode", "interp"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume base = read_volume(d.file("base.tif")), pred = read_volume(d.file("pred.tif"));
  EXPECT_TRUE(same_voxels(base, pred));
  EXPECT_EQ(base.voxel_size(), pred.voxel_size());
  const auto eb =
      run_cli({"eval", "--gt", d.file("gt.tif"), "--pred", d.file("base.tif"), "--json"});
  const auto ep =
      run_cli({"eval", "--gt", d.file("gt.tif"), "--pred", d.file("pred.tif"), "--json"});
  ASSERT_EQ(eb.exit_code, 0) << eb.err;
  ASSERT_EQ(ep.exit_code, 0) << ep.err;
  nlohmann::json jb = nlohmann::json::parse(eb.out), jp = nlohmann::json::parse(ep.out);
  ASSERT_TRUE(jb.contains("psnr") || jb.dump().find("psnr") != std::string::npos) << eb.out;
  jb.erase("pred");
  jp.erase("pred");
  EXPECT_EQ(jb, jp);
}

// zero-shot with a model file: output shape, dtype and voxel size; --dtype float32 works.
TEST(PredictCli, ZeroShotWithTinyBackbone) {
  TempDir d;
  const std::string bb = tiny_backbone(d, "tiny.safetensors", 3);
  write_volume(d.file("in.tif"), smooth_volume({5, 18, 14}, {1.5, 0.5, 0.5}, 4));
  const auto r = run_cli({"predict", d.file("in.tif"), "-o", d.file("out.tif"), "--mode",
                          "zero-shot", "--backbone", bb, "--tile", "16", "--overlap", "4",
                          "--dtype", "float32", "--fuse", "geometric"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume out = read_volume(d.file("out.tif"));
  EXPECT_EQ(out.shape(), (Shape3{15, 18, 14}));
  EXPECT_EQ(out.dtype(), DType::F32);
  EXPECT_NEAR(out.voxel_size().z, 0.5, 1e-12);
  EXPECT_TRUE(at::isfinite(to_float_tensor(out)).all().item<bool>());
}

// restore tunes a prompt (kept with --prompt-out) and predict reuses it; the prompt is
// refused for another backbone and for --mode full.
TEST(RestoreCli, TuneThenPredictWithThePrompt) {
  TempDir d;
  const std::string bb = tiny_backbone(d, "tiny.safetensors", 5);
  write_volume(d.file("in.tif"), smooth_volume({8, 40, 40}, {2.0, 0.5, 0.5}, 6));
  // --fallback none: this random backbone may well lose to interpolation.
  auto r = run_cli({"restore", d.file("in.tif"), "-o", d.file("r.tif"), "--backbone", bb,
                    "--prompt-out", d.file("p.safetensors"), "--steps", "2", "--train-batch", "2",
                    "--crop", "32", "--fallback", "none"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume restored = read_volume(d.file("r.tif"));
  EXPECT_EQ(restored.shape(), (Shape3{32, 40, 40}));
  EXPECT_EQ(restored.dtype(), DType::U16);
  const PromptInfo info = read_prompt_info(d.file("p.safetensors"));
  EXPECT_EQ(info.factor, 4.0);

  r = run_cli({"predict", d.file("in.tif"), "-o", d.file("p.tif"), "--backbone", bb, "--prompt",
               d.file("p.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume predicted = read_volume(d.file("p.tif"));
  ASSERT_EQ(predicted.shape(), restored.shape());
  // Same model, same normalisation: the same result (up to thread-order rounding).
  const double diff =
      (to_float_tensor(predicted) - to_float_tensor(restored)).abs().max().item<double>();
  EXPECT_LE(diff, 1.0);

  const std::string other = tiny_backbone(d, "other.safetensors", 99);
  r = run_cli({"predict", d.file("in.tif"), "-o", d.file("q.tif"), "--backbone", other, "--prompt",
               d.file("p.safetensors")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("was tuned for backbone tiny"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(d.file("q.tif")));
  r = run_cli({"predict", d.file("in.tif"), "-o", d.file("q.tif"), "--backbone", bb, "--prompt",
               d.file("p.safetensors"), "--mode", "full"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("holds a prompt model, not --mode full"), std::string::npos) << r.err;
}

// A model that is not better than interpolation on the stack's own pairs is reported, and
// restore writes the interpolation instead: an identity-initialised backbone returns its
// input exactly, so its validation PSNR equals the interpolation's and the fallback must
// trigger. 8 planes would hold out 1: too few, so the pairs are in-sample unless
// --min-val-planes 1 holds it out; the log and the file say which.
TEST(RestoreCli, FallsBackToInterpolationWhenTheModelIsNotBetter) {
  TempDir d;
  SwinIR net(test::tiny_swin_config());
  identity_init(net);
  save_backbone(d.file("id.safetensors"), net, {{"input_interp", "linear"}});
  write_volume(d.file("in.tif"), smooth_volume({8, 40, 40}, {2.0, 0.5, 0.5}, 6));
  auto r = run_cli({"restore", d.file("in.tif"), "-o", d.file("r.tif"), "--backbone",
                    d.file("id.safetensors"), "--steps", "0", "--crop", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(
      r.err.find(
          "the tuned model is not better than linear interpolation on this stack's in-sample pairs"),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("writing the interpolation instead"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("mode interp"), std::string::npos) << r.out;
  r = run_cli({"baseline", d.file("in.tif"), "-o", d.file("b.tif"), "--method", "linear"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(same_voxels(read_volume(d.file("r.tif")), read_volume(d.file("b.tif"))));
  // The file itself says it is the interpolation, and why.
  r = run_cli({"info", d.file("r.tif")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("method       interp\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fallback     the tuned prompt model was not better than the interpolation "
                       "on in-sample pairs\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("validation_pairs in-sample\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("interp_psnr_db "), std::string::npos) << r.out;
  // --fallback none keeps the model's result (identity on linear input: the same voxels here,
  // so only the log tells them apart).
  r = run_cli({"restore", d.file("in.tif"), "-o", d.file("m.tif"), "--backbone",
               d.file("id.safetensors"), "--steps", "0", "--crop", "32", "--fallback", "none",
               "--min-val-planes", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("writing the model's result anyway"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("mode prompt"), std::string::npos) << r.out;
  TiffFileInfo mi;
  read_volume(d.file("m.tif"), {}, &mi);
  ASSERT_GE(mi.notes.size(), 3u);
  EXPECT_EQ(mi.notes[0], (std::pair<std::string, std::string>{"method", "prompt"}));
  EXPECT_NE(std::find(mi.notes.begin(), mi.notes.end(),
                      std::pair<std::string, std::string>{"validation_pairs", "held-out"}),
            mi.notes.end());
  EXPECT_EQ(mi.notes.back(), (std::pair<std::string, std::string>{
                                 "warning", "not better than interpolation on held-out pairs"}));
  r = run_cli({"restore", d.file("in.tif"), "-o", d.file("x.tif"), "--fallback", "cubic"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown --fallback 'cubic' (expected interp or none)"), std::string::npos)
      << r.err;
}

// Bad flags fail before any work with exit code 2 and a message naming the value.
TEST(PredictCli, BadFlagsExitTwo) {
  TempDir d;
  write_volume(d.file("in.tif"), smooth_volume({4, 16, 16}, {2.0, 0.5, 0.5}, 7));
  const std::string in = d.file("in.tif"), out = d.file("out.tif");
  struct Case {
    std::vector<std::string> extra;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--mode", "magic"}, "unknown --mode 'magic'"},
      {{"--mode", "interp", "--factor", "0.5"},
       "--factor must be 'auto' or a number in 1..1000 (z-step / xy-pixel), got '0.5'"},
      {{"--mode", "interp", "--factor", "abc"}, "got 'abc'"},
      {{"--mode", "interp", "--tile", "8"}, "--tile 8 is too small"},
      {{"--mode", "interp", "--fuse", "max"}, "unknown fusion 'max'"},
      {{"--mode", "interp", "--interp", "spline"}, "unknown interpolation 'spline'"},
      {{"--mode", "interp", "--max-memory", "0"}, "--max-memory 0 must be a positive number"},
      {{"--mode", "interp", "--dtype", "int7"}, "int7"},
      {{}, "--mode prompt needs --prompt FILE"},
      {{"--mode", "interp", "--prompt", "x.safetensors"},
       "--prompt cannot be used with --mode interp"},
      {{"--mode", "zero-shot", "--backbone", "/nonexistent/model.safetensors"},
       "/nonexistent/model.safetensors"},
      {{"--mode", "interp", "--no-such-flag"}, "--no-such-flag"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"predict", in, "-o", out};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << c.message << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_FALSE(file_exists(out));
  }
  // The output may not overwrite the input; a missing input is named.
  auto r = run_cli({"predict", in, "-o", in, "--mode", "interp"});
  EXPECT_EQ(r.exit_code, 2);
  r = run_cli({"predict", d.file("missing.tif"), "-o", out, "--mode", "interp"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("missing.tif"), std::string::npos) << r.err;
  r = run_cli(
      {"restore", in, "-o", out, "--mode", "interp", "--prompt-out", d.file("p.safetensors")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--prompt-out needs --mode prompt, full or unet"), std::string::npos) << r.err;
  // An uncalibrated stack needs an explicit factor.
  Volume u = smooth_volume({4, 16, 16}, {1, 1, 1}, 8);
  u.set_unit("pixel");
  write_volume(d.file("u.tif"), u);
  r = run_cli({"predict", d.file("u.tif"), "-o", out, "--mode", "interp"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("has no voxel-size calibration"), std::string::npos) << r.err;
  r = run_cli({"predict", d.file("u.tif"), "-o", out, "--mode", "interp", "--factor", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Volume o = read_volume(out);
  EXPECT_EQ(o.nz(), 12);
}

// Ctrl-C during reconstruction: exit code 130, the "interrupted" line, and no output file
// (not even a temporary one). SIGINT is sent once the "tiling:" line shows reconstruction
// has begun (a fixed delay raced LibTorch's start-up under ASan on a loaded machine); the
// job (1024 planes through a SwinIR) takes far longer than that.
TEST(PredictCli, InterruptWritesNothing) {
  TempDir d;
  const std::string bb = tiny_backbone(d, "tiny.safetensors", 11);
  write_volume(d.file("in.tif"), smooth_volume({32, 256, 256}, {2.0, 0.5, 0.5}, 12));
  const std::string err = d.file("err.txt");
  const std::string cmd = "'" + std::string(ISO_BINARY) + "' predict '" + d.file("in.tif") +
                          "' -o '" + d.file("out.tif") + "' --mode zero-shot --backbone '" + bb +
                          "' 2>'" + err + "' >/dev/null & pid=$!; for i in $(seq 1200); do "
                          "grep -q 'tiling:' '" + err + "' 2>/dev/null && break; sleep 0.1; "
                          "done; kill -INT $pid; wait $pid";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_NE(isoprompt::test::read_text(d.file("err.txt")).find("interrupted: stopped cleanly"),
            std::string::npos)
      << isoprompt::test::read_text(d.file("err.txt"));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.path()))
    if (e.path().filename().string().find("out") != std::string::npos) ++files;
  EXPECT_EQ(files, 0);
}

// --tta and --uncertainty with an identity backbone (it returns its input exactly): every
// flip is undone exactly, so --tta writes the same voxels as without it, and the XZ and YZ
// restorations agree, so the map is exactly 0. The map is float32 on the output grid with
// the output's voxel size and says what it is. (Maps that are not zero, against their closed
// forms: tests/infer/tta_test.cpp.)
TEST(PredictCli, TtaAndUncertaintyMap) {
  TempDir d;
  SwinIR net(test::tiny_swin_config());
  identity_init(net);
  save_backbone(d.file("id.safetensors"), net);
  write_volume(d.file("in.tif"), smooth_volume({5, 18, 14}, {1.5, 0.5, 0.5}, 31));
  const std::vector<std::string> base = {"predict", d.file("in.tif"), "--mode", "zero-shot",
                                         "--backbone", d.file("id.safetensors")};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  };
  auto r = with({"-o", d.file("plain.tif")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = with({"-o", d.file("tta.tif"), "--tta", "--uncertainty", d.file("u.tif")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("fuse mean, tta)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("float32 uncertainty map (8 restorations), mean 0, max 0"),
            std::string::npos)
      << r.out;
  const Volume plain = read_volume(d.file("plain.tif"));
  TiffFileInfo ti, ui;
  const Volume tta = read_volume(d.file("tta.tif"), {}, &ti);
  EXPECT_TRUE(same_voxels(plain, tta));
  EXPECT_NE(std::find(ti.notes.begin(), ti.notes.end(),
                      std::pair<std::string, std::string>{"tta", "4 flips (none, x or y, z, both), averaged"}),
            ti.notes.end());
  const Volume u = read_volume(d.file("u.tif"), {}, &ui);
  EXPECT_EQ(u.shape(), tta.shape());
  EXPECT_EQ(u.dtype(), DType::F32);
  EXPECT_EQ(u.voxel_size(), tta.voxel_size());
  EXPECT_EQ(u.unit(), tta.unit());
  EXPECT_EQ(to_float_tensor(u).abs().max().item<double>(), 0.0);
  EXPECT_NE(std::find(ui.notes.begin(), ui.notes.end(),
                      std::pair<std::string, std::string>{"map", "uncertainty"}),
            ui.notes.end());

}

// --tta and --uncertainty need a network, and the map's path is checked like every output:
// exit 2 before any work, nothing written.
TEST(PredictCli, TtaAndUncertaintyFlagErrors) {
  TempDir d;
  write_volume(d.file("in.tif"), smooth_volume({4, 16, 16}, {2.0, 0.5, 0.5}, 33));
  const std::string in = d.file("in.tif"), out = d.file("out.tif"), u = d.file("u.tif");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"predict", in, "-o", out, "--mode", "interp", "--tta"},
       "--tta needs a network: --mode interp has no restorations to average"},
      {{"predict", in, "-o", out, "--mode", "interp", "--uncertainty", u},
       "--uncertainty needs a network: the map is the spread of the network's XZ and YZ "
       "restorations, and --mode interp has none"},
      {{"predict", in, "-o", out, "--mode", "zero-shot", "--uncertainty", in},
       "output path is the same file as the input: " + in},
      {{"predict", in, "-o", out, "--mode", "zero-shot", "--uncertainty", out},
       "output path is the same file as the input: " + out},
      {{"restore", in, "-o", out, "--uncertainty", u, "--prompt-out", u},
       "output path is the same file as the input: " + u},
  };
  for (const Case& c : cases) {
    const auto r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.message << "\n" << r.err;
    EXPECT_EQ(isoprompt::test::error_line(r.err), c.message) << r.err;
    EXPECT_FALSE(file_exists(out));
    EXPECT_FALSE(file_exists(u));
  }
}

TEST(BankCli, AddListRemoveRestoreAndErrors) {
  TempDir d;
  const std::string bb = tiny_backbone(d, "tiny.safetensors", 5);
  write_volume(d.file("in.tif"), smooth_volume({8, 40, 40}, {2.0, 0.5, 0.5}, 6));
  auto r = run_cli({"restore", d.file("in.tif"), "-o", d.file("r.tif"), "--backbone", bb,
                    "--prompt-out", d.file("p.safetensors"), "--steps", "2", "--train-batch", "2",
                    "--crop", "32", "--fallback", "none"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string bank = d.file("bank");
  r = run_cli({"bank", "add", bank, d.file("p.safetensors"), "--tag", "blobs", "--voxel", "2,0.5,0.5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("as 'p' (factor 4"), std::string::npos) << r.out;
  r = run_cli({"bank", "list", bank});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 prompt\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blobs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(2,0.5,0.5 "), std::string::npos) << r.out;

  r = run_cli({"bank", "add", bank, d.file("p.safetensors")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already has an entry 'p'"), std::string::npos) << r.err;
  r = run_cli({"bank", "list", d.file("nothere")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("is not a prompt bank"), std::string::npos) << r.err;

  const std::vector<std::string> restore = {"restore", d.file("in.tif"), "-o", d.file("x.tif"),
                                            "--backbone", bb, "--crop", "32", "--train-batch", "2"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = restore;
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args);
  };
  r = with({"--bank", d.file("nothere")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("is not a prompt bank"), std::string::npos) << r.err;
  r = with({"--bank", bank, "--mode", "full"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--bank needs --mode prompt"), std::string::npos) << r.err;
  r = with({"--bank-add"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--bank-add needs --bank DIR"), std::string::npos) << r.err;
  r = with({"--bank", bank, "--resume", d.file("p.safetensors")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--bank and --resume both choose the starting prompt"), std::string::npos)
      << r.err;
  EXPECT_FALSE(file_exists(d.file("x.tif")));
  // Scored and ranked; with --steps 0 and nothing better than the backbone alone (two steps
  // of a random backbone), it says so and starts from zero.
  r = with({"--bank", bank, "--steps", "0", "--fallback", "none"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("1 prompt scored on this stack's held-out pairs"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("  1. p  "), std::string::npos) << r.err;

  r = run_cli({"bank", "remove", bank, "p"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"bank", "remove", bank, "p"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("has no entry 'p'"), std::string::npos) << r.err;
}

// predict/restore --report: the QC report of the volumes just written, with the map when
// there is one; its path is checked against every other path of the command first.
TEST(ReportFromRestore, PredictWritesTheReportWithTheMap) {
  TempDir d;
  const std::string bb = tiny_backbone(d, "tiny.safetensors", 3);
  write_volume(d.file("in.tif"), smooth_volume({6, 24, 20}, {1.5, 0.5, 0.5}, 4));
  auto r = run_cli({"predict", d.file("in.tif"), "-o", d.file("out.tif"), "--mode", "zero-shot",
                    "--backbone", bb, "--uncertainty", d.file("u.tif"), "--report",
                    d.file("qc.html")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("QC report (self-consistency: re-degraded output vs input "),
            std::string::npos)
      << r.out;
  std::ifstream f(d.file("qc.html"));
  const std::string html((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::vector<std::string> expected = {"<h2>Orthogonal views", "<h2>Self-consistency",
                                             "XZ vs YZ", "data:image/png;base64,", d.file("u.tif")};
  for (const std::string& s : expected)
    EXPECT_NE(html.find(s), std::string::npos) << s;
  EXPECT_NE(html.find("No tuning history was given"), std::string::npos);  // nothing was tuned

  // The map, the input and the output of the same command.
  for (const std::string& clash : {d.file("u2.tif"), d.file("in.tif"), d.file("out2.tif")}) {
    r = run_cli({"predict", d.file("in.tif"), "-o", d.file("out2.tif"), "--mode", "zero-shot",
                 "--backbone", bb, "--uncertainty", d.file("u2.tif"), "--report", clash});
    EXPECT_EQ(r.exit_code, 2) << clash;
    EXPECT_FALSE(file_exists(d.file("out2.tif")));
  }
}
