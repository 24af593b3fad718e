// Metrics: identities, hand-computed values, scikit-image golden values, evaluate().
#include <gtest/gtest.h>

#include <tiffio.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "isoprompt/metrics.h"
#include "test_util.h"

using namespace isoprompt;

namespace {

// Minimal libtiff reader for the golden pairs: one float32 2D image as a 1 x H x W volume.
Volume read_float_tiff(const std::string& path) {
  TIFF* t = TIFFOpen(path.c_str(), "r");
  if (!t) throw std::runtime_error("cannot open " + path);
  uint32_t w = 0, h = 0;
  uint16_t bps = 0, fmt = SAMPLEFORMAT_UINT, spp = 1;
  TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
  TIFFGetField(t, TIFFTAG_BITSPERSAMPLE, &bps);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLEFORMAT, &fmt);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
  if (bps != 32 || fmt != SAMPLEFORMAT_IEEEFP || spp != 1) {
    TIFFClose(t);
    throw std::runtime_error("not a float32 grey image: " + path);
  }
  Volume v({1, int64_t(h), int64_t(w)}, DType::F32);
  for (uint32_t r = 0; r < h; ++r)
    if (TIFFReadScanline(t, v.data<float>() + int64_t(r) * w, r) < 0) {
      TIFFClose(t);
      throw std::runtime_error("read error in " + path);
    }
  TIFFClose(t);
  return v;
}

Volume ramp_volume(Shape3 s, float step) {
  Volume v(s, DType::F32);
  for (int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] = float((i * 7) % 5) * step;
  return v;
}

PlaneView<const float> plane0(const Volume& v) {
  const auto p = v.xy<float>(0);
  return {p.data, p.rows, p.cols, p.row_stride, p.col_stride};
}

Volume noisy_copy(const Volume& a, float amp, uint32_t seed) {
  Volume b = a.clone();
  uint32_t st = seed;
  for (int64_t i = 0; i < b.numel(); ++i) {
    st = st * 1664525u + 1013904223u;
    b.data<float>()[i] += amp * (float(st >> 8) / float(1 << 24) - 0.5f);
  }
  return b;
}

}  // namespace

// Identical images: PSNR +inf, SSIM and MS-SSIM exactly 1, NRMSE 0.
TEST(Metrics, IdenticalImages) {
  const Volume a = ramp_volume({12, 40, 44}, 0.125f);
  EXPECT_EQ(psnr(a, a, 1.0), std::numeric_limits<double>::infinity());
  EXPECT_EQ(nrmse(a, a), 0.0);
  for (Plane p : {Plane::XY, Plane::XZ, Plane::YZ}) {
    EXPECT_DOUBLE_EQ(ssim(a, a, p, 1.0), 1.0) << plane_name(p);
    EXPECT_DOUBLE_EQ(ms_ssim(a, a, p, 1.0, 1), 1.0);
  }
  EXPECT_DOUBLE_EQ(ms_ssim_2d(plane0(a), plane0(a), 1.0, 2), 1.0);
}

// A constant offset c on data range 1 gives PSNR = -20 log10(c); NRMSE = c / rms(a).
TEST(Metrics, ConstantOffset) {
  Volume a = ramp_volume({3, 20, 20}, 0.125f);
  Volume b = a.clone();
  for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] += 0.125f;  // exact in float
  EXPECT_NEAR(psnr(a, b, 1.0), -20 * std::log10(0.125), 1e-9);
  EXPECT_NEAR(psnr(a, b, 255.0), 20 * std::log10(255.0 / 0.125), 1e-9);
  double ref2 = 0;
  for (int64_t i = 0; i < a.numel(); ++i) ref2 += double(a.data<float>()[i]) * a.data<float>()[i];
  EXPECT_NEAR(nrmse(a, b), 0.125 / std::sqrt(ref2 / double(a.numel())), 1e-9);
  EXPECT_THROW(psnr(a, b, 0.0), InputError);
}

