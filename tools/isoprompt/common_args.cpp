#include "common_args.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <torch/cuda.h>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/pipeline.h"

namespace isoprompt::cli {

std::string resolve_backbone_path(const std::string& arg) {
  if (arg.empty() || arg == "default") return default_backbone_path();
  check_input_file(arg, "backbone file");
  return arg;
}

void parse_crop(const std::string& s, int64_t& crop_min, int64_t& crop_max) {
  long long a = 0, b = 0;
  char extra;
  if (std::sscanf(s.c_str(), "%lld-%lld%c", &a, &b, &extra) == 2) {
  } else if (std::sscanf(s.c_str(), "%lld%c", &a, &extra) == 1) {
    b = a;
  } else {
    throw_input("--crop expects N or MIN-MAX in pixels, got '{}'", s);
  }
  if (a < 8 || b < a || b > 4096) throw_input("--crop sizes must satisfy 8 <= MIN <= MAX <= 4096, got '{}'", s);
  crop_min = a;
  crop_max = b;
}

double parse_factor(const std::string& text) {
  if (text == "auto") return 0;
  char* end = nullptr;
  const double k = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(k) || k < 1 || k > 1000)
    throw_input("--factor must be 'auto' or a number in 1..1000 (z-step / xy-pixel), got '{}'", text);
  return k;
}

c10::Device parse_device(const std::string& text) {
  c10::Device d(c10::kCPU);
  try {
    d = c10::Device(text);
  } catch (const std::exception&) {
    throw_input("--device must be cpu, cuda or cuda:N, got '{}'", text);
  }
  if (d.is_cuda()) {
    const int64_t n = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    if (n == 0) throw_input("--device {}: no CUDA device is available (this LibTorch has no CUDA, or no GPU is visible)", text);
    if (d.has_index() && d.index() >= n)
      throw_input("--device {}: there {} only {} CUDA device{} (cuda:0..cuda:{})", text, n == 1 ? "is" : "are", n,
                  n == 1 ? "" : "s", n - 1);
  }
  return d;
}

void add_nan_flag(CLI::App* c, std::string& policy) {
  c->add_option("--nan", policy,
                "NaN/Inf voxels in a float32 input: refuse (the count and first position) or replace (by the "
                "median of their finite 3x3x3 neighbours)")
      ->capture_default_str()
      ->check(CLI::IsMember({"refuse", "replace"}));
}

const CLI::Validator& seed_validator() {
  static const CLI::Validator v(
      [](std::string& s) -> std::string {
        const bool digits = !s.empty() && s.size() <= 20 && s.find_first_not_of("0123456789") == std::string::npos;
        return digits ? "" : "must be a whole number from 0 to 18446744073709551615, got '" + s + "'";
      },
      "SEED");
  return v;
}

void add_tune_flags(CLI::App* c, TuneParams& p, TuneFlags& f, const std::string& batch_flag) {
  c->add_option("--steps", p.steps, "optimiser steps")->capture_default_str()->check(CLI::Range(0, 100000000));
  c->add_option("--lr", p.lr, "Adam learning rate (0 = auto: 3e-2 for a prompt, 3e-4 for --mode full)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  c->add_option("--min-lr-ratio", p.min_lr_ratio, "cosine decay of the rate to lr x ratio by the end (1 = constant)")
      ->capture_default_str();
  c->add_option(batch_flag, p.batch, "training crops per step")->capture_default_str()->check(CLI::Range(1, 4096));
  c->add_option("--crop", f.crop, "training crop side in px: N or MIN-MAX (multiples of 8 are drawn)")
      ->capture_default_str();
  c->add_option("--prompts", p.prompt.num_prompts,
                "number of prompts N (0 = auto: 16, halved with d until the module is <= 10% of the backbone)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  c->add_option("--attn-dim", p.prompt.attn_dim, "attention dimension d (0 = auto: 64, see --prompts)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  c->add_option("--query-rank", p.prompt.query_rank, "channels per pixel feeding the query (0 = dense)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  c->add_option("--prompt-at", f.prompt_at, "module placement: tail | stages | both")->capture_default_str();
  c->add_option("--degrade", f.degrade, "degradation model for the training pairs: average | psf")
      ->capture_default_str();
  c->add_option("--psf-fwhm", f.psf_fwhm, "axial PSF FWHM in the volume's unit (with --degrade psf)");
  c->add_option("--psf-sigma", f.psf_sigma, "axial PSF sigma in lateral pixels (with --degrade psf)");
  c->add_option("--cache-crops", p.cache_crops, "crops in the feature cache (0 = off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--eval-every", p.eval_every, "steps between validations")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--val-fraction", p.val_fraction, "fraction of z-planes held out for validation")
      ->capture_default_str();
  c->add_option("--min-val-planes", p.min_val_planes,
                "hold out at least this many planes, else validate on all of them (in-sample); "
                "0 = 3 for a prompt, 1 for --mode full and unet")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20))
      ->capture_default_str();
  c->add_option("--time-budget", p.time_budget_s, "stop tuning after this many seconds (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--seed", p.seed, "random seed (crops, flips, noise, prompt initialisation)")
      ->capture_default_str()
      ->check(seed_validator());
  c->add_option("--resume", f.resume, "continue tuning from this prompt file");
}

void apply_tune_flags(const TuneFlags& f, TuneParams& p) {
  parse_crop(f.crop, p.crop_min, p.crop_max);
  p.prompt.placement = parse_placement(f.prompt_at);
  if (f.degrade == "average") {
    p.degrade.model = DegradeParams::Average;
    if (f.psf_fwhm > 0 || f.psf_sigma > 0) throw_input("--psf-fwhm/--psf-sigma need --degrade psf");
  } else if (f.degrade == "psf") {
    p.degrade.model = DegradeParams::Psf;
    if ((f.psf_fwhm > 0) == (f.psf_sigma > 0))
      throw_input("--degrade psf needs exactly one of --psf-fwhm UM or --psf-sigma PX");
    p.degrade.psf_fwhm_um = f.psf_fwhm;
    p.degrade.psf_sigma_px = f.psf_sigma;
  } else {
    throw_input("--degrade must be average or psf, got '{}'", f.degrade);
  }
  if (!f.resume.empty()) {
    check_input_file(f.resume, "prompt file");
    p.resume_from = f.resume;
  }
}

}  // namespace isoprompt::cli
