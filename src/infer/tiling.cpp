// Tiling of a plane into overlapping tiles, blending weights, the tile/batch policy,
// tiled restoration of a stack of planes, and fusion of the XZ and YZ stacks.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "isoprompt/error.h"
#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/runtime.h"

namespace isoprompt {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int64_t kMinTile = 16;       // smallest tile a user may ask for
constexpr int64_t kMinAutoTile = 64;   // automatic tiles below this mean the budget is too small
constexpr int64_t kAutoOverlap = 32;
constexpr int64_t kMaxAutoBatch = 64;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "]";
}

// Rounds a tile edge down to the network's multiple, never below one multiple and never
// beyond the plane.
int64_t round_tile(int64_t t, int64_t n, int64_t multiple) {
  if (t >= n) return n;
  if (multiple > 1) t = std::max(multiple, t / multiple * multiple);
  return std::min(t, n);
}

}  // namespace

const char* fuse_name(Fuse f) { return f == Fuse::Geometric ? "geometric" : "mean"; }

Fuse parse_fuse(const std::string& s) {
  if (s == "mean") return Fuse::Mean;
  if (s == "geometric") return Fuse::Geometric;
  throw_input("unknown fusion '{}': expected mean or geometric", s);
}

RestorerCost swin_cost(int64_t embed_dim, int64_t max_heads, int64_t window, double mlp_ratio) {
  if (embed_dim <= 0 || max_heads <= 0 || window <= 0 || !(mlp_ratio > 0))
    throw_error("swin_cost: bad config (embed_dim {}, heads {}, window {}, mlp {})", embed_dim,
                max_heads, window, mlp_ratio);
  const double c = static_cast<double>(embed_dim);
  // Live float32 tensors per token at the peak of one Swin block in inference mode:
  // residual stream, shortcut, the RSTB input and the global skip (4C), LayerNorm and
  // window partition (2C), qkv (3C), attention output and projection (2C), the MLP hidden
  // layer and its activation (2 * mlp * C), and scores + mask + softmax (3 * heads * ws^2).
  const double floats = 11 * c + 2 * mlp_ratio * c + 3.0 * max_heads * window * window;
  RestorerCost cost;
  cost.bytes_per_pixel = 4.0 * floats * 1.5;  // 1.5: allocator slack and padding to the window
  cost.multiple = window;
  return cost;
}

double default_bytes_per_pixel() { return swin_cost(180, 6, 8, 2.0).bytes_per_pixel; }

std::vector<TileSpan> tile_spans(int64_t n, int64_t tile, int64_t overlap) {
  if (n <= 0 || tile <= 0) throw_error("tile_spans: bad size n {} tile {}", n, tile);
  if (n <= tile) return {{0, n}};
  if (overlap < 0 || 2 * overlap > tile)
    throw_input("tile overlap {} px must be between 0 and half the tile ({} px)", overlap, tile);
  // Fewest tiles with consecutive overlaps >= overlap: c tiles cover c*tile - (c-1)*overlap.
  const int64_t c = ceil_div(n - overlap, tile - overlap);
  std::vector<TileSpan> spans;
  spans.reserve(static_cast<size_t>(c));
  for (int64_t k = 0; k < c; ++k) {
    // Evenly spread starts: round(k * (n - tile) / (c - 1)); the strides are then at most
    // ceil((n - tile) / (c - 1)) <= tile - overlap.
    const int64_t start = (k * (n - tile) * 2 + (c - 1)) / (2 * (c - 1));
    spans.push_back({start, tile});
  }
  return spans;
}

