// phantom, pretrain and demo subcommands.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "common_args.h"
#include "isoprompt/demo.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/ops.h"
#include "isoprompt/phantom.h"
#include "isoprompt/pretrain.h"
#include "isoprompt/preview.h"

namespace isoprompt::cli {

namespace {

// ---- phantom ---------------------------------------------------------------------------

struct PhantomOpts {
  std::string out, clean, kind = "mixed", size = "128,128,128", voxel = "0.1,0.1,0.1",
                          dtype = "float32";
  uint64_t seed = 0;
  double psf_lateral = 0, psf_axial = 0, poisson = 0, gaussian = 0, z_factor = 1;
  int filaments = -1, nuclei = -1, cells = -1, puncta = -1;
};

Shape3 parse_size(const std::string& text, const std::string& flag) {
  double v[3];
  parse_triple(text, flag, v);
  for (double d : v)
    if (d != std::floor(d)) throw_input("{} expects whole numbers z,y,x, got '{}'", flag, text);
  return {static_cast<int64_t>(v[0]), static_cast<int64_t>(v[1]), static_cast<int64_t>(v[2])};
}

// float32 keeps the phantom's [0, 1] scale; uint16 maps v to 1000 + 10000 v (a camera-like
// offset keeps negative read noise representable).
Volume to_output_dtype(const Volume& f, const std::string& dtype) {
  const DType t = parse_dtype(dtype);
  if (t == DType::F32) return f;
  if (t != DType::U16) throw_input("--dtype must be float32 or uint16, got '{}'", dtype);
  Volume s = f.clone();
  float* d = s.data<float>();
  for (int64_t i = 0; i < s.numel(); ++i) d[i] = 1000.f + 10000.f * d[i];
  return s.astype(DType::U16);
}

void run_phantom(const PhantomOpts& o) {
  apply_globals();
  check_output_path(o.out);
  if (!o.clean.empty()) check_output_path(o.clean, {o.out});
  PhantomParams p;
  p.size = parse_size(o.size, "--size");
  p.kind = parse_phantom_kind(o.kind);
  p.seed = o.seed;
  double vs[3];
  parse_triple(o.voxel, "--voxel-size", vs);
  p.voxel = {vs[0], vs[1], vs[2]};
  p.n_filaments = o.filaments;
  p.n_nuclei = o.nuclei;
  p.n_cells = o.cells;
  p.n_puncta = o.puncta;
  OpticsParams op;
  op.psf_lateral_fwhm_um = o.psf_lateral;
  op.psf_axial_fwhm_um = o.psf_axial;
  op.poisson_peak = o.poisson;
  op.gaussian_sigma = o.gaussian;
  op.z_factor = o.z_factor;
  op.seed = hash_combine(o.seed, 0x0971c5);
  const bool optics =
      o.psf_lateral > 0 || o.psf_axial > 0 || o.poisson > 0 || o.gaussian > 0 || o.z_factor != 1;
  log_info("generating a {} phantom of {} voxels (seed {})", o.kind, to_string(p.size), o.seed);
  const Volume gt = make_phantom(p);
  const Volume out = optics ? apply_optics(gt, op) : gt;
  write_volume(o.out, to_output_dtype(out, o.dtype));
  std::printf("wrote %s: %s %s, voxel %g x %g x %g um%s\n", o.out.c_str(),
              to_string(out.shape()).c_str(), o.dtype.c_str(), out.voxel_size().z,
              out.voxel_size().y, out.voxel_size().x, optics ? " (with optical model)" : "");
  if (!o.clean.empty()) {
    write_volume(o.clean, to_output_dtype(gt, o.dtype));
    std::printf("wrote %s: %s clean ground truth\n", o.clean.c_str(),
                to_string(gt.shape()).c_str());
  }
}

void register_phantom(CLI::App& app) {
  auto o = std::make_shared<PhantomOpts>();
  auto* c = app.add_subcommand("phantom",
                               "generate a procedural 3D test volume (fluorescence- or EM-like)");
  c->add_option("-o,--output", o->out, "output TIFF")->required();
  c->add_option("--kind", o->kind, "mixed, filaments, nuclei, membranes, puncta or em")
      ->capture_default_str();
  c->add_option("--size", o->size, "volume size z,y,x in voxels")->capture_default_str();
  c->add_option("--seed", o->seed, "random seed (same seed, same volume)")
      ->capture_default_str()
      ->check(seed_validator());
  c->add_option("--voxel-size", o->voxel, "voxel size z,y,x in um (before --z-factor)")
      ->capture_default_str();
  c->add_option("--psf-lateral", o->psf_lateral, "lateral Gaussian PSF FWHM in um (0 = none)");
  c->add_option("--psf-axial", o->psf_axial, "axial Gaussian PSF FWHM in um (0 = none)");
  c->add_option("--poisson", o->poisson, "Poisson noise: photons at intensity 1 (0 = none)");
  c->add_option("--gaussian", o->gaussian, "Gaussian read noise sigma, intensity units (0 = none)");
  c->add_option("--z-factor", o->z_factor, "keep every K-th z plane (anisotropy)")
      ->capture_default_str();
  c->add_option("--dtype", o->dtype, "float32 (values 0..1) or uint16 (1000 + 10000 x value)")
      ->capture_default_str();
  c->add_option("--clean", o->clean,
                "also write the clean ground truth (before the optical model) here");
  c->add_option("--filaments", o->filaments, "number of filaments (default: automatic)");
  c->add_option("--nuclei", o->nuclei, "number of nuclei (default: automatic)");
  c->add_option("--cells", o->cells, "number of cells for membranes/em (default: automatic)");
  c->add_option("--puncta", o->puncta, "number of puncta (default: automatic)");
  c->callback([o] { run_phantom(*o); });
}

// ---- pretrain --------------------------------------------------------------------------

struct PretrainOpts {
  PretrainParams p;
  std::string config_json, data_dir, device_unused, input_interp = "cubic";
  int64_t val_split = 6;
  bool no_identity = false;
};

void run_pretrain(PretrainOpts& o) {
  apply_globals();
  PretrainParams& p = o.p;
  if (!o.config_json.empty()) p.config = SwinConfig::from_json(o.config_json);
  p.identity_init = !o.no_identity;
  p.pairs.interp = parse_interp(o.input_interp);
  if (!o.data_dir.empty()) {
    const CorpusSplit split = split_corpus(list_tiff_files(o.data_dir), o.val_split);
    auto load = [&](const std::vector<std::string>& names, std::vector<CorpusImage>& dst,
                    int64_t min_edge, const char* role) {
      for (const std::string& name : names) {
        CorpusImage img = load_corpus_image((std::filesystem::path(o.data_dir) / name).string());
        if (std::min(img.planes.ny(), img.planes.nx()) < min_edge) {
          log_warn("--data: {} ({}) is smaller than {}x{} pixels: not used", name,
                   to_string(img.planes.shape()), min_edge, min_edge);
          continue;
        }
        log_debug("--data: {} {} ({}, {})", role, name, modality_name(img.modality),
                  to_string(img.planes.shape()));
        dst.push_back(std::move(img));
      }
    };
    load(split.train, p.corpus, p.pairs.crop, "train");
    load(split.held_out, p.val_corpus, p.val_crop, "held out");
    log_info("--data {}: {} files for training, {} held out for validation (whole acquisitions)",
             o.data_dir, p.corpus.size(), p.val_corpus.size());
  }
  const PretrainResult r = pretrain(p, c10::Device(globals().device));
  std::printf(
      "pretrained %lld steps in %.1f min; validation PSNR: input %.2f dB, output %.2f dB%s\n",
      static_cast<long long>(r.steps_done), r.seconds / 60, r.val_psnr_input, r.val_psnr_output,
      r.stopped_early ? " (stopped by --max-minutes)" : "");
  std::printf("validation gain over the interpolated input: %s\n",
              val_gains_text(r.val_groups).c_str());
  if (!p.checkpoint_path.empty()) std::printf("checkpoint: %s\n", p.checkpoint_path.c_str());
  if (!p.export_path.empty()) std::printf("model: %s\n", p.export_path.c_str());
}

void register_pretrain(CLI::App& app) {
  auto o = std::make_shared<PretrainOpts>();
  PretrainParams& p = o->p;
  auto* c = app.add_subcommand("pretrain",
                               "train a backbone from scratch on synthetic restoration pairs");
  c->add_option("--steps", p.steps, "total optimiser steps (a resumed run continues to this)")
      ->capture_default_str();
  c->add_option("--batch", p.batch, "pairs per step")->capture_default_str();
  c->add_option("--crop", p.pairs.crop, "training crop edge in pixels")->capture_default_str();
  c->add_option("--lr", p.lr, "Adam learning rate")->capture_default_str();
  c->add_option("--warmup", p.warmup, "linear warm-up steps")->capture_default_str();
  c->add_option("--min-lr-ratio", p.min_lr_ratio, "< 1: cosine decay to lr x ratio at --steps")
      ->capture_default_str();
  c->add_option("--seed", p.seed, "seed of the data stream and the initial weights")
      ->capture_default_str()
      ->check(seed_validator());
  c->add_option("--config", o->config_json,
                "model configuration JSON (default: the shipped default's)");
  c->add_option("--min-factor", p.pairs.min_factor, "smallest axial degradation factor")
      ->capture_default_str();
  c->add_option("--max-factor", p.pairs.max_factor, "largest axial degradation factor")
      ->capture_default_str();
  c->add_flag("--log-factor", p.pairs.log_uniform_factor,
              "draw factors log-uniformly (weights 2-4x like 4-8x) instead of uniformly");
  c->add_option("--phantom-size", p.phantom_size, "edge of generated phantom cubes")
      ->capture_default_str();
  c->add_option("--phantom-every", p.phantom_every, "replace one of 4 pool phantoms every N steps")
      ->capture_default_str();
  c->add_option("--data", o->data_dir,
                "also cut pairs from the real images in this directory (2D, 2D sets, 3D stacks; "
                "em_* / fluo_* names set the modality)");
  c->add_option("--data-fraction", p.data_fraction, "share of pairs from --data")
      ->capture_default_str();
  c->add_option("--val-split", o->val_split,
                "hold out every K-th acquisition of --data per modality for validation")
      ->capture_default_str();
  c->add_option("--input-interp", o->input_interp,
                "interpolation of the network's input (cubic = B-spline, keys); stored in the model")
      ->capture_default_str();
  c->add_option("--checkpoint", p.checkpoint_path, "checkpoint file (weights + optimiser + step)");
  c->add_option("--checkpoint-every", p.checkpoint_minutes, "minutes between checkpoints")
      ->capture_default_str();
  c->add_option("--resume", p.resume_path, "continue from this checkpoint");
  c->add_flag("--resume-new-data", p.resume_new_data,
              "resume although the data settings (mix, factors, noise) differ from the checkpoint's");
  c->add_option("--log", p.log_csv, "CSV log: step, loss, lr, validation PSNR, seconds");
  c->add_option("--log-every", p.log_every, "steps between log lines")->capture_default_str();
  c->add_option("--val-every", p.val_every, "steps between validations")->capture_default_str();
  c->add_option("--val-pairs", p.val_pairs, "validation pairs per modality and factor (2, 4, 8)")
      ->capture_default_str();
  c->add_option("--val-crop", p.val_crop, "edge of the validation pairs (px)")
      ->capture_default_str();
  c->add_option("--max-minutes", p.max_minutes,
                "stop cleanly after this many minutes (0 = no limit)");
  c->add_option("--export", p.export_path, "write the trained backbone (.safetensors) at the end");
  c->add_option("--name", p.model_name, "model name stored in the exported file")
      ->capture_default_str();
  c->add_flag("--no-identity-init", o->no_identity, "start from plain random weights");
  c->callback([o] { run_pretrain(*o); });
}

// ---- demo ------------------------------------------------------------------------------

// The library's defaults are the demo's: DemoParams holds them once.
struct DemoOpts {
  DemoParams p;
  std::string out_dir = "demo_out", size = fmt::format("{},{},{}", p.size.z, p.size.y, p.size.x);
  std::string kind = phantom_kind_name(p.kind), backbone = "default";
  bool no_tune = false;
};

void run_demo_cmd(const DemoOpts& o) {
  apply_globals();
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) throw_input("cannot create output directory {}: {}", o.out_dir, ec.message());
  DemoParams p = o.p;
  p.size = parse_size(o.size, "--size");
  p.kind = parse_phantom_kind(o.kind);
  p.tune = !o.no_tune;
  p.device = c10::Device(globals().device);
  const std::string path = resolve_backbone_path(o.backbone);
  Backbone bb = load_backbone(path, p.device);
  const DemoResult r = run_demo(p, bb);

