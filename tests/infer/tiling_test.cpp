// Tiling, blending, tile policy, tiled restoration and fusion (src/infer/tiling.cpp).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "isoprompt/error.h"
#include "isoprompt/infer.h"
#include "isoprompt/log.h"

using namespace isoprompt;

namespace {

// A fixed, translation-equivariant, nonlinear network: 3x3 and 7x7 convolutions (zero
// padded) with a ReLU between them; receptive radius 4 px.
struct ConvRestorer {
  at::Tensor w1, w2;
  ConvRestorer() {
    at::manual_seed(7);
    w1 = at::randn({4, 1, 3, 3}) * 0.3;
    w2 = at::randn({1, 4, 7, 7}) * 0.1;  // radius 1 + 3 = 4
  }
  at::Tensor operator()(const at::Tensor& x) const {
    return at::conv2d(at::relu(at::conv2d(x, w1, {}, 1, 1)), w2, {}, 1, 3) + x;
  }
};

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

// Spans cover [0, n) exactly, with the fewest tiles, evenly spread (hand-computed case).
TEST(Tiling, SpansHandComputed) {
  EXPECT_EQ(tile_spans(10, 10, 4), (std::vector<TileSpan>{{0, 10}}));
  EXPECT_EQ(tile_spans(5, 8, 2), (std::vector<TileSpan>{{0, 5}}));
  // c = ceil((100 - 8) / (40 - 8)) = 3, starts round(k * 60 / 2).
  EXPECT_EQ(tile_spans(100, 40, 8), (std::vector<TileSpan>{{0, 40}, {30, 40}, {60, 40}}));
  // c = ceil((65 - 0) / 32) = 3, starts round(k * 33 / 2) = 0, 17 (16.5 rounds up), 33.
  EXPECT_EQ(tile_spans(65, 32, 0), (std::vector<TileSpan>{{0, 32}, {17, 32}, {33, 32}}));
  EXPECT_THROW(tile_spans(100, 40, 21), InputError);
}

// For many sizes: exact cover, overlaps >= the nominal one, and one tile fewer would not do.
TEST(Tiling, SpansPropertiesSweep) {
  for (int64_t n = 1; n <= 300; n += 7)
    for (int64_t tile : {int64_t(16), int64_t(24), int64_t(64), int64_t(100)})
      for (int64_t overlap : {int64_t(0), int64_t(2), int64_t(8), tile / 2}) {
        const auto s = tile_spans(n, tile, overlap);
        ASSERT_FALSE(s.empty());
        EXPECT_EQ(s.front().start, 0);
        EXPECT_EQ(s.back().start + s.back().length, n);
        const int64_t c = static_cast<int64_t>(s.size());
        for (int64_t k = 0; k + 1 < c; ++k) {
          EXPECT_EQ(s[k].length, tile);
          EXPECT_GE(s[k].start + s[k].length - s[k + 1].start, overlap) << n << " " << tile << " " << overlap;
          EXPECT_GT(s[k + 1].start, s[k].start);
        }
        if (c > 1) {
          EXPECT_LT((c - 1) * tile - (c - 2) * overlap, n);  // c - 1 tiles are too few
        }
      }
}

// Hand-computed weights: overlap 4 -> margin 1, cosine ramp over 2 px: 0.5 -+ sqrt(2)/4.
TEST(Tiling, BlendWeightsHandComputed) {
  const auto w = blend_weights(12, {{0, 8}, {4, 8}}, 4);
  const float a = static_cast<float>(0.5 - std::sqrt(2.0) / 4), b = static_cast<float>(0.5 + std::sqrt(2.0) / 4);
  const std::vector<float> w0{1, 1, 1, 1, 1, b, a, 0}, w1{0, a, b, 1, 1, 1, 1, 1};
  ASSERT_EQ(w.size(), 2u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_NEAR(w[0][i], w0[i], 1e-7) << i;
    EXPECT_NEAR(w[1][i], w1[i], 1e-7) << i;
  }
}

// Weights sum to 1 everywhere and vanish within overlap/4 of every shared edge.
TEST(Tiling, BlendWeightsPartitionOfUnity) {
  for (int64_t n : {33, 100, 257})
    for (int64_t tile : {int64_t(16), int64_t(40)})
      for (int64_t overlap : {int64_t(0), int64_t(4), int64_t(8), tile / 2}) {
        const auto spans = tile_spans(n, tile, overlap);
        const auto w = blend_weights(n, spans, overlap);
        std::vector<double> total(n, 0.0);
        for (size_t s = 0; s < spans.size(); ++s) {
          for (int64_t d = 0; d < spans[s].length; ++d) {
            total[spans[s].start + d] += w[s][d];
            const bool near_shared = (spans[s].start > 0 && d < overlap / 4) ||
                                     (spans[s].start + spans[s].length < n && spans[s].length - 1 - d < overlap / 4);
            if (near_shared) {
              EXPECT_EQ(w[s][d], 0.f);
            }
          }
        }
        for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(total[i], 1.0, 1e-6) << n << " " << tile << " " << overlap;
      }
}

// A plane that fits the budget is one tile; the batch fills the budget (capped at 64).
TEST(TilePolicy, WholePlaneWhenItFits) {
  TileRequest req;
  req.max_memory_gb = 1.0;
  req.cost.bytes_per_pixel = 1000;
  const TilePlan p = plan_tiles(64, 100, req);
  EXPECT_EQ(p.tile_rows, 64);
  EXPECT_EQ(p.tile_cols, 100);
  EXPECT_EQ(p.tiles_per_plane(), 1);
  EXPECT_EQ(p.overlap, 0);
  EXPECT_EQ(p.batch, 64);  // floor(2^30 / 6.4e6) = 167, capped
}

// Automatic tiles: the largest square within the budget (multiple of 8), then shrunk to the
// smallest size with the same tile count (hand-computed: 327 -> 320 -> 4 tiles -> 280).
TEST(TilePolicy, AutoTileHandComputed) {
  TileRequest req;
  req.max_memory_gb = 0.1;  // 107374182 bytes = 107374 px at 1000 bytes/px
  req.cost.bytes_per_pixel = 1000;
  req.cost.multiple = 8;
  const TilePlan p = plan_tiles(1000, 1000, req);
  EXPECT_EQ(p.tile_rows, 280);
  EXPECT_EQ(p.tile_cols, 280);
  EXPECT_EQ(p.overlap, 32);
  EXPECT_EQ(p.row_spans.size(), 4u);
  EXPECT_EQ(p.batch, 1);
  // A short plane keeps its full height and widens the tile: 64 x floor(budget / (64 bpp)).
  const TilePlan q = plan_tiles(64, 4000, req);
  EXPECT_EQ(q.tile_rows, 64);
  EXPECT_EQ(q.tile_cols, 1360);  // 1677 -> 1672 -> 3 tiles -> ceil((4000 + 64) / 3) = 1355 -> 1360
  EXPECT_EQ(q.col_spans.size(), 3u);
}

// Over a range of budgets the estimated working memory never exceeds the budget.
TEST(TilePolicy, AutoTileRespectsMemoryBudget) {
  for (double gb : {0.05, 0.2, 0.7, 2.0, 8.0})
    for (int64_t rows : {100, 700})
      for (int64_t cols : {90, 1500}) {
        TileRequest req;
        req.max_memory_gb = gb;
        req.cost = swin_cost(60, 6, 8, 2.0);
        const TilePlan p = plan_tiles(rows, cols, req);
        EXPECT_LE(p.bytes_per_batch, gb * 1024 * 1024 * 1024) << gb << " " << rows << " " << cols;
        EXPECT_LE(p.tile_rows, rows);
        EXPECT_LE(p.tile_cols, cols);
        EXPECT_TRUE(p.tile_rows == rows || p.tile_rows % 8 == 0);
        EXPECT_TRUE(p.tile_cols == cols || p.tile_cols % 8 == 0);
      }
}

// Impossible requests are refused with the value in the message.
TEST(TilePolicy, BadRequestsThrowInputError) {
  TileRequest req;
  req.tile = 8;
  EXPECT_THROW(plan_tiles(100, 100, req), InputError);
  req.tile = 32;
  req.overlap = 20;
  try {
    plan_tiles(100, 100, req);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "tile overlap 20 px must be at most half the tile (32 px)");
  }
  req = TileRequest{};
  req.max_memory_gb = 0;
  EXPECT_THROW(plan_tiles(100, 100, req), InputError);
  req.max_memory_gb = 1;
  req.batch = -1;
  EXPECT_THROW(plan_tiles(100, 100, req), InputError);
}