std::vector<std::vector<float>> blend_weights(int64_t n, const std::vector<TileSpan>& spans,
                                              int64_t overlap) {
  std::vector<std::vector<double>> w(spans.size());
  std::vector<double> total(static_cast<size_t>(n), 0.0);
  const int64_t margin = overlap / 4;            // discarded border of each tile
  const int64_t ramp = overlap - 2 * margin;     // cosine ramp width
  auto f = [&](int64_t d) {                      // weight at distance d from a shared edge
    if (overlap <= 0 || ramp <= 0) return 1.0;
    if (d < margin) return 0.0;
    if (d >= overlap - margin) return 1.0;
    const double t = (static_cast<double>(d - margin) + 0.5) / static_cast<double>(ramp);
    return 0.5 - 0.5 * std::cos(kPi * t);
  };
  for (size_t s = 0; s < spans.size(); ++s) {
    const TileSpan& sp = spans[s];
    if (sp.start < 0 || sp.length <= 0 || sp.start + sp.length > n)
      throw_error("blend_weights: span [{}, {}) outside [0, {})", sp.start, sp.start + sp.length, n);
    const bool before = sp.start > 0, after = sp.start + sp.length < n;
    w[s].resize(static_cast<size_t>(sp.length));
    for (int64_t d = 0; d < sp.length; ++d) {
      double v = 1.0;
      if (before) v *= f(d);
      if (after) v *= f(sp.length - 1 - d);
      w[s][static_cast<size_t>(d)] = v;
      total[static_cast<size_t>(sp.start + d)] += v;
    }
  }
  for (int64_t i = 0; i < n; ++i)
    if (!(total[static_cast<size_t>(i)] > 0))
      throw_error("blend_weights: position {} of {} has no tile weight (overlap {})", i, n, overlap);
  std::vector<std::vector<float>> out(spans.size());
  for (size_t s = 0; s < spans.size(); ++s) {
    out[s].resize(w[s].size());
    for (size_t d = 0; d < w[s].size(); ++d)
      out[s][d] = static_cast<float>(w[s][d] / total[static_cast<size_t>(spans[s].start) + d]);
  }
  return out;
}

TilePlan plan_tiles(int64_t rows, int64_t cols, const TileRequest& req) {
  if (rows <= 0 || cols <= 0) throw_error("plan_tiles: empty plane {}x{}", rows, cols);
  if (req.tile != 0 && req.tile < kMinTile)
    throw_input("tile size {} px is too small: use 0 (automatic) or at least {}", req.tile, kMinTile);
  if (req.overlap < -1) throw_input("tile overlap {} px must be >= 0 (or -1 for automatic)", req.overlap);
  if (req.batch < 0) throw_input("batch size {} must be >= 0 (0 = automatic)", req.batch);
  if (!(req.max_memory_gb > 0) || !std::isfinite(req.max_memory_gb))
    throw_input("memory budget {} GB must be a positive number", req.max_memory_gb);

  const double bpp = req.cost.bytes_per_pixel > 0 ? req.cost.bytes_per_pixel : default_bytes_per_pixel();
  const double budget = req.max_memory_gb * kGiB - req.cost.fixed_bytes;
  if (budget <= 0)
    throw_input("memory budget {} GB is below the model's fixed memory ({:.2f} GB)", req.max_memory_gb,
                req.cost.fixed_bytes / kGiB);
  const int64_t mult = std::max<int64_t>(1, req.cost.multiple);
  const bool auto_tile = req.tile == 0;

  int64_t tr, tc;
  if (!auto_tile) {
    tr = std::min(req.tile, rows);
    tc = std::min(req.tile, cols);
  } else if (static_cast<double>(rows) * static_cast<double>(cols) * bpp <= budget) {
    tr = rows, tc = cols;  // the whole plane in one tile
  } else {
    const int64_t t = static_cast<int64_t>(std::floor(std::sqrt(budget / bpp)));
    if (t >= rows) {
      tr = rows;
      tc = static_cast<int64_t>(std::floor(budget / (bpp * static_cast<double>(rows))));
    } else if (t >= cols) {
      tc = cols;
      tr = static_cast<int64_t>(std::floor(budget / (bpp * static_cast<double>(cols))));
    } else {
      tr = tc = t;
    }
    tr = round_tile(tr, rows, mult);
    tc = round_tile(tc, cols, mult);
    const int64_t floor_r = std::min(rows, kMinAutoTile), floor_c = std::min(cols, kMinAutoTile);
    if (tr < floor_r || tc < floor_c) {
      log_warn("memory budget {} GB allows only {}x{} px tiles; using {}x{} (raise --tile-memory)",
               req.max_memory_gb, tr, tc, std::max(tr, floor_r), std::max(tc, floor_c));
      tr = std::max(tr, floor_r);
      tc = std::max(tc, floor_c);
    }
  }

  // Overlap matters only along an axis that is cut into several tiles.
  int64_t overlap = req.overlap >= 0 ? req.overlap : kAutoOverlap;
  const int64_t smallest_cut = std::min(tr < rows ? tr : INT64_MAX, tc < cols ? tc : INT64_MAX);
  if (smallest_cut != INT64_MAX) {
    if (req.overlap < 0) {
      overlap = std::min(overlap, smallest_cut / 4);
    } else if (2 * overlap > smallest_cut) {
      throw_input("tile overlap {} px must be at most half the tile ({} px)", overlap, smallest_cut);
    }
  }

  // Automatic tiles are never larger than needed: shrink to the smallest edge that keeps
  // the same tile count.
  if (auto_tile) {
    auto shrink = [&](int64_t t, int64_t n) {
      if (t >= n) return t;
      const int64_t count = static_cast<int64_t>(tile_spans(n, t, overlap).size());
      int64_t s = ceil_div(n + (count - 1) * overlap, count);
      if (mult > 1) s = ceil_div(s, mult) * mult;
      s = std::min(s, t);
      if (2 * overlap <= s && static_cast<int64_t>(tile_spans(n, s, overlap).size()) == count) return s;
      return t;
    };
    tr = shrink(tr, rows);
    tc = shrink(tc, cols);
  }

  TilePlan plan;
  plan.tile_rows = tr;
  plan.tile_cols = tc;
  plan.overlap = smallest_cut == INT64_MAX ? 0 : overlap;
  plan.row_spans = tile_spans(rows, tr, plan.overlap);
  plan.col_spans = tile_spans(cols, tc, plan.overlap);
  const double tile_bytes = static_cast<double>(tr) * static_cast<double>(tc) * bpp;
  if (req.batch > 0) {
    plan.batch = req.batch;
  } else {
    int64_t b = std::min<int64_t>(static_cast<int64_t>(std::floor(budget / tile_bytes)), kMaxAutoBatch);
    if (req.max_batch_pixels > 0) b = std::min<int64_t>(b, req.max_batch_pixels / (tr * tc));
    plan.batch = std::max<int64_t>(1, b);
  }
  plan.bytes_per_batch = static_cast<double>(plan.batch) * tile_bytes + req.cost.fixed_bytes;
  if (plan.bytes_per_batch > req.max_memory_gb * kGiB)
    log_warn("tiles of {}x{} px in batches of {} need about {:.2f} GB, above the {} GB budget", tr, tc,
             plan.batch, plan.bytes_per_batch / kGiB, req.max_memory_gb);
  return plan;
}