  auto file = [&](const std::string& name) { return (fs::path(o.out_dir) / name).string(); };
  write_volume(file("ground_truth.tif"), r.gt);
  write_volume(file("input_x4.tif"), r.input);
  write_volume(file("cubic.tif"), r.cubic);
  write_volume(file("zero_shot.tif"), r.zero_shot);
  if (!r.tuned.empty()) write_volume(file("prompt_tuned.tif"), r.tuned);
  std::vector<std::pair<std::string, Volume>> rows{
      {"input", upsample(r.input, 0, p.factor, Interp::Nearest, r.gt.nz())},
      {"cubic", r.cubic},
      {"zero-shot", r.zero_shot}};
  if (!r.tuned.empty()) rows.emplace_back("prompt-tuned", r.tuned);
  rows.emplace_back("ground truth", r.gt);
  write_ortho_png(file("views.png"), rows, r.gt_lo, r.gt_hi);

  std::string table = fmt::format(
      "isoprompt demo: {} phantom {} (seed {}), z averaged x{}, backbone {}\n\n"
      "| method | PSNR (dB) | SSIM | SSIM XZ | trainable params | time (s) |\n"
      "|---|---|---|---|---|---|\n",
      o.kind, to_string(r.gt.shape()), p.seed, p.factor, bb.name);
  for (const DemoRow& row : r.rows)
    table += fmt::format("| {} | {:.2f} | {:.4f} | {:.4f} | {} | {:.1f} |\n", row.method, row.psnr,
                         row.ssim, row.ssim_xz, row.trainable, row.seconds);
  std::printf("\n%s\n", table.c_str());
  std::FILE* f = std::fopen(file("results.md").c_str(), "w");
  if (f) {
    std::fputs(table.c_str(), f);
    std::fclose(f);
  }
  std::printf(
      "wrote %s/: views.png (rows: input, cubic, zero-shot, %sground truth; columns XY, XZ, YZ), "
      "the volumes as TIFF, results.md\n",
      o.out_dir.c_str(), r.tuned.empty() ? "" : "prompt-tuned, ");
}

void register_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOpts>();
  auto* c = app.add_subcommand(
      "demo", "phantom -> x4 anisotropy -> cubic vs zero-shot vs prompt-tuned, with metrics");
  c->add_option("--out-dir", o->out_dir, "output directory")->capture_default_str();
  c->add_option("--size", o->size, "ground-truth size z,y,x")->capture_default_str();
  c->add_option("--kind", o->kind, "phantom kind")->capture_default_str();
  c->add_option("--seed", o->p.seed, "phantom seed")
      ->capture_default_str()
      ->check(seed_validator());
  c->add_option("--factor", o->p.factor, "z-averaging factor (whole number)")
      ->capture_default_str();
  c->add_option("--backbone", o->backbone, "model file, or 'default'")->capture_default_str();
  c->add_option("--tune-seconds", o->p.tune_seconds, "prompt-tuning time budget")
      ->capture_default_str();
  c->add_option("--tune-steps", o->p.tune_steps, "prompt-tuning step limit")->capture_default_str();
  c->add_flag("--no-tune", o->no_tune, "skip prompt tuning (cubic and zero-shot only)");
  c->callback([o] { run_demo_cmd(*o); });
}

}  // namespace

void register_demo_commands(CLI::App& app) {
  register_phantom(app);
  register_pretrain(app);
  register_demo(app);
}

}  // namespace isoprompt::cli
