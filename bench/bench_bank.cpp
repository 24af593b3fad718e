// Prompt-bank figures (run by hand, not in CI; see bench/bank.sh): what a prompt tuned on one
// stack is worth on another, scored as restore --bank scores it (the new stack's own held-out
// self-supervised pairs), and how many steps a warm start from it needs to reach a cold
// start's final validation PSNR. Prints the Markdown section of docs/RESULTS.md.
//
//   build/bench/bench_bank [--backbone FILE] [--steps N] [--threads T]
//
// Same kind: fib25_sample1 with z averaged x4, split in two halves along y (A, B); the prompt
// tuned on A is applied to B. Across kinds: a prompt tuned on cells3d_nucleus_crop (x4) is
// scored on neubias_nuclei (a real 4.8x stack, other microscope and sample), with A's EM
// prompt beside it in the bank.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include "isoprompt/bank.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/ops.h"
#include "isoprompt/restore.h"
#include "isoprompt/runtime.h"
#include "isoprompt/train.h"

using namespace isoprompt;

namespace {

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The first validated step at which the curve reaches `target` (-1: never).
int64_t steps_to_reach(const std::vector<std::pair<int64_t, double>>& curve, double target) {
  for (const auto& [step, psnr] : curve)
    if (psnr >= target) return step;
  return -1;
}

struct Run {
  TuneResult result;
  double seconds = 0;
};

Run run_tune(const Volume& v, Backbone& bb, TuneParams p, const std::string& resume = "") {
  p.resume_from = resume;
  const auto t0 = std::chrono::steady_clock::now();
  Run r{tune(v, bb, p), 0};
  r.seconds = since(t0);
  return r;
}

std::string db(double v) {
  return fmt::format("{:.2f}", v);
}

}  // namespace

