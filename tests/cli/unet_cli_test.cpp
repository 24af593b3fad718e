// `--mode unet` through the built binary: restore, tune, predict, and the file's mode.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>

#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/model.h"
#include "isoprompt/tensor.h"
#include "isoprompt/train.h"
#include "test_util.h"
#include "tiny_models.h"

using namespace isoprompt;
using isoprompt::test::run_cli;
using isoprompt::test::TempDir;

namespace {

// A smooth random uint16 volume (blurred noise), 8 x 40 x 40, z 2.0 / xy 0.5 (K = 4).
std::string write_stack(const TempDir& d) {
  at::manual_seed(11);
  at::Tensor t = at::avg_pool3d(at::rand({1, 1, 8, 40, 40}), {3, 3, 3}, {1, 1, 1}, {1, 1, 1});
  VolumeTensor vt;
  vt.data = (t.squeeze() * 20000 + 1000).floor();
  vt.voxel = {2.0, 0.5, 0.5};
  const std::string path = d.file("in.tif");
  write_volume(path, to_volume(vt, DType::U16));
  return path;
}

bool same_voxels(const Volume& a, const Volume& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

// Few steps on small crops: the U-Net is far from trained, so --fallback none keeps its output.
const std::vector<std::string> kShortRun = {"--steps",      "3", "--crop",     "16-32",
                                            "--eval-every", "1", "--fallback", "none"};

}  // namespace

// restore --mode unet trains without a backbone, writes the isotropic stack and the U-Net
// file; predict --mode unet with that file reproduces the restored stack voxel for voxel.
TEST(UNetCli, RestoreWritesTheStackAndTheFilePredictReproduces) {
  TempDir d;
  const std::string in = write_stack(d), net = d.file("u.safetensors");
  std::vector<std::string> args = {
      "--threads",    "1", "restore",       in, "-o", d.file("r.tif"), "--mode", "unet",
      "--prompt-out", net, "--train-batch", "2"};
  args.insert(args.end(), kShortRun.begin(), kShortRun.end());
  auto r = run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(mode unet, factor 4, fuse mean)"), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find("backbone"), std::string::npos) << r.err;  // none loaded
  const Volume restored = read_volume(d.file("r.tif"));
  EXPECT_EQ(restored.shape(), (Shape3{32, 40, 40}));
  EXPECT_EQ(restored.dtype(), DType::U16);
  EXPECT_DOUBLE_EQ(restored.voxel_size().z, 0.5);
  EXPECT_DOUBLE_EQ(restored.voxel_size().x, 0.5);

  const PromptInfo info = read_prompt_info(net);
  EXPECT_EQ(info.mode, TuneParams::Mode::UNet);
  EXPECT_EQ(info.steps, 3);
  EXPECT_DOUBLE_EQ(info.factor, 4.0);
  EXPECT_EQ(info.interp, Interp::BSpline3);  // auto without a backbone: the cubic B-spline
  EXPECT_TRUE(info.unet == UNetConfig{});
  EXPECT_TRUE(info.backbone_hash.empty());
  EXPECT_EQ(info.pmin, 1.0);
  EXPECT_EQ(info.pmax, 99.8);
  EXPECT_GT(info.norm.hi, info.norm.lo);

  r = run_cli(
      {"--threads", "1", "predict", in, "-o", d.file("p.tif"), "--mode", "unet", "--prompt", net});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(same_voxels(read_volume(d.file("p.tif")), restored));
  // Without --mode the file's mode is used.
  r = run_cli({"--threads", "1", "predict", in, "-o", d.file("q.tif"), "--prompt", net});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mode unet"), std::string::npos) << r.out;
  EXPECT_TRUE(same_voxels(read_volume(d.file("q.tif")), restored));
}

// tune --mode unet writes the file; another mode is refused with one line and exit 2, both
// ways round, and nothing is written.
TEST(UNetCli, TuneWritesTheFileAndTheFilesModeRefusesAnother) {
  TempDir d;
  const std::string in = write_stack(d), net = d.file("u.safetensors");
  auto r = run_cli({"--threads", "1", "tune", in, "-o", net, "--mode", "unet", "--steps", "2",
                    "--crop", "16", "--batch", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + net + ": U-Net, K 4, 2 steps"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("922977 trainable parameters"), std::string::npos) << r.out;

  r = run_cli({"predict", in, "-o", d.file("x.tif"), "--mode", "prompt", "--prompt", net});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(test::error_line(r.err),
            net + " holds a U-Net model, not --mode prompt: pass --mode unet");
  EXPECT_FALSE(file_exists(d.file("x.tif")));

  // A prompt file (tiny random backbone) is refused by --mode unet.
  at::manual_seed(5);
  SwinIR bbnet(test::tiny_swin_config());
  const std::string bb = d.file("tiny.safetensors"), prompt = d.file("p.safetensors");
  save_backbone(bb, bbnet);
  r = run_cli({"--threads", "1", "tune", in, "-o", prompt, "--backbone", bb, "--steps", "1",
               "--crop", "16", "--batch", "2", "--cache-crops", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"predict", in, "-o", d.file("x.tif"), "--mode", "unet", "--prompt", prompt});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(test::error_line(r.err),
            prompt + " holds a prompt model, not --mode unet: pass --mode prompt");
  EXPECT_FALSE(file_exists(d.file("x.tif")));

  // The U-Net needs no backbone: naming one is a usage error; --resume is refused.
  r = run_cli({"restore", in, "-o", d.file("x.tif"), "--mode", "unet", "--backbone", bb});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(test::error_line(r.err),
            "--backbone cannot be used with --mode unet (the U-Net trains from scratch)");
  r = run_cli({"tune", in, "-o", d.file("v.safetensors"), "--mode", "unet", "--resume", net});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(test::error_line(r.err), "--resume is only supported with --mode prompt");
  EXPECT_FALSE(file_exists(d.file("x.tif")));
}