// scikit-image 0.19 reference values (../shared/golden/metrics/metrics.json).
TEST(Metrics, GoldenScikitImage) {
  ISO_REQUIRE_SHARED(json_path, "golden/metrics/metrics.json");
  const auto j = nlohmann::json::parse(test::read_text(json_path));
  ASSERT_EQ(j["cases"].size(), 4u);
  const std::string dir = json_path.substr(0, json_path.rfind('/') + 1);
  for (const auto& c : j["cases"]) {
    const Volume a = read_float_tiff(dir + c["a"].get<std::string>());
    const Volume b = read_float_tiff(dir + c["b"].get<std::string>());
    ASSERT_EQ(a.ny(), c["shape"][0].get<int64_t>());
    ASSERT_EQ(a.nx(), c["shape"][1].get<int64_t>());
    EXPECT_NEAR(psnr(a, b, 1.0), c["psnr"].get<double>(), 1e-6) << c["a"];
    EXPECT_NEAR(ssim_2d(plane0(a), plane0(b), 1.0), c["ssim"].get<double>(), 1e-4) << c["a"];
    EXPECT_NEAR(ssim(a, b, Plane::XY, 1.0), c["ssim"].get<double>(), 1e-4) << c["a"];
    std::printf("%s: psnr diff %.2e, ssim diff %.2e\n", c["a"].get<std::string>().c_str(),
                psnr(a, b, 1.0) - c["psnr"].get<double>(), ssim_2d(plane0(a), plane0(b), 1.0) - c["ssim"].get<double>());
  }
}

// SSIM by hand on the smallest plane (11 x 11: a single interior pixel) with constant
// images a = 0.25, b = 0.5: variances 0, so SSIM = (2 ab + C1) / (a^2 + b^2 + C1).
TEST(Metrics, SsimHandValue) {
  Volume a({1, 11, 11}, DType::F32), b({1, 11, 11}, DType::F32);
  for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = 0.25f, b.data<float>()[i] = 0.5f;
  const double C1 = 1e-4;
  int64_t count = 0;
  double sum = 0;
  EXPECT_NEAR(ssim_2d(plane0(a), plane0(b), 1.0, nullptr, &sum, &count), (2 * 0.125 + C1) / (0.0625 + 0.25 + C1),
              1e-7);
  EXPECT_EQ(count, 1);
  Volume tiny({1, 10, 30}, DType::F32);
  EXPECT_THROW(ssim_2d(plane0(tiny), plane0(tiny), 1.0), InputError);
}

// MS-SSIM: scale count from the plane size (each scale keeps >= 11 px), one scale = SSIM.
TEST(Metrics, MsSsimScales) {
  EXPECT_EQ(ms_ssim_scales_for(64, 64), 3);    // 64, 32, 16 (8 < 11)
  EXPECT_EQ(ms_ssim_scales_for(176, 200), 5);  // 176 / 16 = 11
  EXPECT_EQ(ms_ssim_scales_for(175, 200), 4);
  EXPECT_EQ(ms_ssim_scales_for(12, 12), 1);
  const Volume a = ramp_volume({1, 64, 64}, 0.2f);
  const Volume b = noisy_copy(a, 0.3f, 5);
  EXPECT_NEAR(ms_ssim_2d(plane0(a), plane0(b), 1.0, 1), ssim_2d(plane0(a), plane0(b), 1.0), 1e-12);
  const double m3 = ms_ssim_2d(plane0(a), plane0(b), 1.0, 3);
  EXPECT_GT(m3, 0.0);
  EXPECT_LT(m3, 1.0);
  EXPECT_THROW(ms_ssim_2d(plane0(a), plane0(b), 1.0, 4), InputError);
}

// 3D SSIM is the mean of per-plane 2D SSIM along the orientation.
TEST(Metrics, VolumeSsimIsMeanOfPlanes) {
  const Volume a = ramp_volume({13, 14, 15}, 0.2f);
  const Volume b = noisy_copy(a, 0.2f, 6);
  for (Plane p : {Plane::XY, Plane::XZ, Plane::YZ}) {
    double s = 0;
    for (int64_t i = 0; i < a.plane_count(p); ++i) {
      const auto pa = a.plane<float>(p, i), pb = b.plane<float>(p, i);
      s += ssim_2d({pa.data, pa.rows, pa.cols, pa.row_stride, pa.col_stride},
                   {pb.data, pb.rows, pb.cols, pb.row_stride, pb.col_stride}, 1.0);
    }
    EXPECT_NEAR(ssim(a, b, p, 1.0), s / double(a.plane_count(p)), 1e-12) << plane_name(p);
  }
}

