// Golden parity with UniFMIR's PyTorch swinir (../shared/golden/unifmir).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>

#include "isoprompt/checkpoint.h"
#include "isoprompt/model.h"
#include "isoprompt/runtime.h"
#include "test_util.h"

namespace isoprompt {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Loads `model_file` onto `device`, runs every case of cases.safetensors and checks outputs
// and features against `tol` (features: twice that).
void check_cases(const std::string& dir, const std::string& model_file, const SwinConfig& expected,
                 const c10::Device& device = c10::kCPU, double tol = 1e-5) {
  set_threads(2);
  Backbone bb = load_backbone(dir + "/" + model_file, device);
  EXPECT_EQ(bb.config, expected) << bb.config.to_json();
  TensorMap cases = read_safetensors(dir + "/cases.safetensors");
  int n_cases = 0;
  torch::NoGradGuard ng;
  for (int i = 1; cases.count("input_" + std::to_string(i)); ++i, ++n_cases) {
    const std::string s = std::to_string(i);
    const at::Tensor x = cases.at("input_" + s).to(device);
    // forward(x) == tail(features(x), H, W); computing it that way checks both at once.
    at::Tensor f = bb.net->features(x);
    at::Tensor out = bb.net->tail(f, x.size(2), x.size(3)).cpu();
    f = f.cpu();
    if (expected.embed_dim < 32) {
      EXPECT_TRUE(at::equal(bb.net->forward(x).cpu(), out)) << "case " << i;
    }
    ASSERT_EQ(out.sizes(), cases.at("output_" + s).sizes()) << "case " << i;
    const double d = max_abs_diff(out, cases.at("output_" + s));
    EXPECT_LE(d, tol) << model_file << " case " << i;
    std::printf("%s %s on %s case %d: max |out - golden| = %.3g\n", dir.c_str() + dir.rfind('/') + 1,
                model_file.c_str(), device.str().c_str(), i, d);
    if (cases.count("features_" + s)) {
      ASSERT_EQ(f.sizes(), cases.at("features_" + s).sizes());
      const double df = max_abs_diff(f, cases.at("features_" + s));
      EXPECT_LE(df, 2 * tol) << model_file << " features " << i;
      std::printf("  features: max |f - golden| = %.3g\n", df);
    }
  }
  EXPECT_EQ(n_cases, 3);
}

SwinConfig tiny_config() {
  SwinConfig c;
  c.embed_dim = 12;
  c.depths = {2, 2};
  c.num_heads = {2, 2};
  return c;
}

TEST(ModelParity, TinySafetensors) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_tiny");
  check_cases(dir, "model.safetensors", tiny_config());
}

TEST(ModelParity, TinyPt) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_tiny");
  check_cases(dir, "model.pt", tiny_config());
}

TEST(ModelParity, FullSafetensors) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_full");
  check_cases(dir, "model.safetensors", SwinConfig{});
}

TEST(ModelParity, FullPt) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_full");
  check_cases(dir, "model.pt", SwinConfig{});
}

// On a GPU the ATen path runs (the fused kernels are CPU-only), in fp32 with TF32 off:
// issue 15 asks for 1e-4 there.
TEST(ModelParity, FullSafetensorsOnCuda) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_full");
  if (!torch::cuda::is_available()) {
    std::printf("SKIPPED: no CUDA device\n");
    GTEST_SKIP() << "no CUDA device";
  }
  at::globalContext().setFloat32MatmulPrecision("highest");
  at::globalContext().setAllowTF32CuDNN(false);
  check_cases(dir, "model.safetensors", SwinConfig{}, c10::Device(c10::kCUDA), 1e-4);
  check_cases(dir + "/../iso_tiny", "model.safetensors", tiny_config(), c10::Device(c10::kCUDA), 1e-4);
}

TEST(ModelParity, PtAndSafetensorsHoldTheSameTensors) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_tiny");
  std::vector<std::string> pt_order, st_order;
  TensorMap pt = read_torch_checkpoint(dir + "/model.pt", &pt_order);
  TensorMap st = read_safetensors(dir + "/model.safetensors", nullptr, &st_order);
  ASSERT_EQ(pt.size(), 74u);
  ASSERT_EQ(st.size(), 74u);
  for (const auto& [k, v] : pt) {
    ASSERT_TRUE(st.count(k)) << k;
    EXPECT_EQ(v.scalar_type(), st.at(k).scalar_type()) << k;
    EXPECT_TRUE(at::equal(v, st.at(k))) << k;
  }
  // .pt keeps state_dict order: the first keys are conv_first, then patch_embed.norm.
  EXPECT_EQ(pt_order[0], "conv_first.weight");
  EXPECT_EQ(pt_order[2], "patch_embed.norm.weight");
  EXPECT_EQ(pt_order.back(), "conv_last.bias");
  // safetensors lists the I64 buffers first (README).
  EXPECT_EQ(st_order[0], "layers.0.residual_group.blocks.0.attn.relative_position_index");
  EXPECT_EQ(weights_hash(pt), weights_hash(st));
}

}  // namespace
}  // namespace isoprompt