// An identity network gives back the planes (the weights are a partition of unity).
TEST(RestorePlanes, IdentityIsExactUpToRounding) {
  at::manual_seed(1);
  const at::Tensor planes = at::rand({3, 70, 90});
  TileRequest req;
  req.tile = 32;
  req.overlap = 12;
  req.batch = 5;
  const TilePlan plan = plan_tiles(70, 90, req);
  ASSERT_GT(plan.tiles_per_plane(), 4);
  int64_t calls = 0;
  const at::Tensor out = restore_planes(planes, [&](const at::Tensor& x) { ++calls; return x.clone(); }, plan);
  EXPECT_LT(max_abs_diff(out, planes), 1e-6);
  EXPECT_EQ(calls, (3 * plan.tiles_per_plane() + 4) / 5);  // batches of 5 across planes
}

// Tiled = untiled for a translation-equivariant network whose receptive radius (4 px) is
// within the discarded margin (overlap 16 / 4); with hard seams (overlap 0) it is not.
TEST(RestorePlanes, TiledMatchesUntiledForConvNetwork) {
  at::manual_seed(2);
  const at::Tensor planes = at::rand({3, 70, 90});
  const ConvRestorer net;
  const at::Tensor whole = net(planes.unsqueeze(1)).squeeze(1);
  TileRequest req;
  req.tile = 32;
  req.overlap = 16;
  req.batch = 4;
  const at::Tensor tiled = restore_planes(planes, net, plan_tiles(70, 90, req));
  EXPECT_LT(max_abs_diff(tiled, whole), 1e-5);
  req.overlap = 0;
  const at::Tensor seams = restore_planes(planes, net, plan_tiles(70, 90, req));
  EXPECT_GT(max_abs_diff(seams, whole), 1e-3);  // the comparison can fail
}

