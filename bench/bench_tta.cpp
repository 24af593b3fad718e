// Test-time augmentation and the uncertainty map on simulated data with ground truth (run by
// hand, not in CI; see bench/tta.sh). The protocol is bench_real_data's: ground truth cropped
// to whole K-planes, z averaged over K, restored to the GT grid, scored with `eval`'s
// protocol. Restoration is the shipped backbone zero-shot (no tuning, to keep it fast),
// without and with --tta, alternated `--repeats` times for the timing (medians, in one run).
// For each, the Spearman rank correlation between its uncertainty map and its actual
// absolute error |pred - gt| (raw intensities, every voxel), and the mean error of the 10%
// most uncertain voxels over the mean error. As a yardstick that needs no map: the same
// correlation for |pred - cubic|, the network's disagreement with plain interpolation.
// Prints a Markdown section for docs/RESULTS.md.
//
//   build/bench/bench_tta [--repeats N] [--threads T] [--cases fib25x4,cells3dx4] [--backbone FILE]
//                         [--crop-xy N]
//
// --crop-xy N keeps the central N x N pixels of volumes larger than that in x and y (all of z),
// for a machine too slow or too busy for the whole 250^3 FIB-SEM volume four times over.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "isoprompt/infer.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/metrics.h"
#include "isoprompt/ops.h"
#include "isoprompt/restore.h"
#include "isoprompt/runtime.h"
#include "isoprompt/train.h"

using namespace isoprompt;

namespace {

struct Case {
  std::string id, file;
  int factor;
};

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Ranks 1..n with ties given their average rank (Spearman's convention).
std::vector<double> ranks(const std::vector<float>& x) {
  std::vector<int64_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return x[size_t(a)] < x[size_t(b)]; });
  std::vector<double> r(x.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && x[size_t(idx[j + 1])] == x[size_t(idx[i])]) ++j;
    const double avg = 0.5 * double(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k) r[size_t(idx[k])] = avg;
    i = j + 1;
  }
  return r;
}

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = double(a.size());
  const double ma = std::accumulate(a.begin(), a.end(), 0.0) / n;
  const double mb = std::accumulate(b.begin(), b.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

std::vector<float> values(const Volume& v) {
  const float* d = v.data<float>();
  return std::vector<float>(d, d + v.numel());
}

std::vector<float> abs_diff(const Volume& a, const Volume& b) {
  std::vector<float> out(size_t(a.numel()));
  const float *x = a.data<float>(), *y = b.data<float>();
  for (size_t i = 0; i < out.size(); ++i) out[i] = std::abs(x[i] - y[i]);
  return out;
}

double spearman(const std::vector<float>& a, const std::vector<float>& b) {
  return pearson(ranks(a), ranks(b));
}

// Mean of `err` over the 10% of voxels with the largest `score`, over the mean of `err`.
double top_decile_ratio(const std::vector<float>& score, const std::vector<float>& err) {
  std::vector<int64_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  const size_t k = std::max<size_t>(1, score.size() / 10);
  std::nth_element(idx.begin(), idx.begin() + long(k), idx.end(),
                   [&](int64_t a, int64_t b) { return score[size_t(a)] > score[size_t(b)]; });
  double top = 0, all = 0;
  for (size_t i = 0; i < k; ++i) top += err[size_t(idx[i])];
  for (float e : err) all += e;
  return (top / double(k)) / (all / double(err.size()));
}

struct Run {
  Volume pred, umap;
  std::vector<double> seconds;
};

}  // namespace

