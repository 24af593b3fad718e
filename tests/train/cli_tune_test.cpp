// `isoprompt tune` end to end through the built binary.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/train.h"
#include "test_util.h"

using namespace isoprompt;

namespace {

std::string write_tiny_backbone(const test::TempDir& dir, uint64_t seed) {
  torch::manual_seed(seed);
  SwinConfig c;
  c.embed_dim = 12;
  c.depths = {2};
  c.num_heads = {2};
  c.num_feat = 16;
  SwinIR net(c);
  const std::string path = dir.file("tiny" + std::to_string(seed) + ".safetensors");
  save_backbone(path, net);
  return path;
}

std::string write_stack(const test::TempDir& dir) {
  Volume v({8, 40, 40}, DType::U16, {2.0, 0.5, 0.5});
  uint16_t* d = v.data<uint16_t>();
  for (int64_t i = 0; i < v.numel(); ++i) {
    const int64_t z = i / 1600, y = (i / 40) % 40, x = i % 40;
    d[i] = static_cast<uint16_t>(1000 + 800 * std::sin(0.4 * x + 0.1 * z) * std::cos(0.3 * y));
  }
  const std::string path = dir.file("stack.tif");
  write_volume(path, v);
  return path;
}

}  // namespace

TEST(CliTune, WritesAPromptFileWithItsMetadata) {
  test::TempDir dir;
  const std::string bb = write_tiny_backbone(dir, 1), in = write_stack(dir);
  const std::string out = dir.file("p.safetensors");
  const auto r = test::run_cli({"--threads", "1", "tune", in, "-o", out, "--backbone", bb, "--steps", "4",
                                "--crop", "16-32", "--batch", "2", "--cache-crops", "4", "--prompts", "4",
                                "--attn-dim", "8", "--eval-every", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + out + ": prompt, K 4, 4 steps"), std::string::npos) << r.out;
  const PromptInfo info = read_prompt_info(out);
  EXPECT_EQ(info.steps, 4);
  EXPECT_DOUBLE_EQ(info.factor, 4.0);  // 2.0 / 0.5 from the file's calibration
  EXPECT_EQ(info.prompt.num_prompts, 4);
  EXPECT_EQ(info.backbone_name, "tiny1");
  EXPECT_EQ(info.backbone_hash, load_backbone(bb).hash);
  EXPECT_EQ(info.interp, Interp::Keys);  // the default: the backbone was trained on Keys inputs
  EXPECT_GT(info.norm.hi, info.norm.lo);

  // Resume with the same backbone adds steps; another backbone is refused (exit 2).
  const std::string out2 = dir.file("p2.safetensors");
  auto r2 = test::run_cli({"--threads", "1", "tune", in, "-o", out2, "--backbone", bb, "--steps", "2",
                           "--crop", "16", "--batch", "2", "--cache-crops", "2", "--resume", out});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(read_prompt_info(out2).steps, 6);
  const std::string other = write_tiny_backbone(dir, 2);
  auto r3 = test::run_cli({"tune", in, "-o", out2, "--backbone", other, "--steps", "2", "--resume", out});
  EXPECT_EQ(r3.exit_code, 2);
  EXPECT_NE(r3.err.find("was tuned for backbone tiny1"), std::string::npos) << r3.err;
}

TEST(CliTune, RejectsBadArgumentsWithExitCode2) {
  test::TempDir dir;
  const std::string bb = write_tiny_backbone(dir, 3), in = write_stack(dir);
  const std::string out = dir.file("p.safetensors");
  auto r = test::run_cli({"tune", in, "-o", out, "--backbone", bb, "--factor", "0.5"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--factor must be 'auto' or a number in 1..1000 (z-step / xy-pixel), got '0.5'"),
            std::string::npos)
      << r.err;
  r = test::run_cli({"--device", "gpu", "tune", in, "-o", out, "--backbone", bb});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--device must be cpu, cuda or cuda:N, got 'gpu'"), std::string::npos) << r.err;
  r = test::run_cli({"tune", in, "-o", out, "--backbone", dir.file("none.safetensors")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("none.safetensors"), std::string::npos) << r.err;
  r = test::run_cli({"tune", in, "-o", out, "--backbone", bb, "--prompt-at", "head"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown prompt placement 'head'"), std::string::npos) << r.err;
  r = test::run_cli({"tune", in, "-o", out, "--backbone", bb, "--degrade", "psf"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("exactly one of --psf-fwhm"), std::string::npos) << r.err;
  r = test::run_cli({"tune", in, "-o", in, "--backbone", bb});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_FALSE(file_exists(out));
}
