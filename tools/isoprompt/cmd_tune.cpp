// `isoprompt tune`: self-supervised prompt tuning of a frozen backbone on one stack.
#include <torch/types.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "commands.h"
#include "common_args.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/restore.h"
#include "isoprompt/train.h"

namespace isoprompt::cli {

namespace {

struct TuneArgs {
  std::string input, output, backbone = "default", factor = "auto", mode = "prompt",
                             interp = "auto";
  std::string voxel_size, nan = "refuse";
  TuneFlags flags;
  TuneParams p;
};

void run_tune(TuneArgs& a) {
  apply_globals();
  TuneParams& p = a.p;
  // Validate everything before any work.
  check_input_volume(a.input);
  check_output_path(
      a.output, {a.input, a.backbone == "default" ? std::string() : a.backbone, a.flags.resume});
  p.factor = parse_factor(a.factor);
  apply_tune_flags(a.flags, p);
  p.mode = parse_tune_mode(a.mode);
  const bool unet = p.mode == TuneParams::Mode::UNet;
  if (unet && a.backbone != "default")
    throw_input("--backbone cannot be used with --mode unet (the U-Net trains from scratch)");
  if (unet && !p.resume_from.empty()) throw_input("--resume is only supported with --mode prompt");
  if (a.interp != "auto") parse_interp(a.interp);  // validated before any work
  const torch::Device device = parse_device(globals().device);
  const std::string backbone_path = unet ? std::string() : resolve_backbone_path(a.backbone);

  ReadOptions ro;
  ro.nan = parse_nan_policy(a.nan);
  Volume vol = read_volume(a.input, ro);
  if (!a.voxel_size.empty()) {
    double vs[3];
    parse_triple(a.voxel_size, "--voxel-size", vs);
    vol.set_voxel_size({vs[0], vs[1], vs[2]});
  }
  Backbone bb;  // none for a U-Net
  if (!unet) bb = load_backbone(backbone_path, device);
  p.interp = resolve_interp(a.interp, unet ? nullptr : &bb);
  p.device = device;
  log_info("tuning {} on {} ({} {}, voxel {} x {} x {} {})", unet ? "a U-Net" : bb.name, a.input,
           to_string(vol.shape()), dtype_name(vol.dtype()), vol.voxel_size().z, vol.voxel_size().y,
           vol.voxel_size().x, vol.unit());

  TuneResult r = unet ? tune(vol, p) : tune(vol, bb, p);
  if (r.cancelled && !r.evaluated) {
    // Nothing tuned yet: an existing prompt file must not be replaced by an untrained one.
    std::fprintf(stderr, "\ninterrupted before the first validation: %s was not written\n",
                 a.output.c_str());
    std::fflush(stderr);
    std::exit(130);
  }
  save_prompt(a.output, r);
  const PromptInfo& i = r.info;
  if (unet) {
    std::printf("wrote %s: U-Net, K %.4g, %lld steps, best at step %lld\n", a.output.c_str(),
                i.factor, static_cast<long long>(i.steps), static_cast<long long>(i.best_step));
    std::printf("validation PSNR %.2f dB (untrained %.2f, %s %.2f), %lld trainable parameters\n",
                i.val_psnr, i.zero_shot_psnr, interp_name(i.interp), i.interp_psnr,
                static_cast<long long>(i.unet.parameter_count()));
  } else {
    const int64_t n = r.model.has_prompts() ? r.model.prompt_parameter_count()
                                            : r.model.backbone().config.parameter_count();
    std::printf("wrote %s: %s, K %.4g, %lld steps, best at step %lld\n", a.output.c_str(),
                i.mode == TuneParams::Mode::Full ? "fully tuned backbone" : "prompt", i.factor,
                static_cast<long long>(i.steps), static_cast<long long>(i.best_step));
    std::printf(
        "validation PSNR %.2f dB (zero-shot %.2f, %s %.2f), %lld trainable parameters "
        "(%.2f%% of the backbone's %lld)\n",
        i.val_psnr, i.zero_shot_psnr, interp_name(i.interp), i.interp_psnr,
        static_cast<long long>(n), 100.0 * n / std::max<int64_t>(1, bb.config.parameter_count()),
        static_cast<long long>(bb.config.parameter_count()));
  }
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
  auto* sub = app.add_subcommand(
      "tune", "tune a prompt for one stack (self-supervised, on its own XY slices)");
  sub->add_option("input", a->input, "anisotropic stack (TIFF)")->required();
  sub->add_option("-o,--output", a->output, "prompt file to write (.safetensors)")->required();
  sub->add_option("--backbone", a->backbone, "model file, or 'default'")->capture_default_str();
  sub->add_option("--factor", a->factor,
                  "anisotropy K = z-step / xy-pixel, or 'auto' (from the voxel size)")
      ->capture_default_str();
  sub->add_option("--voxel-size", a->voxel_size, "override the file's voxel size: z,y,x");
  sub->add_option("--mode", a->mode,
                  "prompt (the method) | full (train every backbone weight) | unet (CARE's U-Net "
                  "from scratch, no backbone)")
      ->capture_default_str();
  sub->add_option("--interp", a->interp,
                  "interpolation used for z: nearest | linear | keys | cubic | lanczos | auto (the "
                  "backbone's input "
                  "interpolation)")
      ->capture_default_str();
  add_tune_flags(sub, a->p, a->flags, "--batch");
  add_nan_flag(sub, a->nan);
  sub->callback([a] { run_tune(*a); });
}

}  // namespace isoprompt::cli
