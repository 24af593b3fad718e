// Real-data results table (run by hand, not in CI; see bench/real_data.sh): simulates z
// anisotropy on ../shared/data volumes by averaging z-slices, restores them with cubic,
// zero-shot, prompt tuning and full fine-tuning, and writes a Markdown table.
//
//   build/bench/bench_real_data [--out docs/RESULTS.md] [--backbone FILE] [--tune-seconds S]
//                               [--steps N] [--threads T] [--cases fib25x4,fib25x8,cells3dx4]
//                               [--methods cubic,zero-shot,prompt,prompt-both,full,unet]
//
// Cases: fib25x4, fib25x8, fib25x10 (EM), cells3dx4 (fluorescence), and two sparse,
// high-dynamic-range fluorescence stacks of the pretraining corpus's held-out split at x2
// (beadsx2: fluo_beads_3d_mpicbg, dnax2: fluo_dna_confocal_neubias), which the backbone
// never saw.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
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

struct Row {
  std::string case_id, method;
  double psnr = 0, psnr_xz = 0, ssim_xz = 0;
  std::string note;  // appended to the method in the table
  int64_t trainable = 0, steps = 0;
  double tune_s = 0, infer_s = 0;
};

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

Volume restore(const Volume& lr, double K, PromptedModel& m, const std::optional<Normalizer>& norm) {
  ReconstructParams rp;
  rp.factor = K;
  rp.interp = backbone_input_interp(m.backbone());  // what the backbone was pretrained on
  rp.norm = norm;
  rp.out_dtype = DType::F32;
  return reconstruct_with_model(lr, rp, m);
}

Volume restore(const Volume& lr, double K, UNet& net, const Normalizer& norm, Interp interp) {
  ReconstructParams rp;
  rp.factor = K;
  rp.interp = interp;  // the one it trained on
  rp.norm = norm;
  rp.out_dtype = DType::F32;
  return reconstruct_with_model(lr, rp, net);
}

const char* method_name(TuneParams::Mode m) {
  switch (m) {
    case TuneParams::Mode::Full:
      return "full fine-tuning";
    case TuneParams::Mode::UNet:
      return "CARE U-Net (from scratch)";
    case TuneParams::Mode::Prompt:
      break;
  }
  return "prompt";
}