// A mask restricts every metric: errors outside it do not count.
TEST(Metrics, MaskExcludesVoxels) {
  const Volume a = ramp_volume({12, 12, 12}, 0.2f);
  Volume b = a.clone(), m({12, 12, 12}, DType::F32);
  for (int64_t z = 0; z < 12; ++z)
    for (int64_t y = 0; y < 12; ++y)
      for (int64_t x = 0; x < 12; ++x) {
        if (x < 6) m.at<float>(z, y, x) = 1.f;
        else b.at<float>(z, y, x) += 0.5f;
      }
  EXPECT_EQ(psnr(a, b, 1.0, &m), std::numeric_limits<double>::infinity());
  // half the voxels off by 0.5 (float sums: 1e-6)
  EXPECT_NEAR(psnr(a, b, 1.0), -20 * std::log10(0.5) + 10 * std::log10(2.0), 1e-6);
  EXPECT_EQ(nrmse(a, b, &m), 0.0);
  Volume none({12, 12, 12}, DType::F32);
  EXPECT_THROW(psnr(a, b, 1.0, &none), InputError);
}

// evaluate(): GT percentiles -> [0, 1], clip, range 1; shape checks; crop to GT.
TEST(Evaluate, ProtocolAndShapeChecks) {
  Volume gt({16, 20, 24}, DType::U8);
  for (int64_t i = 0; i < gt.numel(); ++i) gt.data<uint8_t>()[i] = uint8_t((i * 37) % 251);
  EvalReport r = evaluate(gt, gt);
  EXPECT_EQ(r.overall.psnr, std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(r.overall.ssim, 1.0);
  EXPECT_DOUBLE_EQ(r.xz.ms_ssim, 1.0);
  EXPECT_EQ(r.data_range, 1.0);
  EXPECT_EQ(r.ms_ssim_scales, 1);  // 16 px planes allow one scale
  EXPECT_EQ(r.voxels, gt.numel());

  // Pred = GT + 10 grey levels everywhere (no clipping at the top for most voxels).
  Volume pred = gt.clone();
  for (int64_t i = 0; i < pred.numel(); ++i) pred.data<uint8_t>()[i] = uint8_t(std::min(255, gt.data<uint8_t>()[i] + 10));
  r = evaluate(gt, pred);
  EXPECT_GT(r.gt_hi, r.gt_lo);
  EXPECT_LT(r.overall.psnr, 40);
  EXPECT_GT(r.overall.psnr, 20 * std::log10((r.gt_hi - r.gt_lo) / 10.0) - 1e-6);  // clipping only lowers the error

  // Raw values, range 255: exactly 20 log10(255 / 10) where nothing saturates.
  EvalOptions raw;
  raw.norm = EvalOptions::None;
  Volume low({16, 20, 24}, DType::U8), low10({16, 20, 24}, DType::U8);
  for (int64_t i = 0; i < low.numel(); ++i) low.data<uint8_t>()[i] = uint8_t(i % 200), low10.data<uint8_t>()[i] = uint8_t(i % 200 + 10);
  EXPECT_NEAR(evaluate(low, low10, raw).overall.psnr, 20 * std::log10(25.5), 1e-9);

  Volume bigger({18, 20, 25}, DType::U8);
  try {
    evaluate(gt, bigger);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "shape mismatch: ground truth is 16x20x24 but prediction is 18x20x25 (crop the prediction with "
                 "--crop-to-gt)");
  }
  EvalOptions crop;
  crop.crop_to_gt = true;
  for (int64_t z = 0; z < 16; ++z)
    for (int64_t y = 0; y < 20; ++y)
      for (int64_t x = 0; x < 24; ++x) bigger.at<uint8_t>(z, y, x) = gt.at<uint8_t>(z, y, x);
  EXPECT_EQ(evaluate(gt, bigger, crop).overall.psnr, std::numeric_limits<double>::infinity());
  // A shorter prediction (e.g. 4 x floor(n / 4) slices) is compared on the common box.
  Volume shorter({13, 21, 24}, DType::U8);
  for (int64_t z = 0; z < 13; ++z)
    for (int64_t y = 0; y < 20; ++y)
      for (int64_t x = 0; x < 24; ++x) shorter.at<uint8_t>(z, y, x) = gt.at<uint8_t>(z, y, x);
  r = evaluate(gt, shorter, crop);
  EXPECT_EQ(r.shape, (Shape3{13, 20, 24}));
  EXPECT_EQ(r.overall.psnr, std::numeric_limits<double>::infinity());
  shorter.at<uint8_t>(12, 19, 23) ^= 1;  // inside the common box: counts
  EXPECT_LT(evaluate(gt, shorter, crop).overall.psnr, 100);
}