int main(int argc, char** argv) {
  std::string backbone_path = std::string(ISO_SOURCE_DIR) + "/models/isoprompt-default.safetensors";
  int64_t steps = 400;
  int threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--backbone") backbone_path = argv[i + 1];
    else if (a == "--steps") steps = std::stoll(argv[i + 1]);
    else if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  set_threads(threads);
  const std::string data = std::string(ISO_SHARED_DIR) + "/data/";
  namespace fs = std::filesystem;
  const std::string work = (fs::temp_directory_path() / fmt::format("isoprompt-bank-{}", getpid())).string();
  fs::create_directories(work);
  try {
    Backbone bb = load_backbone(backbone_path);
    TuneParams base;
    base.interp = backbone_input_interp(bb);
    base.steps = steps;
    base.factor = 0;  // from each stack's voxel size

    // Same kind: two halves of one EM volume.
    Volume fib = read_volume(data + "fib25_sample1_8nm.tif");
    fib = crop(fib, {0, 0, 0}, {fib.nz() / 4 * 4, fib.ny(), fib.nx()});
    Volume fib_lr = downsample(fib, 0, 4);
    fib_lr.set_voxel_size({4.0, 1.0, 1.0});
    const int64_t half = fib_lr.ny() / 2;
    const Volume a = crop(fib_lr, {0, 0, 0}, {fib_lr.nz(), half, fib_lr.nx()});
    const Volume b = crop(fib_lr, {0, half, 0}, {fib_lr.nz(), fib_lr.ny() - half, fib_lr.nx()});

    const Run cold_a = run_tune(a, bb, base);
    save_prompt(work + "/fib25_a.prompt.safetensors", cold_a.result);
    BankEntry ea;
    ea.tag = "em";
    bank_add(work + "/bank", work + "/fib25_a.prompt.safetensors", ea);

    // Cells3d x4 (the prompt of another kind).
    Volume cells = read_volume(data + "cells3d_nucleus_crop.tif");
    cells = crop(cells, {0, 0, 0}, {cells.nz() / 4 * 4, cells.ny(), cells.nx()});
    Volume cells_lr = downsample(cells, 0, 4);
    cells_lr.set_voxel_size({4.0, 1.0, 1.0});
    const Run cold_cells = run_tune(cells_lr, bb, base);
    save_prompt(work + "/cells3d.prompt.safetensors", cold_cells.result);
    BankEntry ec;
    ec.tag = "nuclei";
    bank_add(work + "/bank", work + "/cells3d.prompt.safetensors", ec);
    const PromptBank bank = open_bank(work + "/bank");

    // B: the choice, 0 steps, a cold and a warm start.
    auto t0 = std::chrono::steady_clock::now();
    const BankChoice cb = choose_prompt(bank, b, bb, base);
    const double choose_b_s = since(t0);
    const Run cold_b = run_tune(b, bb, base);
    const Run warm_b = run_tune(b, bb, base, cb.best >= 0 ? cb.path : "");
    const double target = cold_b.result.info.val_psnr;
    const int64_t warm_steps = steps_to_reach(warm_b.result.val_history, target);

    // neubias_nuclei: nuclei like cells3d, but another microscope, sample and real anisotropy.
    Volume nuc = read_volume(data + "neubias_nuclei.tif");
    t0 = std::chrono::steady_clock::now();
    const BankChoice cn = choose_prompt(bank, nuc, bb, base);
    const double choose_n_s = since(t0);
    const Run cold_n = run_tune(nuc, bb, base);
    const Run warm_n = run_tune(nuc, bb, base, cn.best >= 0 ? cn.path : "");
    const double target_n = cold_n.result.info.val_psnr;

    auto ranking = [](const BankChoice& c) {
      std::string s;
      for (const auto& r : c.ranking)
        s += fmt::format("{}{} {} dB", s.empty() ? "" : ", ", r.name, db(r.val_psnr));
      return s;
    };
    std::printf("## Prompt bank: reuse across stacks\n\n");
    std::printf(
        "bench/bank.sh (bench_bank), backbone %s, %d threads, %lld steps per tuning run (validation "
        "every %lld), default restore settings otherwise. Scores are validation PSNR on each "
        "stack's own held-out self-supervised pairs (what `restore --bank` ranks by; no ground "
        "truth is used).\n\n",
        bb.name.c_str(), threads, static_cast<long long>(steps),
        static_cast<long long>(base.eval_every));
    std::printf("| target stack | interp | zero-shot | bank ranking (0 steps) | chosen | cold start, "
                "%lld steps | warm start reaches it at | choice time |\n",
                static_cast<long long>(steps));
    std::printf("|---|---|---|---|---|---|---|---|\n");
    auto row = [&](const char* name, const BankChoice& c, const Run& cold, const Run& warm,
                   double tgt, double choose_s) {
      const int64_t w = steps_to_reach(warm.result.val_history, tgt);
      const int64_t k = steps_to_reach(cold.result.val_history, tgt);
      std::printf("| %s | %s | %s | %s | %s | %s dB (step %lld) | %s | %.1f s |\n", name,
                  db(c.interp_psnr).c_str(), db(c.zero_shot_psnr).c_str(), ranking(c).c_str(),
                  c.best >= 0 ? bank.entries[static_cast<size_t>(c.best)].name.c_str() : "none",
                  db(tgt).c_str(), static_cast<long long>(k),
                  w < 0 ? fmt::format("not within {} steps (best {} dB)", cold.result.steps_run,
                                      db(warm.result.info.val_psnr))
                              .c_str()
                        : fmt::format("step {} ({:.0f}% of the cold start's {})", w,
                                      100.0 * static_cast<double>(w) /
                                          static_cast<double>(std::max<int64_t>(1, k)),
                                      k)
                              .c_str(),
                  choose_s);
    };
    row("fib25 x4, half B (bank: its half A)", cb, cold_b, warm_b, target, choose_b_s);
    row("neubias_nuclei (real 4.8x)", cn, cold_n, warm_n, target_n, choose_n_s);
    std::printf("\nTuning time per run: fib25 A %.0f s, cells3d %.0f s, fib25 B cold %.0f s / "
                "warm %.0f s, neubias cold %.0f s / warm %.0f s. Warm-start steps: %lld "
                "(fib25 B), %lld (neubias).\n",
                cold_a.seconds, cold_cells.seconds, cold_b.seconds, warm_b.seconds,
                cold_n.seconds, warm_n.seconds, static_cast<long long>(warm_steps),
                static_cast<long long>(steps_to_reach(warm_n.result.val_history, target_n)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    fs::remove_all(work);
    return 1;
  }
  fs::remove_all(work);
  return 0;
}
