// The CARE U-Net: shapes, residual identity, parameter count, gradients, weights.
#include "isoprompt/unet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "isoprompt/error.h"

using namespace isoprompt;

TEST(UNet, CareDefaultsHaveTheExpectedLayersAndParameterCount) {
  const UNetConfig c;
  EXPECT_EQ(c.depth, 2);
  EXPECT_EQ(c.filters, 32);
  EXPECT_EQ(c.kernel, 5);
  EXPECT_EQ(c.convs, 2);
  EXPECT_TRUE(c.residual);
  // 5x5 weights of 1-32, 32-32, 32-64, 64-64, 64-128, 128-64, (64+64)-64, 64-32,
  // (32+32)-32, 32-32 and the 1x1 32-1, plus 545 biases.
  EXPECT_EQ(c.parameter_count(), 922977);
  UNet net(c);
  int64_t n = 0;
  for (const auto& p : net->parameters()) n += p.numel();
  EXPECT_EQ(n, 922977);
  const TensorList w = net->weights();
  ASSERT_EQ(w.size(), 22u);
  EXPECT_EQ(w.front().first, "down0_0.weight");
  EXPECT_EQ(w[8].first, "bottom_0.weight");
  EXPECT_EQ(w[8].second.sizes(), (std::vector<int64_t>{128, 64, 5, 5}));
  EXPECT_EQ(w[12].first, "up1_0.weight");
  EXPECT_EQ(w[12].second.sizes(), (std::vector<int64_t>{64, 128, 5, 5}));
  EXPECT_EQ(w.back().first, "out.bias");
}

TEST(UNet, KeepsTheShapeOfOddAndTinySlices) {
  torch::manual_seed(1);
  UNet net(UNetConfig{});
  torch::NoGradGuard g;
  for (auto hw : std::vector<std::pair<int64_t, int64_t>>{
           {13, 7}, {16, 16}, {5, 9}, {3, 2}, {1, 1}, {37, 21}}) {
    const at::Tensor x = torch::rand({2, 1, hw.first, hw.second});
    const at::Tensor y = net->forward(x);
    EXPECT_EQ(y.sizes(), x.sizes()) << hw.first << "x" << hw.second;
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  }
}

TEST(UNet, IsTheIdentityWhenTheLastConvolutionIsZero) {
  torch::manual_seed(2);
  UNet net(UNetConfig{});
  const at::Tensor x = torch::rand({3, 1, 22, 13});
  torch::NoGradGuard g;
  EXPECT_FALSE(torch::equal(net->forward(x), x));  // random weights change the slice
  net->out_conv()->weight.zero_();
  net->out_conv()->bias.zero_();
  EXPECT_TRUE(torch::equal(net->forward(x), x));  // residual: input + 0, bit for bit
  UNetConfig plain;
  plain.residual = false;
  UNet p(plain);
  p->out_conv()->weight.zero_();
  p->out_conv()->bias.fill_(0.25);
  EXPECT_TRUE(
      torch::equal(p->forward(x), torch::full_like(x, 0.25)));  // no residual: the net alone
}

// Autograd through convs, ReLU, max-pool, nearest upsampling, concatenation, reflect
// padding and the crop matches central finite differences (double).
TEST(UNet, GradientsMatchFiniteDifferences) {
  torch::manual_seed(3);
  UNetConfig c;
  c.depth = 2;
  c.filters = 2;
  c.kernel = 3;
  c.convs = 1;
  UNet net(c);
  net->to(torch::kDouble);
  {
    // Random biases: with CARE's zero biases a pre-activation whose receptive field is all
    // ReLU zeros is exactly 0, the kink itself, where central differences see slope 1/2.
    torch::NoGradGuard g;
    for (auto& p : net->named_parameters())
      if (p.key().find("bias") != std::string::npos) p.value().uniform_(-0.2, 0.2);
  }
  const at::Tensor x = torch::rand({1, 1, 7, 6}, torch::kDouble);  // padded to 8x8 and cropped
  const at::Tensor probe = torch::randn({1, 1, 7, 6}, torch::kDouble);
  auto loss = [&] { return (net->forward(x) * probe).sum(); };
  std::vector<at::Tensor> params = net->parameters();
  const auto grads = torch::autograd::grad({loss()}, params);
  torch::NoGradGuard g;
  const double eps = 1e-6;
  int checked = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor flat = params[i].view(-1);
    const at::Tensor gflat = grads[i].reshape(-1);
    for (int64_t j = 0; j < flat.numel(); j += std::max<int64_t>(1, flat.numel() / 3)) {
      const double v = flat[j].item<double>();
      flat[j] = v + eps;
      const double up = loss().item<double>();
      flat[j] = v - eps;
      const double down = loss().item<double>();
      flat[j] = v;
      const double fd = (up - down) / (2 * eps), ad = gflat[j].item<double>();
      EXPECT_NEAR(ad, fd, 1e-6 * std::max(1.0, std::abs(fd)))
          << "parameter " << i << " element " << j;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 32);  // a few elements of each of the 12 tensors
}

TEST(UNet, ConfigurationAndWeightsRoundTripStrictly) {
  UNetConfig c;
  c.depth = 3;
  c.filters = 4;
  c.kernel = 3;
  const UNetConfig back = UNetConfig::from_json(c.to_json());
  EXPECT_TRUE(back == c);
  EXPECT_EQ(c.to_json(), R"({"depth":3,"filters":4,"kernel":3,"convs":2,"residual":true})");
  EXPECT_THROW(UNetConfig::from_json(R"({"depth":2,"kernel":4})"), CheckpointError);
  EXPECT_THROW(UNetConfig::from_json(R"({"depth":2,"colour":1})"), CheckpointError);

  torch::manual_seed(4);
  UNet a(c), b(c);
  TensorMap w;
  for (const auto& kv : a->weights()) w[kv.first] = kv.second.detach().clone();
  b->load_weights(w, "a.safetensors");
  const at::Tensor x = torch::rand({1, 1, 17, 9});
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
  w.erase("up0_1.bias");
  try {
    b->load_weights(w, "a.safetensors");
    FAIL() << "a missing tensor was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_STREQ(e.what(), "missing tensor 'up0_1.bias' (expected shape [4]) in a.safetensors");
  }
}
