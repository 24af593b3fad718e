// PNG writer and orthogonal-view grid.
#include "isoprompt/preview.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cstdio>

#include "test_util.h"

namespace isoprompt {
namespace {

// Decodes a PNG with libpng (linked through iso_io) to check our encoder byte-exactly.
std::vector<uint8_t> read_png_gray(const std::string& path, int64_t& w, int64_t& h) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_file(&img, path.c_str())) << img.message;
  img.format = PNG_FORMAT_GRAY;
  w = img.width;
  h = img.height;
  std::vector<uint8_t> px(PNG_IMAGE_SIZE(img));
  EXPECT_TRUE(png_image_finish_read(&img, nullptr, px.data(), 0, nullptr)) << img.message;
  return px;
}

// libpng reads back exactly the pixels written, including images over one 64 KiB block.
TEST(Png, RoundTripsThroughLibpng) {
  test::TempDir dir;
  for (auto [w, h] : {std::pair<int64_t, int64_t>{3, 2}, {300, 250}}) {
    std::vector<uint8_t> px(static_cast<size_t>(w * h));
    for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 37) % 256);
    const std::string path = dir.file("a.png");
    write_png_gray(path, px, w, h);
    int64_t rw = 0, rh = 0;
    EXPECT_EQ(read_png_gray(path, rw, rh), px);
    EXPECT_EQ(rw, w);
    EXPECT_EQ(rh, h);
  }
}

TEST(Png, RejectsWrongPixelCount) {
  test::TempDir dir;
  EXPECT_THROW(write_png_gray(dir.file("b.png"), std::vector<uint8_t>(5), 2, 2), Error);
}

// Grid layout: XY | XZ | YZ per row, intensities mapped [lo, hi] -> [0, 255] and clipped.
TEST(OrthoGrid, PlacesMiddlePlanesWithSharedContrast) {
  Volume v({4, 3, 5}, DType::F32);
  for (int64_t z = 0; z < 4; ++z)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t x = 0; x < 5; ++x) v.at<float>(z, y, x) = float(z * 100 + y * 10 + x) / 400.f;
  int64_t w = 0, h = 0;
  const auto img = ortho_grid({{"a", v}}, 0.0, 1.0, w, h, 1);
  EXPECT_EQ(w, 5 + 5 + 3 + 4);
  EXPECT_EQ(h, 4 + 2);
  auto px = [&](int64_t r, int64_t c) { return int(img[r * w + c]); };
  EXPECT_EQ(px(1 + 2, 1 + 4), std::lround((200 + 20 + 4) / 400.0 * 255));  // XY at z = 2: y = 2, x = 4
  EXPECT_EQ(px(1 + 3, 1 + 5 + 1 + 0), std::lround((300 + 10 + 0) / 400.0 * 255));  // XZ at y = 1: z = 3, x = 0
  EXPECT_EQ(px(1 + 1, 1 + 5 + 1 + 5 + 1 + 2), std::lround((100 + 20 + 2) / 400.0 * 255));  // YZ at x = 2
  EXPECT_EQ(px(1 + 3, 1 + 2), 255);  // XY has only 3 rows: the cell below is background
  EXPECT_EQ(px(0, 0), 255);          // gap
  const auto dark = ortho_grid({{"a", v}}, 0.5, 0.6, w, h, 1);
  EXPECT_EQ(int(dark[1 * w + 1]), 0);  // 0.0 < lo clips to black
}

}  // namespace
}  // namespace isoprompt