int main(int argc, char** argv) {
  std::string backbone_path = std::string(ISO_SOURCE_DIR) + "/models/isoprompt-default.safetensors";
  std::string cases_arg = "fib25x4,cells3dx4";
  int repeats = 3, threads = 0;
  int64_t crop_xy = 0;
  std::string cmdline;
  for (int i = 0; i < argc; ++i) cmdline += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--backbone") backbone_path = v;
    else if (a == "--repeats") repeats = std::stoi(v);
    else if (a == "--threads") threads = std::stoi(v);
    else if (a == "--cases") cases_arg = v;
    else if (a == "--crop-xy") crop_xy = std::stoll(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (repeats < 1) {
    std::fprintf(stderr, "--repeats must be >= 1\n");
    return 2;
  }
  set_threads(threads);
  set_log_level(LogLevel::Warn);  // no progress bars: the timings are printed below
  const std::string data = std::string(ISO_SHARED_DIR) + "/data/";
  const std::vector<Case> all{{"fib25x4", "fib25_sample1_8nm.tif", 4},
                              {"cells3dx4", "cells3d_nucleus_crop.tif", 4}};
  try {
    Backbone bb = load_backbone(backbone_path);
    std::ostringstream table;
    for (const Case& c : all) {
      if (cases_arg.find(c.id) == std::string::npos) continue;
      Volume gt = read_volume(data + c.file);
      const int64_t nz = gt.nz() / c.factor * c.factor;  // whole number of acquired planes
      const int64_t cy = crop_xy > 0 ? std::min(crop_xy, gt.ny()) : gt.ny();
      const int64_t cx = crop_xy > 0 ? std::min(crop_xy, gt.nx()) : gt.nx();
      gt = crop(gt, {0, (gt.ny() - cy) / 2, (gt.nx() - cx) / 2}, {nz, cy, cx});
      const Volume lr = downsample(gt, 0, c.factor);
      const Volume gt32 = gt.dtype() == DType::F32 ? gt : normalize(gt, Normalizer{0, 1});
      const Volume cubic = upsample(lr, 0, c.factor, Interp::BSpline3, gt.nz());
      const Volume cubic32 = cubic.dtype() == DType::F32 ? cubic : normalize(cubic, Normalizer{0, 1});

      PromptedModel zero(bb, PromptConfig{}, false);
      Run plain, tta;
      for (int r = 0; r < repeats; ++r) {
        // Alternate the order (plain first on even repeats) so a drift in the machine's load
        // does not favour one side.
        for (int side = 0; side < 2; ++side) {
          const bool with_tta = (side == 1) != (r % 2 == 1);
          Run& run = with_tta ? tta : plain;
          ReconstructParams rp;
          rp.factor = c.factor;
          rp.out_dtype = DType::F32;
          rp.tta = with_tta;
          const auto t0 = std::chrono::steady_clock::now();
          run.pred = reconstruct_with_model(lr, rp, zero, nullptr, &run.umap);
          run.seconds.push_back(since(t0));
          std::fprintf(stderr, "%s %s repeat %d: %.1f s\n", c.id.c_str(), with_tta ? "tta" : "plain", r + 1,
                       run.seconds.back());
        }
      }
      const double p_cubic = evaluate(gt, cubic, EvalOptions{}).overall.psnr;
      const double p_plain = evaluate(gt, plain.pred, EvalOptions{}).overall.psnr;
      const double p_tta = evaluate(gt, tta.pred, EvalOptions{}).overall.psnr;
      const std::vector<float> e_plain = abs_diff(plain.pred, gt32), e_tta = abs_diff(tta.pred, gt32);
      const double s_plain = spearman(values(plain.umap), e_plain);
      const double s_tta = spearman(values(tta.umap), e_tta);
      const double s_cubic = spearman(abs_diff(tta.pred, cubic32), e_tta);
      const double d_plain = top_decile_ratio(values(plain.umap), e_plain);
      const double d_tta = top_decile_ratio(values(tta.umap), e_tta);
      const double t_plain = median(plain.seconds), t_tta = median(tta.seconds);
      std::fprintf(stderr,
                   "%s: PSNR cubic %.2f, zero-shot %.2f, +tta %.2f dB; time %.1f vs %.1f s (x%.2f); "
                   "spearman %.3f / %.3f (|pred-cubic| %.3f); top-decile error ratio %.2f / %.2f\n",
                   c.id.c_str(), p_cubic, p_plain, p_tta, t_plain, t_tta, t_tta / t_plain, s_plain, s_tta,
                   s_cubic, d_plain, d_tta);
      table << fmt::format(
          "| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:+.2f} | {:.1f} | {:.1f} | {:.2f} | {:.3f} | {:.3f} | "
          "{:.3f} | {:.2f} | {:.2f} |\n",
          c.id, to_string(gt.shape()), p_cubic, p_plain, p_tta, p_tta - p_plain, t_plain, t_tta,
          t_tta / t_plain, s_plain, s_tta, s_cubic, d_plain, d_tta);
    }
    std::printf(
        "Command: `%s` (%d threads, backbone `%s` zero-shot, %d alternated repeats per side; times are "
        "medians of whole reconstruct() calls, uncertainty map included on both sides).\n\n"
        "| data | GT shape | cubic PSNR (dB) | zero-shot PSNR (dB) | + TTA PSNR (dB) | TTA gain (dB) | "
        "time (s) | TTA time (s) | time ratio | Spearman(map, error) | Spearman(map, error), TTA | "
        "Spearman(\\|pred − cubic\\|, error), TTA | top-10%% error ratio | top-10%% error ratio, TTA |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n%s",
        cmdline.c_str(), threads ? threads : hardware_threads(), bb.name.c_str(), repeats, table.str().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