at::Tensor restore_planes(const at::Tensor& planes_in, const SliceRestorer& restorer,
                          const TilePlan& plan, c10::Device device,
                          const std::function<void(int64_t)>& on_batch) {
  if (planes_in.dim() != 3) throw_error("restore_planes: expected P x H x W planes, got {}", shape_str(planes_in));
  if (!restorer) throw_error("restore_planes: no restorer");
  const at::Tensor planes = planes_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t n_planes = planes.size(0), rows = planes.size(1), cols = planes.size(2);
  auto covers = [](const std::vector<TileSpan>& s, int64_t n) {
    return !s.empty() && s.front().start == 0 && s.back().start + s.back().length == n;
  };
  if (!covers(plan.row_spans, rows) || !covers(plan.col_spans, cols))
    throw_error("restore_planes: tile plan does not match planes {}", shape_str(planes));
  const int64_t batch = std::max<int64_t>(1, plan.batch);

  // in: B x h x w on the host -> restored B x h x w on the host, contiguous float32.
  auto run = [&](const at::Tensor& in) {
    const at::Tensor x = in.unsqueeze(1).to(device, at::kFloat).contiguous();
    const at::Tensor y = restorer(x);
    if (!y.defined() || y.sizes() != x.sizes())
      throw_error("the network returned {} for a batch of {}", y.defined() ? shape_str(y) : "nothing",
                  shape_str(x));
    return y.squeeze(1).to(at::kCPU, at::kFloat).contiguous();
  };

  at::Tensor out = at::zeros({n_planes, rows, cols}, at::kFloat);
  if (plan.tiles_per_plane() == 1) {
    for (int64_t p0 = 0; p0 < n_planes; p0 += batch) {
      const int64_t b = std::min(batch, n_planes - p0);
      out.narrow(0, p0, b).copy_(run(planes.narrow(0, p0, b)));
      if (on_batch) on_batch(b);
      check_interrupted();
    }
    return out;
  }

  const auto wr = blend_weights(rows, plan.row_spans, plan.overlap);
  const auto wc = blend_weights(cols, plan.col_spans, plan.overlap);
  const int64_t tr = plan.tile_rows, tc = plan.tile_cols;
  for (const auto& s : plan.row_spans)
    if (s.length != tr) throw_error("restore_planes: row tile {} != {}", s.length, tr);
  for (const auto& s : plan.col_spans)
    if (s.length != tc) throw_error("restore_planes: column tile {} != {}", s.length, tc);

  struct Tile { int64_t p; size_t i, j; };
  std::vector<Tile> tiles;
  tiles.reserve(static_cast<size_t>(n_planes * plan.tiles_per_plane()));
  for (int64_t p = 0; p < n_planes; ++p)
    for (size_t i = 0; i < plan.row_spans.size(); ++i)
      for (size_t j = 0; j < plan.col_spans.size(); ++j) tiles.push_back({p, i, j});

  // Cropping and blending are plain loops over host memory: per-tile tensor ops would
  // cost more than the copies themselves for small tiles.
  const float* src = planes.data_ptr<float>();
  float* acc = out.data_ptr<float>();
  for (size_t t0 = 0; t0 < tiles.size(); t0 += static_cast<size_t>(batch)) {
    const int64_t b = static_cast<int64_t>(std::min(tiles.size() - t0, static_cast<size_t>(batch)));
    at::Tensor crops = at::empty({b, tr, tc}, at::kFloat);
    float* dst = crops.data_ptr<float>();
    for (int64_t k = 0; k < b; ++k)
      for (int64_t r = 0; r < tr; ++r) {
        const Tile& tl = tiles[t0 + static_cast<size_t>(k)];
        const int64_t r0 = plan.row_spans[tl.i].start, c0 = plan.col_spans[tl.j].start;
        std::memcpy(dst + (k * tr + r) * tc, src + (tl.p * rows + r0 + r) * cols + c0,
                    static_cast<size_t>(tc) * sizeof(float));
      }
    const at::Tensor res = run(crops);
    const float* o = res.data_ptr<float>();
    // Serial on purpose: an OpenMP region per tile costs more than the blend itself on a
    // busy machine (measured: 5x slower), and tiles of one batch may overlap.
    for (int64_t k = 0; k < b; ++k) {
      const Tile& tl = tiles[t0 + static_cast<size_t>(k)];
      const int64_t r0 = plan.row_spans[tl.i].start, c0 = plan.col_spans[tl.j].start;
      const float* wrow = wr[tl.i].data();
      const float* wcol = wc[tl.j].data();
      for (int64_t r = 0; r < tr; ++r) {
        const float w = wrow[r];
        if (w == 0.f) continue;
        float* a = acc + (tl.p * rows + r0 + r) * cols + c0;
        const float* y = o + (k * tr + r) * tc;
        for (int64_t c = 0; c < tc; ++c) a[c] += y[c] * (w * wcol[c]);
      }
    }
    if (on_batch) on_batch(b);
    check_interrupted();
  }
  return out;
}

