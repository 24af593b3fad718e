// `isoprompt predict` (isotropic reconstruction with a backbone, a prompt, a fully
// fine-tuned model, a U-Net or interpolation only) and `isoprompt restore` (tune + predict):
// flags into a RestoreJob, run by the library's pipeline (isoprompt/pipeline.h).
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "common_args.h"
#include "isoprompt/error.h"
#include "isoprompt/pipeline.h"
#include "isoprompt/ranks.h"
#include "isoprompt/runtime.h"

namespace isoprompt::cli {

namespace {

std::string num(double v) {
  return fmt::format("{:.6g}", v);
}

// Flags shared by predict and restore.
struct ReconArgs {
  std::string in, out, backbone = "default", mode = "prompt", factor = "auto", interp = "auto";
  std::string fuse = "mean", dtype, nan = "refuse";
  std::string uncertainty;  // --uncertainty OUT: also write the uncertainty map
  std::string report;       // --report OUT.html: also write the QC report
  bool tta = false;
  int64_t tile = 0, overlap = -1, batch = 0;
  double tile_memory = 4.0;
  std::string max_memory = "auto", scratch;
  int channel = -1, time = -1;
  CLI::Option* mode_opt = nullptr;
};

struct PredictArgs : ReconArgs {
  std::string prompt;
};

struct RestoreArgs : ReconArgs {
  std::string prompt_out, fallback = "interp";
  std::string bank, bank_name, bank_tag;
  bool bank_add = false;
  TuneParams tune;
  TuneFlags flags;
};

// The job both commands run, from the flags they share.
RestoreJob make_job(const ReconArgs& a) {
  RestoreJob job;
  job.input = a.in;
  job.output = a.out;
  job.uncertainty = a.uncertainty;
  job.report = a.report;
  job.method = parse_method(a.mode);
  job.method_from_file = !(a.mode_opt && a.mode_opt->count() > 0);
  // "default" resolves inside the job: only the methods that run the backbone need it.
  if (a.backbone != "default") job.backbone = a.backbone;
  job.read.channel = a.channel;
  job.read.time = a.time;
  job.read.nan = parse_nan_policy(a.nan);
  job.factor = parse_factor(a.factor);
  if (a.interp != "auto") job.interp = parse_interp(a.interp);
  job.fuse = parse_fuse(a.fuse);
  job.tile = a.tile;
  job.overlap = a.overlap;
  job.batch = a.batch;
  job.tile_memory_gb = a.tile_memory;
  if (a.max_memory != "auto") {
    char* end = nullptr;
    const double gb = std::strtod(a.max_memory.c_str(), &end);
    if (end == a.max_memory.c_str() || *end || !(gb > 0) || !std::isfinite(gb))
      throw_input("--max-memory {} must be a positive number of GB (or auto)", a.max_memory);
    job.max_memory_gb = gb;
  }
  job.scratch = a.scratch;
  if (!a.dtype.empty()) job.out_dtype = parse_dtype(a.dtype);
  job.tta = a.tta;
  job.device = parse_device(globals().device);
  return job;
}

void print_outcome(const RestoreJob& job, const RestoreOutcome& r) {
  if (Ranks::rank() != 0) return;  // under mpirun, rank 0 reports
  const WrittenVolume& w = r.written;
  const bool tta = r.report.variants > 1;
  const std::string how =
      r.method == Method::Interp ? interp_name(r.interp) : std::string("fuse ") + fuse_name(r.fuse);
  std::printf("wrote %s  %s %s, voxel %s x %s x %s %s (mode %s, factor %s, %s%s)\n", w.path.c_str(),
              to_string(w.shape).c_str(), dtype_name(w.dtype), num(w.voxel.z).c_str(),
              num(w.voxel.y).c_str(), num(w.voxel.x).c_str(), w.unit.c_str(), method_name(r.method),
              num(r.report.factor).c_str(), how.c_str(), tta ? ", tta" : "");
  if (r.streamed)
    std::printf("streamed in slabs (the job did not fit --max-memory)%s\n",
                r.resumed ? ", continuing an interrupted run" : "");
  if (r.wrote_uncertainty)
    std::printf("wrote %s  %s float32 uncertainty map (%s), mean %s, max %s\n",
                r.uncertainty.path.c_str(), to_string(r.uncertainty.shape).c_str(),
                tta ? "8 restorations" : "XZ vs YZ", num(r.uncertainty_mean).c_str(),
                num(r.uncertainty_max).c_str());
  if (r.wrote_report) {
    const SelfConsistency& sc = r.report_metrics.self;
    std::printf(
        "wrote %s  QC report (self-consistency: re-degraded output vs input %s dB, "
        "interpolation %s dB)\n",
        job.report.c_str(), num(sc.output_psnr).c_str(), num(sc.interp_psnr).c_str());
  }
}

void run_predict(const PredictArgs& a) {
  apply_globals();
  RestoreJob job = make_job(a);
  job.tune = false;
  job.prompt = a.prompt;
  if (!a.prompt.empty() && (job.method == Method::Interp || job.method == Method::ZeroShot) &&
      !job.method_from_file)
    throw_input("--prompt cannot be used with --mode {}", method_name(job.method));
  print_outcome(job, run_restore_job(job));
}

void run_restore(RestoreArgs a) {
  apply_globals();
  RestoreJob job = make_job(a);
  if (a.fallback != "interp" && a.fallback != "none")
    throw_input("unknown --fallback '{}' (expected interp or none)", a.fallback);
  job.fallback_to_interp = a.fallback == "interp";
  job.prompt_out = a.prompt_out;
  job.bank = a.bank;
  job.bank_add = a.bank_add;
  job.bank_name = a.bank_name;
  job.bank_tag = a.bank_tag;
  job.tune_params = a.tune;
  apply_tune_flags(a.flags, job.tune_params);
  print_outcome(job, run_restore_job(job));
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
  c->add_option("--interp", a.interp,
                "z interpolation: nearest | linear | keys | cubic | lanczos | auto (the "
                "prompt's, else the backbone's input interpolation; cubic for --mode interp)")
      ->capture_default_str();
  c->add_option("--fuse", a.fuse, "fusion of the XZ and YZ results: mean | geometric")
      ->capture_default_str();
  c->add_option("--tile", a.tile, "tile edge in px (0 = automatic from --tile-memory, else >= 16)")
      ->capture_default_str();
  c->add_option("--overlap", a.overlap, "tile overlap in px (-1 = automatic: 32, at most tile/4)")
      ->capture_default_str();
  c->add_option("--tile-memory", a.tile_memory,
                "working memory of one forward pass (a batch of tiles) on the device, GB")
      ->capture_default_str();
  c->add_option("--max-memory", a.max_memory,
                "host memory for the whole job, GB (auto = half of the machine's); a job that "
                "needs more is streamed through a scratch directory in slabs")
      ->capture_default_str();
  c->add_option("--scratch", a.scratch,
                "directory for the streamed job's scratch stores (default: beside the output); a "
                "rerun of an interrupted job continues from it");
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
  c->add_option("--report", a.report,
                "also write a QC report here (one self-contained HTML file: orthogonal views, z "
                "profiles, the tuning curve, the self-consistency check; see `isoprompt report`)");
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
    c->add_option("--bank", a->bank,
                  "prompt bank folder (`isoprompt bank`): score its prompts on this stack's "
                  "held-out pairs and start from the best one that beats the backbone alone "
                  "(--steps 0: use it as is)");
    c->add_flag("--bank-add", a->bank_add,
                "also add the tuned prompt to --bank (when it beat the interpolation)");
    c->add_option("--bank-name", a->bank_name, "its entry name (default: the input's stem)");
    c->add_option("--bank-tag", a->bank_tag, "its tag: the kind of data (e.g. em, nuclei)");
    add_tune_flags(c, a->tune, a->flags, "--train-batch");
    c->callback([a] { run_restore(*a); });
  }
}

}  // namespace isoprompt::cli
