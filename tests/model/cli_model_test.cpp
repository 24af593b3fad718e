// `isoprompt model ...` commands and apply_planewise.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <fstream>

#include "isoprompt/checkpoint.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/model.h"
#include "isoprompt/tensor.h"
#include "test_util.h"

namespace isoprompt {
namespace {

using ::testing::HasSubstr;

TEST(ModelCli, InfoOnTheTinyGoldenModel) {
  ISO_REQUIRE_SHARED(pt, "golden/unifmir/iso_tiny/model.pt");
  ISO_REQUIRE_SHARED(st, "golden/unifmir/iso_tiny/model.safetensors");
  auto r = test::run_cli({"model", "info", pt});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("embed_dim   12\n"));
  EXPECT_THAT(r.out, HasSubstr("depths      [2, 2]\n"));
  EXPECT_THAT(r.out, HasSubstr("num_heads   [2, 2]\n"));
  EXPECT_THAT(r.out, HasSubstr("window      8 (shift 4 on odd blocks)\n"));
  EXPECT_THAT(r.out, HasSubstr("parameters  14,805\n"));
  // 2 * (4 blocks * (4*144 + 2*12*24 + 2*64*12) + 9*12 + 3*9*144 + 9*12*32 + 9*32) * 65536 / 1e9
  EXPECT_THAT(r.out, HasSubstr("FLOPs       2.4 GFLOP per 256x256 slice\n"));
  // Same identity from both formats.
  const auto id = r.out.substr(r.out.find("identity    ") + 12, 64);
  auto r2 = test::run_cli({"model", "info", "--json", st});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_THAT(r2.out, HasSubstr("\"identity\": \"" + id + "\""));
  EXPECT_THAT(r2.out, HasSubstr("\"parameters\": 14805"));
  EXPECT_THAT(r2.out, HasSubstr("\"source\": \"UniFMIR main model/swinir.py::swinir\""));
}

TEST(ModelCli, ConvertWritesASelfDescribingSafetensors) {
  ISO_REQUIRE_SHARED(pt, "golden/unifmir/iso_tiny/model.pt");
  test::TempDir tmp;
  auto r = test::run_cli({"model", "convert", pt, tmp.file("tiny.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, std::string> md;
  TensorMap t = read_safetensors(tmp.file("tiny.safetensors"), &md);
  EXPECT_EQ(t.size(), 74u);  // parameters and buffers
  EXPECT_EQ(md.at("source"), "model.pt");
  EXPECT_EQ(SwinConfig::from_json(md.at("config")).embed_dim, 12);
  EXPECT_EQ(load_backbone(tmp.file("tiny.safetensors")).hash, load_backbone(pt).hash);
  auto bad = test::run_cli({"model", "convert", pt, tmp.file("tiny.pt")});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("output must be a .safetensors file"));
}

TEST(ModelCli, CorruptedFilesExitWithCode2AndTheirOwnMessage) {
  ISO_REQUIRE_SHARED(dir, "golden/unifmir/iso_tiny");
  test::TempDir tmp;
  std::vector<std::string> order;
  TensorMap sd = read_safetensors(dir + "/model.safetensors", nullptr, &order);
  auto save_without = [&](const std::string& file, const std::string& drop, const std::string& add,
                          const std::string& reshape) {
    TensorList l;
    for (const auto& k : order)
      if (k != drop) l.emplace_back(k, k == reshape ? sd.at(k).reshape({-1}) : sd.at(k));
    if (!add.empty()) l.emplace_back(add, at::zeros({2}));
    write_safetensors(tmp.file(file), l, {});
    return tmp.file(file);
  };
  struct Case {
    std::string file, message;
  };
  const std::string w = "layers.0.residual_group.blocks.1.mlp.fc2.weight";
  std::vector<Case> cases = {
      {save_without("missing.safetensors", w, "", ""), "missing tensor '" + w + "' (expected shape [12, 24])"},
      {save_without("extra.safetensors", "", "norm.extra", ""), "unknown tensor 'norm.extra' (shape [2])"},
      {save_without("shape.safetensors", "", "", w), "has shape [288], but the model"},
  };
  std::string pt;
  {
    std::ifstream f(dir + "/model.pt", std::ios::binary);
    pt.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    std::ofstream o(tmp.file("cut.pt"), std::ios::binary);
    o.write(pt.data(), 1000);
  }
  cases.push_back({tmp.file("cut.pt"), "is truncated or not a valid zip archive"});
  cases.push_back({tmp.file("nothere.pt"), "model file not found"});
  for (const auto& c : cases) {
    auto r = test::run_cli({"model", "info", c.file});
    EXPECT_EQ(r.exit_code, 2) << c.file;
    EXPECT_THAT(r.err, HasSubstr("error: "));
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.file;
    EXPECT_EQ(r.out, "");
  }
}

TEST(ModelCli, ApplyRunsTheRawNetworkOnEveryPlane) {
  ISO_REQUIRE_SHARED(st, "golden/unifmir/iso_tiny/model.safetensors");
  test::TempDir tmp;
  Volume v({6, 10, 12}, DType::U16, {3.0, 0.4, 0.4});
  for (int64_t i = 0; i < v.numel(); ++i) v.data<uint16_t>()[i] = uint16_t((i * 7) % 13);
  write_volume(tmp.file("in.tif"), v);
  auto r = test::run_cli({"model", "apply", st, tmp.file("in.tif"), "-o", tmp.file("out.tif"), "--plane", "yz", "--batch", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Volume out = read_volume(tmp.file("out.tif"));
  EXPECT_EQ(out.dtype(), DType::F32);
  EXPECT_EQ(out.shape(), v.shape());
  EXPECT_DOUBLE_EQ(out.voxel_size().z, 3.0);
  // YZ plane x = 7 (a 6×10 z-by-y image) through the network directly.
  Backbone bb = load_backbone(st);
  torch::NoGradGuard ng;
  const at::Tensor in = to_float_tensor(v).select(2, 7);
  const at::Tensor ref = bb.net->forward(in.unsqueeze(0).unsqueeze(0))[0][0];
  EXPECT_LE((to_tensor(out).data.select(2, 7) - ref).abs().max().item<double>(), 1e-5);
  auto bad = test::run_cli({"model", "apply", st, tmp.file("in.tif"), "-o", tmp.file("o2.tif"), "--plane", "zz"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_FALSE(file_exists(tmp.file("o2.tif")));
}

// A 2D model applied to a 2D image (one plane): the natural use, accepted with --plane xy;
// the other orientations do not exist in one plane and are refused with exit code 2.
TEST(ModelCli, ApplyTakesA2DImage) {
  test::TempDir tmp;
  SwinConfig c;
  c.embed_dim = 8;
  c.depths = {1};
  c.num_heads = {2};
  c.num_feat = 4;
  SwinIR net(c);
  save_backbone(tmp.file("tiny.safetensors"), net);
  Volume v({1, 9, 11}, DType::U16, {1.0, 0.5, 0.5});
  for (int64_t i = 0; i < v.numel(); ++i) v.data<uint16_t>()[i] = uint16_t((i * 37) % 1000);
  write_volume(tmp.file("img.tif"), v);
  auto r = test::run_cli({"model", "apply", tmp.file("tiny.safetensors"), tmp.file("img.tif"), "-o", tmp.file("out.tif")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReadOptions ro;
  ro.allow_2d = true;
  const Volume out = read_volume(tmp.file("out.tif"), ro);
  EXPECT_EQ(out.shape(), v.shape());
  EXPECT_EQ(out.dtype(), DType::F32);
  torch::NoGradGuard ng;
  net->eval();
  const at::Tensor ref = net->forward(to_float_tensor(v)[0].unsqueeze(0).unsqueeze(0))[0][0];
  EXPECT_LE((to_tensor(out).data[0] - ref).abs().max().item<double>(), 1e-5 * (1 + ref.abs().max().item<double>()));
  r = test::run_cli({"model", "apply", tmp.file("tiny.safetensors"), tmp.file("img.tif"), "-o", tmp.file("o2.tif"),
                     "--plane", "xz"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr(tmp.file("img.tif") + " is a 2D image (one plane): it has no xz planes, use --plane xy"));
  EXPECT_FALSE(file_exists(tmp.file("o2.tif")));
}

TEST(ApplyPlanewise, EveryPlaneGoesThroughTheNetwork) {
  SwinConfig c;
  c.embed_dim = 8;
  c.depths = {1};
  c.num_heads = {2};
  c.num_feat = 4;
  SwinIR net(c);
  Volume v({5, 9, 11}, DType::U16, {2.0, 0.5, 0.5});
  for (int64_t i = 0; i < v.numel(); ++i) v.data<uint16_t>()[i] = uint16_t((i * 37) % 1000);
  const at::Tensor vol = to_float_tensor(v);
  torch::NoGradGuard ng;
  for (Plane p : {Plane::XY, Plane::XZ, Plane::YZ}) {
    Volume out = apply_planewise(net, v, p, 3);
    EXPECT_EQ(out.dtype(), DType::F32);
    EXPECT_EQ(out.shape(), v.shape());
    EXPECT_EQ(out.voxel_size(), v.voxel_size());
    const at::Tensor o = to_tensor(out).data;
    // Plane 2 of each orientation, run on its own.
    at::Tensor in2 = p == Plane::XY ? vol[2] : p == Plane::XZ ? vol.select(1, 2) : vol.select(2, 2);
    at::Tensor o2 = p == Plane::XY ? o[2] : p == Plane::XZ ? o.select(1, 2) : o.select(2, 2);
    at::Tensor ref = net->forward(in2.unsqueeze(0).unsqueeze(0))[0][0];
    EXPECT_LE((ref - o2).abs().max().item<double>(), 1e-5 * (1 + ref.abs().max().item<double>())) << plane_name(p);
  }
  EXPECT_THROW(apply_planewise(net, v, Plane::XY, 0), InputError);
}

}  // namespace
}  // namespace isoprompt
