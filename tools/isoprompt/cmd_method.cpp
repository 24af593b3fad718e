// `isoprompt predict` (isotropic reconstruction with a backbone, a prompt, a fully
// fine-tuned model, a U-Net or interpolation only) and `isoprompt restore` (tune + predict).
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "commands.h"
#include "common_args.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/infer.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/model.h"
#include "isoprompt/ops.h"
#include "isoprompt/restore.h"
#include "isoprompt/runtime.h"
#include "isoprompt/tensor.h"
#include "isoprompt/train.h"

namespace isoprompt::cli {

namespace {

std::string num(double v) {
  return fmt::format("{:.6g}", v);
}

enum class Mode { Prompt, ZeroShot, Full, UNet, Interp };

Mode parse_mode(const std::string& s) {
  if (s == "prompt") return Mode::Prompt;
  if (s == "zero-shot") return Mode::ZeroShot;
  if (s == "full") return Mode::Full;
  if (s == "unet") return Mode::UNet;
  if (s == "interp") return Mode::Interp;
  throw_input("unknown --mode '{}': expected prompt, zero-shot, full, unet or interp", s);
}

// The CLI mode of a tuned file.
Mode file_mode(const PromptInfo& info) {
  switch (info.mode) {
    case TuneParams::Mode::Full:
      return Mode::Full;
    case TuneParams::Mode::UNet:
      return Mode::UNet;
    case TuneParams::Mode::Prompt:
      break;
  }
  return Mode::Prompt;
}

const char* file_mode_text(Mode m) {
  return m == Mode::Full ? "fully fine-tuned" : m == Mode::UNet ? "U-Net" : "prompt";
}

const char* mode_text(Mode m) {
  switch (m) {
    case Mode::Prompt:
      return "prompt";
    case Mode::ZeroShot:
      return "zero-shot";
    case Mode::Full:
      return "full";
    case Mode::UNet:
      return "unet";
    case Mode::Interp:
      return "interp";
  }
  return "?";
}

// Flags shared by predict and restore.
struct ReconArgs {
  std::string in, out, backbone = "default", mode = "prompt", factor = "auto", interp = "auto";
  std::string fuse = "mean", dtype, nan = "refuse";
  std::string uncertainty;  // --uncertainty OUT: also write the uncertainty map
  bool tta = false;
  int64_t tile = 0, overlap = -1, batch = 0;
  double max_memory = 4.0;
  int channel = -1, time = -1;
  CLI::Option* interp_opt = nullptr;  // to know whether --interp was given
  CLI::Option* mode_opt = nullptr;
};

struct PredictArgs : ReconArgs {
  std::string prompt;
};

struct RestoreArgs : ReconArgs {
  std::string prompt_out, fallback = "interp";
  TuneParams tune;
  TuneFlags flags;
};

// Every file predict or restore reads (`other`: the prompt or the resumed prompt): no output
// may be one of them.
std::vector<std::string> recon_inputs(const ReconArgs& a, const std::string& other) {
  return {a.in, a.backbone == "default" ? std::string() : a.backbone, other};
}

// Validates everything that needs no file, before any work.
void check_recon_flags(const ReconArgs& a, const std::string& other_input) {
  if (parse_mode(a.mode) == Mode::Interp) {
    // Both are statements about a network's restorations; interpolation has none, and a
    // map of zeros would claim a certainty nobody measured.
    if (a.tta) throw_input("--tta needs a network: --mode interp has no restorations to average");
    if (!a.uncertainty.empty())
      throw_input(
          "--uncertainty needs a network: the map is the spread of the network's XZ and YZ "
          "restorations, and --mode interp has none");
  }
  parse_factor(a.factor);
  if (a.interp != "auto") parse_interp(a.interp);
  parse_fuse(a.fuse);
  if (!a.dtype.empty()) parse_dtype(a.dtype);
  if (a.tile != 0 && a.tile < 16)
    throw_input("--tile {} is too small: use 0 (automatic) or at least 16", a.tile);
  if (a.overlap < -1) throw_input("--overlap {} must be >= 0 (or -1 for automatic)", a.overlap);
  if (a.batch < 0) throw_input("--batch {} must be >= 0 (0 = automatic)", a.batch);
  if (!(a.max_memory > 0) || !std::isfinite(a.max_memory))
    throw_input("--max-memory {} must be a positive number of GB", a.max_memory);
  check_input_volume(a.in, "input file");
  check_output_path(a.out, recon_inputs(a, other_input));
  if (!a.uncertainty.empty()) {
    std::vector<std::string> inputs = recon_inputs(a, other_input);
    inputs.push_back(a.out);
    check_output_path(a.uncertainty, inputs);
  }
}

// What the uncertainty map is, for its file's provenance and the summary line.
std::string uncertainty_definition(bool tta) {
  return tta ? "standard deviation of the 8 restorations of each voxel (XZ and YZ, each as it is "
               "and flipped along x or y, z, both), output intensity units"
             : "standard deviation of the 2 restorations of each voxel (XZ and YZ), output "
               "intensity units";
}

Volume read_input(const ReconArgs& a, bool* calibrated) {
  ReadOptions ro;
  ro.channel = a.channel;
  ro.time = a.time;
  ro.nan = parse_nan_policy(a.nan);
  TiffFileInfo fi;
  Volume v = read_volume(a.in, ro, &fi);
  *calibrated = fi.calibrated;
  return v;
}

// The z factor: --factor K, or auto = z-step / xy-pixel from the calibration (or the
// prompt's factor for an uncalibrated stack). An uncalibrated stack gets voxel (K, 1, 1)
// so the output voxel is (1, 1, 1).
double resolve_factor(const ReconArgs& a, Volume& v, bool calibrated, double prompt_factor) {
  double k = parse_factor(a.factor);
  if (k == 0) {
    if (calibrated) {
      const VoxelSize& vs = v.voxel_size();
      k = vs.anisotropy();
      if (vs.y != vs.x)
        log_warn("pixels are not square (y {} vs x {}): using x", num(vs.y), num(vs.x));
      if (!(k >= 1))
        throw_input(
            "{}: z step {} is finer than the xy pixel {}: nothing to upsample (pass --factor K)",
            a.in, num(vs.z), num(vs.x));
      log_info("factor auto: z step {} / xy pixel {} = {}", num(vs.z), num(vs.x), num(k));
    } else if (prompt_factor > 0) {
      k = prompt_factor;
      log_info("factor auto: {} is uncalibrated, using the prompt's factor {}", a.in, num(k));
    } else {
      throw_input("{} has no voxel-size calibration, so --factor auto cannot work: pass --factor K",
                  a.in);
    }
  }
  if (!calibrated) {
    v.set_voxel_size({k, 1.0, 1.0});
    log_info("{} is uncalibrated: taking its voxel as {} x 1 x 1 pixel (z, y, x)", a.in, num(k));
  }
  if (prompt_factor > 0 && std::abs(prompt_factor - k) > 1e-9 * k)
    log_warn("the prompt was tuned for factor {}, reconstructing with factor {}",
             num(prompt_factor), num(k));
  return k;
}

ReconstructParams recon_params(const ReconArgs& a, double k, const Volume& v,
                               const Backbone* backbone) {
  ReconstructParams p;
  p.factor = k;
  p.interp = resolve_interp(a.interp, backbone);
  p.fuse = parse_fuse(a.fuse);
  p.tile = a.tile;
  p.overlap = a.overlap;
  p.batch = a.batch;
  p.max_memory_gb = a.max_memory;
  p.device = parse_device(globals().device);
  p.out_dtype = a.dtype.empty() ? v.dtype() : parse_dtype(a.dtype);
  p.tta = a.tta;
  return p;
}

void write_and_report(const ReconArgs& a, const Volume& out, Mode mode,
                      const ReconstructReport& rep, const std::string& extra, FileNotes notes,
                      const Volume* umap = nullptr) {
  const bool tta = rep.variants > 1;
  WriteOptions wo;
  wo.notes = {{"method", mode_text(mode)}, {"factor", num(rep.factor)}};
  if (tta) wo.notes.emplace_back("tta", "4 flips (none, x or y, z, both), averaged");
  wo.notes.insert(wo.notes.end(), notes.begin(), notes.end());
  write_volume(a.out, out, wo);
  const VoxelSize& s = out.voxel_size();
  std::printf("wrote %s  %s %s, voxel %s x %s x %s %s (mode %s, factor %s%s%s)\n", a.out.c_str(),
              to_string(out.shape()).c_str(), dtype_name(out.dtype()), num(s.z).c_str(),
              num(s.y).c_str(), num(s.x).c_str(), out.unit().c_str(), mode_text(mode),
              num(rep.factor).c_str(), extra.c_str(), tta ? ", tta" : "");
  if (!umap) return;
  // Written after the output: the map only makes sense next to it.
  WriteOptions uo;
  uo.notes = {{"method", mode_text(mode)},
              {"factor", num(rep.factor)},
              {"map", "uncertainty"},
              {"uncertainty", uncertainty_definition(tta)},
              {"output", a.out}};
  write_volume(a.uncertainty, *umap, uo);
  const at::Tensor u = to_float_tensor(*umap);
  std::printf("wrote %s  %s float32 uncertainty map (%s), mean %s, max %s\n", a.uncertainty.c_str(),
              to_string(umap->shape()).c_str(), tta ? "8 restorations" : "XZ vs YZ",
              num(u.mean().item<double>()).c_str(), num(u.max().item<double>()).c_str());
}

// Reconstructs `v` with `model` or `unet` (both null for interp) and writes the output.
void reconstruct_and_write(const ReconArgs& a, const Volume& v, Mode mode, double k,
                           PromptedModel* model, const c10::optional<Normalizer>& norm,
                           UNet* unet = nullptr, FileNotes notes = {}) {
  ReconstructParams p = recon_params(a, k, v, model ? &model->backbone() : nullptr);
  ReconstructReport rep;
  Volume out, umap;
  Volume* want_map = a.uncertainty.empty() ? nullptr : &umap;
  if (model) {
    p.norm = norm;
    out = reconstruct_with_model(v, p, *model, &rep, want_map);
  } else if (unet) {
    p.norm = norm;
    out = reconstruct_with_model(v, p, *unet, &rep, want_map);
  } else {
    // Only restore's fallback gets here with --tta or --uncertainty (check_recon_flags
    // refuses them with --mode interp): the output is the interpolation, so there is
    // nothing to augment and no spread to map.
    if (a.tta) log_warn("--tta has no effect: the output is the interpolation");
    if (want_map)
      log_warn("--uncertainty: {} is not written: the output is the interpolation, which has no "
               "restorations to compare",
               a.uncertainty);
    p.tta = false;
    want_map = nullptr;
    out = reconstruct(v, p, SliceRestorer(), &rep);
  }
  const std::string extra = mode == Mode::Interp ? fmt::format(", {}", interp_name(p.interp))
                                                 : fmt::format(", fuse {}", fuse_name(p.fuse));
  if (mode == Mode::Interp) notes.insert(notes.begin(), {"interp", interp_name(p.interp)});
  write_and_report(a, out, mode, rep, extra, std::move(notes), want_map);
}

// The U-Net trains from scratch: a --backbone beside it would be silently unused.
void refuse_backbone_for_unet(const ReconArgs& a) {
  if (a.backbone != "default")
    throw_input("--backbone cannot be used with --mode unet (the U-Net trains from scratch)");
}

// "zero-shot" names a prompt's or full model's start; a U-Net starts untrained.
const char* start_name(Mode m) {
  return m == Mode::UNet ? "untrained" : "zero-shot";
}

void run_predict(const PredictArgs& a) {
  apply_globals();
  check_recon_flags(a, a.prompt);
  Mode mode = parse_mode(a.mode);
  if (mode == Mode::Interp || mode == Mode::ZeroShot) {
    if (!a.prompt.empty()) throw_input("--prompt cannot be used with --mode {}", mode_text(mode));
  } else if (a.prompt.empty()) {
    throw_input(
        "--mode {} needs --prompt FILE (make one with `isoprompt tune` or `isoprompt restore "
        "--prompt-out`)",
        mode_text(mode));
  } else {
    check_input_file(a.prompt, "prompt file");
  }
  const c10::Device device = parse_device(globals().device);

  // Models first: a bad model file must fail before reading a large stack. The file's mode
  // decides what to load (a U-Net needs no backbone); the default --mode follows it.
  if (!a.prompt.empty()) {
    const Mode fm = file_mode(read_prompt_info(a.prompt));
    if (fm != mode) {
      if (a.mode_opt && a.mode_opt->count() > 0)
        throw_input("{} holds a {} model, not --mode {}: pass --mode {}", a.prompt,
                    file_mode_text(fm), mode_text(mode), mode_text(fm));
      mode = fm;
    }
  }
  Backbone backbone;
  PromptedModel model;
  UNet unet{nullptr};
  PromptInfo info;
  bool have_info = false;
  if (mode == Mode::UNet) {
    refuse_backbone_for_unet(a);
    LoadedPrompt lp = load_unet(a.prompt, device);
    unet = lp.unet;
    info = lp.info;
    have_info = true;
  } else if (mode != Mode::Interp) {
    const std::string path = resolve_backbone_path(a.backbone);
    backbone = load_backbone(path, device);
    log_info("backbone {} ({} parameters, hash {})", backbone.name,
             backbone.config.parameter_count(), backbone.hash.substr(0, 12));
    if (mode == Mode::ZeroShot) {
      model = PromptedModel(backbone, PromptConfig{}, false);
    } else {
      LoadedPrompt lp = load_prompt(a.prompt, backbone);
      model = lp.model;
      info = lp.info;
      have_info = true;
    }
  }
  if (have_info)
    log_info("{} {}: tuned {} steps, validation PSNR {} dB ({} {}, {} {})", mode_text(mode),
             a.prompt, info.steps, num(info.val_psnr), start_name(mode), num(info.zero_shot_psnr),
             interp_name(info.interp), num(info.interp_psnr));

  bool calibrated = false;
  Volume v = read_input(a, &calibrated);
  const double k = resolve_factor(a, v, calibrated, have_info ? info.factor : 0.0);
  PredictArgs args = a;
  if (have_info && !(a.interp_opt && a.interp_opt->count() > 0)) {
    args.interp = interp_name(info.interp);  // the interpolation the prompt was trained with
  } else if (have_info &&
             resolve_interp(a.interp, mode == Mode::UNet ? nullptr : &backbone) != info.interp) {
    log_warn("the prompt was trained with {} interpolation, reconstructing with {}",
             interp_name(info.interp), a.interp);
  }
  c10::optional<Normalizer> norm;
  if (have_info) {
    norm = percentile_normalizer(v, info.pmin,
                                 info.pmax);  // this volume's, with the prompt's percentiles
  }
  const bool backbone_model = mode != Mode::Interp && mode != Mode::UNet;
  reconstruct_and_write(args, v, mode, k, backbone_model ? &model : nullptr, norm,
                        unet ? &unet : nullptr);
}

void run_restore(RestoreArgs a) {
  apply_globals();
  check_recon_flags(a, a.flags.resume);
  if (a.fallback != "interp" && a.fallback != "none")
    throw_input("unknown --fallback '{}' (expected interp or none)", a.fallback);
  const Mode mode = parse_mode(a.mode);
  if (!a.prompt_out.empty()) {
    if (mode == Mode::Interp || mode == Mode::ZeroShot)
      throw_input(
          "--prompt-out needs --mode prompt, full or unet (nothing is tuned with --mode {})",
          mode_text(mode));
    std::vector<std::string> inputs = recon_inputs(a, a.flags.resume);
    inputs.push_back(a.out);
    inputs.push_back(a.uncertainty);
    check_output_path(a.prompt_out, inputs);
  }
  TuneParams& tp = a.tune;
  tp.mode = mode == Mode::Full   ? TuneParams::Mode::Full
            : mode == Mode::UNet ? TuneParams::Mode::UNet
                                 : TuneParams::Mode::Prompt;
  if (mode == Mode::UNet) refuse_backbone_for_unet(a);
  if (!a.flags.resume.empty() && mode != Mode::Prompt && mode != Mode::Full && mode != Mode::UNet)
    throw_input("--resume needs --mode prompt or full (nothing is tuned with --mode {})",
                mode_text(mode));
  if (!a.flags.resume.empty() && mode == Mode::UNet)
    throw_input("--resume is only supported with --mode prompt");
  apply_tune_flags(a.flags, tp);
  const c10::Device device = parse_device(globals().device);

  Backbone backbone;
  if (mode != Mode::Interp && mode != Mode::UNet) {
    backbone = load_backbone(resolve_backbone_path(a.backbone), device);
    log_info("backbone {} ({} parameters, hash {})", backbone.name,
             backbone.config.parameter_count(), backbone.hash.substr(0, 12));
  }
  bool calibrated = false;
  Volume v = read_input(a, &calibrated);
  const double k = resolve_factor(a, v, calibrated, 0.0);

  if (mode == Mode::Interp) return reconstruct_and_write(a, v, mode, k, nullptr, c10::nullopt);
  if (mode == Mode::ZeroShot) {
    PromptedModel model(backbone, PromptConfig{}, false);
    return reconstruct_and_write(a, v, mode, k, &model, percentile_normalizer(v, tp.pmin, tp.pmax));
  }

  tp.factor = k;
  tp.interp = resolve_interp(a.interp, mode == Mode::UNet ? nullptr : &backbone);
  tp.device = device;
  TuneResult r = mode == Mode::UNet ? tune(v, tp) : tune(v, backbone, tp);
  const bool save = !a.prompt_out.empty() && (!r.cancelled || r.evaluated);
  if (save) {
    save_prompt(a.prompt_out, r);
    log_info("saved the {} to {}",
             mode == Mode::Full   ? "fully fine-tuned model"
             : mode == Mode::UNet ? "U-Net"
                                  : "prompt",
             a.prompt_out);
  }
  if (r.cancelled) {
    if (save)
      log_warn("interrupted during tuning: kept the best state so far in {}", a.prompt_out);
    else if (!a.prompt_out.empty())
      log_warn("interrupted before the first validation: {} was not written", a.prompt_out);
    throw Cancelled();
  }
  log_info("tuned: validation PSNR {} dB ({} {}, {} {}) at step {}", num(r.info.val_psnr),
           start_name(mode), num(r.info.zero_shot_psnr), interp_name(r.info.interp),
           num(r.info.interp_psnr), r.info.best_step);
  // The held-out scores go into the output file, so the result says how it was judged.
  FileNotes scores = {{"validation_psnr_db", num(r.info.val_psnr)},
                      {mode == Mode::UNet ? "untrained_psnr_db" : "zero_shot_psnr_db",
                       num(r.info.zero_shot_psnr)},
                      {"interp_psnr_db", fmt::format("{} ({})", num(r.info.interp_psnr),
                                                     interp_name(r.info.interp))}};
  if (!model_beats_interpolation(r.info)) {
    // Never worse than interpolation without saying so: the stack's own held-out pairs are
    // the only evidence there is without ground truth.
    log_warn(
        "the tuned model is not better than {} interpolation on this stack's held-out pairs ({} dB "
        "vs {} dB){}",
        interp_name(r.info.interp), num(r.info.val_psnr), num(r.info.interp_psnr),
        a.fallback == "interp"
            ? ": writing the interpolation instead (--fallback none keeps the model)"
            : ": writing the model's result anyway (--fallback none)");
    if (a.fallback == "interp") {
      RestoreArgs ia = a;
      ia.interp = interp_name(r.info.interp);
      scores.emplace_back("fallback", fmt::format("the tuned {} model was not better than the "
                                                  "interpolation on held-out pairs",
                                                  mode_text(mode)));
      return reconstruct_and_write(ia, v, Mode::Interp, k, nullptr, c10::nullopt, nullptr,
                                   std::move(scores));
    }
    scores.emplace_back("warning", "not better than interpolation on held-out pairs");
  }
  reconstruct_and_write(a, v, mode, k, mode == Mode::UNet ? nullptr : &r.model, r.info.norm,
                        r.unet ? &r.unet : nullptr, std::move(scores));
}

// Registers the flags common to predict and restore.
void add_recon_flags(CLI::App* c, ReconArgs& a) {
  c->add_option("input", a.in, "anisotropic TIFF / OME-TIFF stack")->required();
  c->add_option("-o,--output", a.out, "output TIFF (OME-TIFF for *.ome.tif)")->required();
  c->add_option("--backbone", a.backbone,
                "backbone model file, or 'default' (models/isoprompt-default.safetensors)")
      ->capture_default_str();
  a.mode_opt =
      c->add_option("--mode", a.mode,
                    "prompt | zero-shot | full | unet (CARE's U-Net, no backbone) | interp")
          ->capture_default_str();
  c->add_option("--factor", a.factor,
                "z upsampling factor K >= 1 (fractional OK), or auto = z-step / xy-pixel")
      ->capture_default_str();
  a.interp_opt =
      c->add_option("--interp", a.interp,
                    "z interpolation: nearest | linear | keys | cubic | lanczos | auto (the "
                    "prompt's, else the backbone's input interpolation; cubic for --mode interp)")
          ->capture_default_str();
  c->add_option("--fuse", a.fuse, "fusion of the XZ and YZ results: mean | geometric")
      ->capture_default_str();
  c->add_option("--tile", a.tile, "tile edge in px (0 = automatic from --max-memory, else >= 16)")
      ->capture_default_str();
  c->add_option("--overlap", a.overlap, "tile overlap in px (-1 = automatic: 32, at most tile/4)")
      ->capture_default_str();
  c->add_option("--max-memory", a.max_memory, "memory budget of one forward pass, GB")
      ->capture_default_str();
  c->add_option("--batch", a.batch, "tiles per forward pass (0 = automatic)")
      ->capture_default_str();
  c->add_option("--dtype", a.dtype,
                "output dtype: uint8 | uint16 | float32 (default: the input's)");
  c->add_flag("--tta", a.tta,
              "test-time augmentation: restore every slice also flipped along x or y, along z and "
              "both, flip back and average (4x the network time; not with --mode interp)");
  c->add_option("--uncertainty", a.uncertainty,
                "also write an uncertainty map here: float32 on the output grid, per voxel the "
                "standard deviation of its XZ and YZ restorations (8 with --tta), in output "
                "intensity units (not with --mode interp)");
  c->add_option("--channel", a.channel, "channel to read (0-based) when the file has several")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--time", a.time, "time point to read (0-based) when the file has several")
      ->check(CLI::NonNegativeNumber);
  add_nan_flag(c, a.nan);
}

}  // namespace

void register_method_commands(CLI::App& app) {
  {
    auto a = std::make_shared<PredictArgs>();
    auto* c = app.add_subcommand(
        "predict", "make a stack isotropic with a tuned prompt, a backbone or interpolation");
    add_recon_flags(c, *a);
    c->add_option("--prompt", a->prompt,
                  "prompt file from `tune` / `restore --prompt-out` (modes prompt, full, unet)");
    c->callback([a] { run_predict(*a); });
  }
  {
    auto a = std::make_shared<RestoreArgs>();
    auto* c =
        app.add_subcommand("restore", "tune a prompt on the stack itself, then make it isotropic");
    add_recon_flags(c, *a);
    c->add_option("--prompt-out", a->prompt_out,
                  "also save the tuned prompt (or full model, or U-Net) here");
    c->add_option("--fallback", a->fallback,
                  "when the tuned model is not better than interpolation on the stack's held-out "
                  "pairs: interp "
                  "(write the interpolation) | none (write the model's result)")
        ->capture_default_str();
    add_tune_flags(c, a->tune, a->flags, "--train-batch");
    c->callback([a] { run_restore(*a); });
  }
}

}  // namespace isoprompt::cli