Row score(const std::string& id, const std::string& method, const Volume& gt, const Volume& pred) {
  const EvalReport e = evaluate(gt, pred, EvalOptions{});
  Row r;
  r.case_id = id;
  r.method = method;
  r.psnr = e.overall.psnr;
  r.psnr_xz = e.xz.psnr;
  r.ssim_xz = e.xz.ssim;
  std::fprintf(stderr, "%s %s: PSNR %.2f dB, XZ PSNR %.2f dB, XZ SSIM %.4f\n", id.c_str(), method.c_str(), r.psnr,
               r.psnr_xz, r.ssim_xz);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out = "docs/RESULTS.md", backbone_path = std::string(ISO_SOURCE_DIR) + "/models/isoprompt-default.safetensors";
  std::string cases_arg = "fib25x4,fib25x8,cells3dx4";
  std::string methods_arg = "cubic,zero-shot,prompt,full,unet";
  double tune_seconds = 240;
  int64_t steps = 1000;
  int threads = 0;
  std::string cmdline;
  for (int i = 0; i < argc; ++i) cmdline += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--out") out = v;
    else if (a == "--backbone") backbone_path = v;
    else if (a == "--tune-seconds") tune_seconds = std::stod(v);
    else if (a == "--steps") steps = std::stoll(v);
    else if (a == "--threads") threads = std::stoi(v);
    else if (a == "--cases") cases_arg = v;
    else if (a == "--methods") methods_arg = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  set_threads(threads);
  const std::string data = std::string(ISO_SHARED_DIR) + "/data/";
  const std::vector<Case> all{{"fib25x4", "fib25_sample1_8nm.tif", 4},
                              {"fib25x8", "fib25_sample1_8nm.tif", 8},
                              {"fib25x10", "fib25_sample1_8nm.tif", 10},
                              {"cells3dx4", "cells3d_nucleus_crop.tif", 4},
                              {"beadsx2", "pretrain/fluo_beads_3d_mpicbg.tif", 2},
                              {"dnax2", "pretrain/fluo_dna_confocal_neubias.tif", 2}};
  auto listed = [](const std::string& list, const std::string& item) {
    std::stringstream ss(list);
    for (std::string x; std::getline(ss, x, ',');)
      if (x == item) return true;
    return false;
  };
  try {
    Backbone bb = load_backbone(backbone_path);
    std::vector<Row> rows;
    for (const Case& c : all) {
      if (!listed(cases_arg, c.id)) continue;
      Volume gt = read_volume(data + c.file);
      const int64_t nz = gt.nz() / c.factor * c.factor;  // whole number of acquired planes
      gt = crop(gt, {0, 0, 0}, {nz, gt.ny(), gt.nx()});
      const Volume lr = downsample(gt, 0, c.factor);
      auto t0 = std::chrono::steady_clock::now();
      if (listed(methods_arg, "cubic")) {
        Row cub = score(c.id, "cubic", gt, upsample(lr, 0, c.factor, Interp::BSpline3, gt.nz()));
        cub.infer_s = since(t0);
        rows.push_back(cub);
      }
      if (listed(methods_arg, "zero-shot")) {
        PromptedModel zero(bb, PromptConfig{}, false);
        t0 = std::chrono::steady_clock::now();
        const Volume zs = restore(lr, c.factor, zero, std::nullopt);
        Row z = score(c.id, "zero-shot", gt, zs);
        z.infer_s = since(t0);
        rows.push_back(z);
      }

      // The U-Net (CARE's recipe) trains from scratch on the same pairs and time budget.
      // prompt-both: deep prompts (before every stage and the tail, `--prompt-at both`).
      for (const char* method : {"prompt", "prompt-both", "full", "unet"}) {
        if (!listed(methods_arg, method)) continue;
        const std::string m = method;
        const auto mode = m == "full"   ? TuneParams::Mode::Full
                          : m == "unet" ? TuneParams::Mode::UNet
                                        : TuneParams::Mode::Prompt;
        TuneParams tp;
        tp.mode = mode;
        if (m == "prompt-both") tp.prompt.placement = PromptConfig::Placement::Both;
        tp.interp = backbone_input_interp(bb);
        tp.factor = c.factor;
        tp.steps = steps;
        tp.time_budget_s = tune_seconds;
        t0 = std::chrono::steady_clock::now();
        TuneResult tr = tune(lr, bb, tp);
        const double tune_s = since(t0);
        t0 = std::chrono::steady_clock::now();
        const Volume pred = mode == TuneParams::Mode::UNet
                                ? restore(lr, c.factor, tr.unet, tr.info.norm, tp.interp)
                                : restore(lr, c.factor, tr.model, tr.info.norm);
        Row r = score(c.id, m == "prompt-both" ? "prompt (--prompt-at both)" : method_name(mode), gt, pred);
        r.infer_s = since(t0);
        r.tune_s = tune_s;
        r.trainable = mode == TuneParams::Mode::Prompt ? tr.model.prompt_parameter_count()
                      : mode == TuneParams::Mode::UNet ? tp.unet.parameter_count()
                                                       : bb.config.parameter_count();
        r.steps = tr.steps_run;
        rows.push_back(r);
        if (m == "prompt") {
          // What `restore` writes with its defaults: the tuned model, or the interpolation when
          // the model was not better on the stack's own held-out pairs (--fallback interp).
          Row rs = r;
          rs.method = "restore (prompt or fallback)";
          if (!model_beats_interpolation(tr.info)) {
            const Row ip = score(c.id, rs.method, gt, upsample(lr, 0, c.factor, tr.info.interp, gt.nz()));
            rs.psnr = ip.psnr;
            rs.psnr_xz = ip.psnr_xz;
            rs.ssim_xz = ip.ssim_xz;
            rs.note = " (wrote the interpolation)";
          }
          rows.push_back(rs);
        }
      }
    }
    std::time_t now = std::time(nullptr);
    char date[32];
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    std::ostringstream md;
    md << "# Results on real data\n\n"
       << "Generated " << date << " by `" << cmdline << "` (bench/real_data.sh), backbone `"
       << bb.name << "` (" << bb.config.parameter_count() << " parameters), "
       << (threads ? threads : hardware_threads()) << " threads.\n\n"
       << "Protocol: ground truth cropped to a whole number of K-planes along z, z averaged over K "
          "slices (as `isoprompt simulate --model average`), restored to the GT grid; metrics "
          "after mapping "
          "both volumes with the GT's 0.1/99.9 percentiles to [0, 1] (clipped). SSIM and the XZ "
          "PSNR are "
          "means over XZ planes. `cubic` is the cubic B-spline (`baseline --method cubic`). Tuning "
          "(prompt and "
          "full alike, and CARE's U-Net trained from scratch on the same pairs, `--mode unet`): at "
          "most "
       << steps << " steps and " << tune_seconds
       << " s per volume, default settings (Adam, auto rate with cosine decay: 3e-2 for the "
          "prompt, 3e-4 for "
          "full fine-tuning, 4e-4 for the U-Net; the prompt's size is auto, at most 10% of the "
          "backbone). Inference covers the XZ and "
          "YZ passes and their fusion.\n\n"
       << "| data | method | PSNR (dB) | XZ PSNR (dB) | XZ SSIM | trainable params | tuning steps "
          "| tuning (s) | "
          "inference (s) |\n"
       << "|---|---|---|---|---|---|---|---|---|\n";
    for (const Row& r : rows)
      md << fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.4f} | {} | {} | {:.0f} | {:.0f} |\n", r.case_id, r.method + r.note,
                        r.psnr, r.psnr_xz, r.ssim_xz, r.trainable, r.steps, r.tune_s, r.infer_s);
    // The goals, per case, from the rows above (a missing method is left blank).
    md << "\n## Against the goals\n\n"
       << "| data | zero-shot − cubic (dB) | prompt − cubic (dB) | prompt − zero-shot (dB) | prompt − full (dB) "
          "| prompt − U-Net (dB) | prompt (both) − cubic (dB) | restore − cubic (dB) | prompt tuning + inference (s) |\n"
       << "|---|---|---|---|---|---|---|---|---|\n";
    std::vector<std::string> case_ids;
    for (const Row& r : rows)
      if (std::find(case_ids.begin(), case_ids.end(), r.case_id) == case_ids.end()) case_ids.push_back(r.case_id);
    for (const std::string& id : case_ids) {
      auto find = [&](const std::string& method) -> const Row* {
        for (const Row& r : rows)
          if (r.case_id == id && r.method == method) return &r;
        return nullptr;
      };
      auto diff = [&](const char* a, const char* b) {
        const Row *x = find(a), *y = find(b);
        return x && y ? fmt::format("{:+.2f}", x->psnr - y->psnr) : std::string();
      };
      const Row* pr = find("prompt");
      md << fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", id, diff("zero-shot", "cubic"),
                        diff("prompt", "cubic"), diff("prompt", "zero-shot"), diff("prompt", "full fine-tuning"),
                        diff("prompt", "CARE U-Net (from scratch)"), diff("prompt (--prompt-at both)", "cubic"),
                        diff("restore (prompt or fallback)", "cubic"),
                        pr ? fmt::format("{:.0f}", pr->tune_s + pr->infer_s) : std::string());
    }
    std::ofstream(out) << md.str();
    std::printf("%s\nwrote %s\n", md.str().c_str(), out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