// A network that changes the shape is reported, not silently used.
TEST(RestorePlanes, WrongOutputShapeIsAnError) {
  const at::Tensor planes = at::zeros({2, 16, 16});
  TileRequest req;
  const TilePlan plan = plan_tiles(16, 16, req);
  try {
    restore_planes(planes, [](const at::Tensor& x) { return x.narrow(3, 0, 8); }, plan);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "the network returned [2,1,16,8] for a batch of [2,1,16,16]");
  }
}

// Fusion on hand-computed values.
TEST(Fusion, MeanAndGeometricExact) {
  const at::Tensor a0 = at::tensor({1.f, 2.f, -1.f, 4.f, 0.25f});
  const at::Tensor b = at::tensor({3.f, 2.f, 1.f, -4.f, 1.f});
  at::Tensor a = a0.clone();
  fuse_into(a, b, Fuse::Mean);
  EXPECT_TRUE(at::equal(a, at::tensor({2.f, 2.f, 0.f, 0.f, 0.625f})));
  a = a0.clone();
  fuse_into(a, b, Fuse::Geometric);
  EXPECT_TRUE(at::equal(a, at::tensor({std::sqrt(3.f), 2.f, 0.f, 0.f, 0.5f})));
  EXPECT_EQ(parse_fuse("geometric"), Fuse::Geometric);
  EXPECT_STREQ(fuse_name(Fuse::Mean), "mean");
  EXPECT_THROW(parse_fuse("max"), InputError);
}

// The Swin memory estimate follows its documented formula.
TEST(TilePolicy, SwinCostFormula) {
  const RestorerCost c = swin_cost(180, 6, 8, 2.0);
  EXPECT_DOUBLE_EQ(c.bytes_per_pixel, 4.0 * (11 * 180 + 2 * 2.0 * 180 + 3 * 6 * 64) * 1.5);
  EXPECT_EQ(c.multiple, 8);
  EXPECT_DOUBLE_EQ(default_bytes_per_pixel(), c.bytes_per_pixel);
}

// Small slices are replicate-padded for the network and cropped back.
TEST(RestorePlanes, PadSmallSlices) {
  std::vector<std::vector<int64_t>> seen;
  SliceRestorer net = [&](const at::Tensor& x) {
    seen.push_back(x.sizes().vec());
    return x * 2;
  };
  const SliceRestorer padded = pad_small_slices(net, 8);
  const at::Tensor x = at::arange(2 * 3 * 10, at::kFloat).reshape({2, 1, 3, 10});
  const at::Tensor y = padded(x);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (std::vector<int64_t>{2, 1, 8, 10}));
  EXPECT_TRUE(at::equal(y, x * 2));
  const at::Tensor big = at::zeros({1, 1, 9, 9});
  EXPECT_TRUE(at::equal(padded(big), big));
  EXPECT_EQ(seen.back(), (std::vector<int64_t>{1, 1, 9, 9}));
}
