// `isoprompt tune`: self-supervised prompt tuning of a frozen backbone on one stack.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <torch/types.h>

#include "common_args.h"
#include "commands.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/train.h"

namespace isoprompt::cli {

namespace {

struct TuneArgs {
  std::string input, output, backbone = "default", factor = "auto", crop = "64-128";
  std::string prompt_at = "tail", mode = "prompt", degrade = "average", interp = "keys";
  std::string voxel_size, resume;
  double psf_fwhm = 0, psf_sigma = 0;
  TuneParams p;
};

void run_tune(TuneArgs& a) {
  apply_globals();
  TuneParams& p = a.p;
  // Validate everything before any work.
  check_input_file(a.input);
  check_output_path(a.output, {a.input});
  p.factor = parse_factor(a.factor);
  parse_crop(a.crop, p.crop_min, p.crop_max);
  p.prompt.placement = parse_placement(a.prompt_at);
  p.mode = parse_tune_mode(a.mode);
  p.interp = parse_interp(a.interp);
  if (a.degrade == "average") {
    p.degrade.model = DegradeParams::Average;
    if (a.psf_fwhm > 0 || a.psf_sigma > 0) throw_input("--psf-fwhm/--psf-sigma need --degrade psf");
  } else if (a.degrade == "psf") {
    p.degrade.model = DegradeParams::Psf;
    if ((a.psf_fwhm > 0) == (a.psf_sigma > 0))
      throw_input("--degrade psf needs exactly one of --psf-fwhm UM or --psf-sigma PX");
    p.degrade.psf_fwhm_um = a.psf_fwhm;
    p.degrade.psf_sigma_px = a.psf_sigma;
  } else {
    throw_input("--degrade expects average or psf, got '{}'", a.degrade);
  }
  if (!a.resume.empty()) {
    check_input_file(a.resume, "prompt file");
    p.resume_from = a.resume;
  }
  const torch::Device device = parse_device(globals().device);
  const std::string backbone_path = resolve_backbone_path(a.backbone);

  Volume vol = read_volume(a.input);
  if (!a.voxel_size.empty()) {
    double vs[3];
    parse_triple(a.voxel_size, "--voxel-size", vs);
    vol.set_voxel_size({vs[0], vs[1], vs[2]});
  }
  Backbone bb = load_backbone(backbone_path, device);
  log_info("tuning {} on {} ({} {}, voxel {} x {} x {} {})", bb.name, a.input, to_string(vol.shape()),
           dtype_name(vol.dtype()), vol.voxel_size().z, vol.voxel_size().y, vol.voxel_size().x,
           vol.unit());

  TuneResult r = tune(vol, bb, p);
  save_prompt(a.output, r);
  const PromptInfo& i = r.info;
  const int64_t n = r.model.has_prompts() ? r.model.prompt_parameter_count()
                                          : r.model.backbone().config.parameter_count();
  std::printf("wrote %s: %s, K %.4g, %lld steps, best at step %lld\n", a.output.c_str(),
              i.mode == TuneParams::Mode::Full ? "fully tuned backbone" : "prompt", i.factor,
              static_cast<long long>(i.steps), static_cast<long long>(i.best_step));
  std::printf("validation PSNR %.2f dB (zero-shot %.2f, %s %.2f), %lld trainable parameters "
              "(%.2f%% of the backbone's %lld)\n",
              i.val_psnr, i.zero_shot_psnr, interp_name(i.interp), i.interp_psnr,
              static_cast<long long>(n), 100.0 * n / std::max<int64_t>(1, bb.config.parameter_count()),
              static_cast<long long>(bb.config.parameter_count()));
  std::fflush(stdout);
  if (r.cancelled) {
    std::fprintf(stderr, "\ninterrupted: saved the best state so far (step %lld) to %s\n",
                 static_cast<long long>(i.best_step), a.output.c_str());
    std::fflush(stderr);
    std::exit(130);
  }
}

}  // namespace

void register_tune_command(CLI::App& app) {
  auto a = std::make_shared<TuneArgs>();
  auto* sub = app.add_subcommand("tune", "tune a prompt for one stack (self-supervised, on its own XY slices)");
  sub->add_option("input", a->input, "anisotropic stack (TIFF)")->required();
  sub->add_option("-o,--output", a->output, "prompt file to write (.safetensors)")->required();
  sub->add_option("--backbone", a->backbone, "model file, or 'default'")->capture_default_str();
  sub->add_option("--factor", a->factor, "anisotropy K = z-step / xy-pixel, or 'auto' (from the voxel size)")
      ->capture_default_str();
  sub->add_option("--voxel-size", a->voxel_size, "override the file's voxel size: z,y,x");
  sub->add_option("--steps", a->p.steps, "optimiser steps")->capture_default_str()->check(CLI::Range(0, 100000000));
  sub->add_option("--lr", a->p.lr, "Adam learning rate (0 = auto: 3e-2 for a prompt, 3e-4 for --mode full)")->capture_default_str();
  sub->add_option("--min-lr-ratio", a->p.min_lr_ratio, "cosine decay of the rate to lr x ratio by the end (1 = constant)")
      ->capture_default_str();
  sub->add_option("--batch", a->p.batch, "crops per step")->capture_default_str()->check(CLI::Range(1, 4096));
  sub->add_option("--crop", a->crop, "crop side in px: N or MIN-MAX (multiples of 8 are drawn)")
      ->capture_default_str();
  sub->add_option("--prompts", a->p.prompt.num_prompts, "number of prompts N (0 = auto: 16, halved with d until the module is <= 10% of the backbone)")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  sub->add_option("--attn-dim", a->p.prompt.attn_dim, "attention dimension d (0 = auto: 64, see --prompts)")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  sub->add_option("--query-rank", a->p.prompt.query_rank, "channels per pixel feeding the query (0 = dense)")
      ->capture_default_str()->check(CLI::Range(0, 4096));
  sub->add_option("--prompt-at", a->prompt_at, "tail | stages | both")->capture_default_str();
  sub->add_option("--mode", a->mode, "prompt (the method) | full (train every backbone weight)")
      ->capture_default_str();
  sub->add_option("--degrade", a->degrade, "degradation model for the pairs: average | psf")->capture_default_str();
  sub->add_option("--psf-fwhm", a->psf_fwhm, "axial PSF FWHM in the volume's unit (with --degrade psf)");
  sub->add_option("--psf-sigma", a->psf_sigma, "axial PSF sigma in pixels (with --degrade psf)");
  sub->add_option("--interp", a->interp,
                  "interpolation used for z: nearest | linear | keys | cubic | lanczos (keys: the backbone's)")
      ->capture_default_str();
  sub->add_option("--cache-crops", a->p.cache_crops, "crops in the feature cache (0 = off)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--eval-every", a->p.eval_every, "steps between validations")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--seed", a->p.seed, "random seed")->capture_default_str();
  sub->add_option("--resume", a->resume, "continue from this prompt file");
  sub->add_option("--time-budget", a->p.time_budget_s, "stop after this many seconds (0 = no limit)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->callback([a] { run_tune(*a); });
}

}  // namespace isoprompt::cli