SliceRestorer pad_small_slices(SliceRestorer restorer, int64_t min_size) {
  return [r = std::move(restorer), min_size](const at::Tensor& x) -> at::Tensor {
    const int64_t h = x.size(2), w = x.size(3);
    const int64_t ph = std::max<int64_t>(0, min_size - h), pw = std::max<int64_t>(0, min_size - w);
    if (!ph && !pw) return r(x);
    // replication_pad2d takes (left, right, top, bottom).
    const at::Tensor y = r(at::replication_pad2d(x, {0, pw, 0, ph}));
    if (y.dim() != 4 || y.size(2) != h + ph || y.size(3) != w + pw)
      throw_error("the network returned {} for a padded batch of {}x{} slices", shape_str(y), h + ph, w + pw);
    return y.narrow(2, 0, h).narrow(3, 0, w);
  };
}

void fuse_into(at::Tensor& acc, const at::Tensor& other, Fuse f) {
  if (acc.sizes() != other.sizes())
    throw_error("fuse: shapes differ, {} and {}", shape_str(acc), shape_str(other));
  if (f == Fuse::Mean) {
    acc.add_(other).mul_(0.5);
  } else {
    acc.clamp_min_(0).mul_(other.clamp_min(0)).sqrt_();
  }
}

}  // namespace isoprompt
