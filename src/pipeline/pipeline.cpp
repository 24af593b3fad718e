#include "isoprompt/pipeline.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/model.h"
#include "isoprompt/ops.h"
#include "isoprompt/restore.h"
#include "isoprompt/runtime.h"
#include "isoprompt/planes.h"
#include "isoprompt/ranks.h"
#include "isoprompt/tensor.h"
#include "stream.h"

namespace isoprompt {

namespace {

std::string num(double v) {
  return fmt::format("{:.6g}", v);
}

// The method of a tuned file.
Method file_method(const PromptInfo& info) {
  switch (info.mode) {
    case TuneParams::Mode::Full:
      return Method::Full;
    case TuneParams::Mode::UNet:
      return Method::UNet;
    case TuneParams::Mode::Prompt:
      break;
  }
  return Method::Prompt;
}

const char* file_method_text(Method m) {
  return m == Method::Full ? "fully fine-tuned" : m == Method::UNet ? "U-Net" : "prompt";
}

// "zero-shot" names a prompt's or full model's start; a U-Net starts untrained.
const char* start_name(Method m) {
  return m == Method::UNet ? "untrained" : "zero-shot";
}

// The U-Net trains from scratch: a backbone beside it would be silently unused.
void refuse_backbone_for_unet(const RestoreJob& job, Method m) {
  if (m == Method::UNet && !job.backbone.empty())
    throw_input("--backbone cannot be used with --mode unet (the U-Net trains from scratch)");
}

bool uses_backbone(Method m) {
  return m != Method::Interp && m != Method::UNet;
}

// Every file the job reads: no output may be one of them.
std::vector<std::string> job_inputs(const RestoreJob& job) {
  return {job.input, job.backbone, job.prompt, job.tune_params.resume_from};
}

// The job's input: in memory, or, when the job does not fit its memory budget, streamed
// from disk (stream.h) with the planes tuning needs read into memory.
struct InputStack {
  Volume whole;
  std::unique_ptr<stream::Scratch> scratch;
  std::unique_ptr<stream::Input> streamed;
  Volume tuning;  // streamed: the XY planes tuning sees (read on first use)
  bool calibrated = false;
  double factor = 0;  // K, resolved from the metadata (resolve_factor)
  double budget = 0;  // bytes

  VoxelSize voxel_size() const { return streamed ? streamed->voxel_size() : whole.voxel_size(); }
  void set_voxel_size(VoxelSize v) {
    if (streamed) {
      streamed->set_voxel_size(v);
      if (!tuning.empty()) tuning.set_voxel_size(v);
    } else {
      whole.set_voxel_size(v);
    }
  }
  // What tune and the bank see: the volume, or (streamed) as many XY planes as a quarter of
  // the budget holds.
  const Volume& tune_volume() {
    if (!streamed) return whole;
    if (tuning.empty()) tuning = streamed->tuning_planes(budget / 4);
    return tuning;
  }
  Normalizer normalizer(double pmin, double pmax) const {
    return streamed ? streamed->normalizer(pmin, pmax) : percentile_normalizer(whole, pmin, pmax);
  }
};

// The z factor: job.factor, or z-step / xy-pixel from the calibration (or the prompt's
// factor for an uncalibrated stack). An uncalibrated stack gets voxel (K, 1, 1) so the
// output voxel is (1, 1, 1).
double resolve_factor(const RestoreJob& job, VoxelSize vs, bool calibrated, double prompt_factor) {
  double k = job.factor;
  if (k == 0) {
    if (calibrated) {
      k = vs.anisotropy();
      if (vs.y != vs.x)
        log_warn("pixels are not square (y {} vs x {}): using x", num(vs.y), num(vs.x));
      if (!(k >= 1))
        throw_input(
            "{}: z step {} is finer than the xy pixel {}: nothing to upsample (pass --factor K)",
            job.input, num(vs.z), num(vs.x));
      log_info("factor auto: z step {} / xy pixel {} = {}", num(vs.z), num(vs.x), num(k));
    } else if (prompt_factor > 0) {
      k = prompt_factor;
      log_info("factor auto: {} is uncalibrated, using the prompt's factor {}", job.input, num(k));
    } else {
      throw_input("{} has no voxel-size calibration, so --factor auto cannot work: pass --factor K",
                  job.input);
    }
  }
  if (prompt_factor > 0 && std::abs(prompt_factor - k) > 1e-9 * k)
    log_warn("the prompt was tuned for factor {}, reconstructing with factor {}",
             num(prompt_factor), num(k));
  return k;
}

ReconstructParams recon_params(const RestoreJob& job, double k, Interp interp, const InputStack& in) {
  ReconstructParams p;
  p.factor = k;
  p.interp = interp;
  p.fuse = job.fuse;
  p.tile = job.tile;
  p.overlap = job.overlap;
  p.batch = job.batch;
  p.max_memory_gb = job.tile_memory_gb;
  if (in.streamed) {
    // Within the job's budget: a quarter for a forward pass on the CPU, an eighth in flight.
    if (job.device.is_cpu()) p.max_memory_gb = std::min(p.max_memory_gb, in.budget / 4 / kGiB);
    p.group_bytes = std::min(p.group_bytes, in.budget / 8);
  }
  p.device = job.device;
  p.out_dtype = job.out_dtype ? *job.out_dtype : (in.streamed ? in.streamed->dtype() : in.whole.dtype());
  p.tta = job.tta;
  return p;
}

WrittenVolume describe(const std::string& path, const Volume& v) {
  return {path, v.shape(), v.dtype(), v.voxel_size(), v.unit()};
}

void write_job_report(const RestoreJob& job, const Volume& input, const Volume& result,
                      const Volume* umap, RestoreOutcome& out);

// The models a job reconstructs with (at most one of them is set).
struct Models {
  Backbone backbone;
  PromptedModel prompted;
  UNet unet{nullptr};
};

// Reconstructs `v` with the model in `models` (none: interpolation) and writes the output
// and the uncertainty map. `out` gets what was written.
// The streamed form of reconstruct_and_write: the same notes, the same restorers.
void stream_and_write(const RestoreJob& job, InputStack& in, Method method, ReconstructParams p,
                      Models& models, FileNotes notes, RestoreOutcome& out) {
  SliceRestorer restorer;
  std::string map_path = job.uncertainty;
  if (method == Method::Interp) {
    if (job.tta) log_warn("--tta has no effect: the output is the interpolation");
    if (!map_path.empty())
      log_warn(
          "--uncertainty: {} is not written: the output is the interpolation, which has no "
          "restorations to compare",
          job.uncertainty);
    p.tta = false;
    map_path.clear();
    notes.insert(notes.begin(), {"interp", interp_name(p.interp)});
  } else if (method == Method::UNet) {
    p.cost = unet_cost(models.unet->config());
    models.unet->to(p.device);
    restorer = unet_restorer(models.unet);
  } else {
    p.cost = swin_cost(models.prompted.backbone().config);
    models.prompted.to(p.device);
    restorer = model_restorer(models.prompted);
  }
  out.method = method;
  out.interp = p.interp;
  out.fuse = p.fuse;
  WriteOptions wo;
  wo.notes = {{"method", method_name(method)}, {"factor", num(p.factor)}};
  if (p.tta) wo.notes.emplace_back("tta", "4 flips (none, x or y, z, both), averaged");
  wo.notes.insert(wo.notes.end(), notes.begin(), notes.end());
  WriteOptions uo;
  uo.notes = {{"method", method_name(method)},
              {"factor", num(p.factor)},
              {"map", "uncertainty"},
              {"uncertainty", uncertainty_definition(p.tta)},
              {"output", job.output}};
  const stream::Written w = stream::reconstruct(*in.streamed, *in.scratch, p, restorer, job.output, wo,
                                                map_path, uo, in.budget);
  out.report = w.report;
  out.notes = wo.notes;
  const VoxelSize voxel = w.report.voxel;
  const std::string unit = in.streamed->unit();
  out.written = {job.output, w.shape, w.dtype, voxel, unit};
  if (w.wrote_map) {
    out.wrote_uncertainty = true;
    out.uncertainty = {job.uncertainty, w.shape, DType::F32, voxel, unit};
    out.uncertainty_mean = w.map_mean;
    out.uncertainty_max = w.map_max;
  }
}

void reconstruct_and_write(const RestoreJob& job, InputStack& in, Method method, double k,
                           Interp interp, Models& models, const std::optional<Normalizer>& norm,
                           FileNotes notes, RestoreOutcome& out) {
  ReconstructParams p = recon_params(job, k, interp, in);
  if (in.streamed) {
    p.norm = norm;
    return stream_and_write(job, in, method, p, models, std::move(notes), out);
  }
  const Volume& v = in.whole;
  Volume result, umap;
  Volume* want_map = job.uncertainty.empty() ? nullptr : &umap;
  if (method == Method::Interp) {
    // Only restore's fallback gets here with tta or a map (check_restore_job refuses them
    // with --mode interp): the output is the interpolation, so there is nothing to augment
    // and no spread to map.
    if (job.tta) log_warn("--tta has no effect: the output is the interpolation");
    if (want_map)
      log_warn(
          "--uncertainty: {} is not written: the output is the interpolation, which has no "
          "restorations to compare",
          job.uncertainty);
    p.tta = false;
    want_map = nullptr;
    result = reconstruct(v, p, SliceRestorer(), &out.report);
    notes.insert(notes.begin(), {"interp", interp_name(p.interp)});
  } else if (method == Method::UNet) {
    p.norm = norm;
    result = reconstruct_with_model(v, p, models.unet, &out.report, want_map);
  } else {
    p.norm = norm;
    result = reconstruct_with_model(v, p, models.prompted, &out.report, want_map);
  }
  out.method = method;
  out.interp = p.interp;
  out.fuse = p.fuse;

  const bool tta = out.report.variants > 1;
  WriteOptions wo;
  wo.notes = {{"method", method_name(method)}, {"factor", num(out.report.factor)}};
  if (tta) wo.notes.emplace_back("tta", "4 flips (none, x or y, z, both), averaged");
  wo.notes.insert(wo.notes.end(), notes.begin(), notes.end());
  write_volume(job.output, result, wo);
  out.notes = wo.notes;
  out.written = describe(job.output, result);
  if (!want_map) {
    if (!job.report.empty()) write_job_report(job, v, result, nullptr, out);
    return;
  }
  // Written after the output: the map only makes sense next to it.
  WriteOptions uo;
  uo.notes = {{"method", method_name(method)},
              {"factor", num(out.report.factor)},
              {"map", "uncertainty"},
              {"uncertainty", uncertainty_definition(tta)},
              {"output", job.output}};
  write_volume(job.uncertainty, umap, uo);
  const at::Tensor u = to_float_tensor(umap);
  out.wrote_uncertainty = true;
  out.uncertainty = describe(job.uncertainty, umap);
  out.uncertainty_mean = u.mean().item<double>();
  out.uncertainty_max = u.max().item<double>();
  if (!job.report.empty()) write_job_report(job, v, result, &umap, out);
}

// The QC report of what reconstruct_and_write just wrote, from the volumes still in memory.
void write_job_report(const RestoreJob& job, const Volume& input, const Volume& result,
                      const Volume* umap, RestoreOutcome& out) {
  ReportInputs in;
  in.title = job.input;
  in.input = &input;
  in.output = &result;
  in.uncertainty = umap;
  in.factor = out.report.factor;
  in.interp = out.interp;
  in.degrade = out.have_info ? out.info.degrade : job.tune_params.degrade;
  in.uncertainty_restorations = out.report.variants > 1 ? 8 : 2;
  in.val_history = out.val_history;
  in.loss_history = out.loss_history;
  if (out.have_info) {
    in.val_in_sample = out.info.val_in_sample;
    in.zero_shot_psnr = out.info.zero_shot_psnr;
    in.interp_psnr = out.info.interp_psnr;
  }
  for (const auto& [k, v] : out.notes) in.parameters.emplace_back(k, v);
  in.parameters.emplace_back("fuse", fuse_name(out.fuse));
  if (!job.tune) in.parameters.emplace_back("prompt", job.prompt.empty() ? "-" : job.prompt);
  if (out.have_info) {
    in.parameters.emplace_back("tuned steps", std::to_string(out.info.steps));
    in.timings.emplace_back("tuning", fmt::format("{:.1f} s", out.info.seconds));
  }
  in.timings.emplace_back("reconstruction", fmt::format("{:.1f} s", out.report.seconds));
  in.files.emplace_back("input", job.input);
  in.files.emplace_back("output", job.output);
  if (umap) in.files.emplace_back("uncertainty map", job.uncertainty);
  if (out.saved_prompt) in.files.emplace_back("prompt", job.prompt_out);
  write_report(job.report, in, &out.report_metrics);
  out.wrote_report = true;
}

// What a rerun must share with an interrupted streamed run to continue from its scratch
// directory: the input (path, size, time of change), the models and every parameter that
// changes the result.
std::string job_fingerprint(const RestoreJob& job, const std::string& model_hash) {
  auto identity = [](const std::string& path) {
    if (path.empty()) return std::string("-");
    std::string file = parse_volume_path(path).file;
    if (parse_volume_path(path).format == VolumeFormat::Zarr) {
      std::error_code ec;
      for (const char* meta : {"/.zattrs", "/.zarray", "/0/.zarray"})
        if (std::filesystem::exists(file + meta, ec)) {
          file += meta;
          break;
        }
    }
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) return path + " (missing)";
    return fmt::format("{} size {} mtime {}.{:09d}", path, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  };
  const TuneParams& t = job.tune_params;
  std::string f = fmt::format("isoprompt {}\n", ISOPROMPT_VERSION);
  f += fmt::format("input {}\nchannel {} time {} nan {}\n", identity(job.input), job.read.channel,
                   job.read.time, static_cast<int>(job.read.nan));
  f += fmt::format("output {}\nuncertainty {}\n", job.output, job.uncertainty);
  f += fmt::format("method {} tune {} model {}\nprompt {}\n", method_name(job.method), job.tune, model_hash,
                   identity(job.prompt));
  f += fmt::format("factor {:.17g} interp {} fuse {} tile {} overlap {} batch {} tile_memory {:.17g} tta {}\n",
                   job.factor, job.interp ? interp_name(*job.interp) : "auto", fuse_name(job.fuse), job.tile,
                   job.overlap, job.batch, job.tile_memory_gb, job.tta);
  f += fmt::format("out_dtype {} fallback {} bank {} resume {}\n",
                   job.out_dtype ? dtype_name(*job.out_dtype) : "input", job.fallback_to_interp, job.bank,
                   identity(t.resume_from));
  f += fmt::format("tune steps {} lr {:.17g} min_lr {:.17g} batch {} crops {}-{} seed {} pmin {:.17g} pmax {:.17g} "
                   "val {:.17g} val_crops {} eval_every {} cache {} budget {:.17g} prompt {} {} {} at {}\n",
                   t.steps, t.lr, t.min_lr_ratio, t.batch, t.crop_min, t.crop_max, t.seed, t.pmin, t.pmax,
                   t.val_fraction, t.val_crops, t.eval_every, t.cache_crops, t.time_budget_s, t.prompt.num_prompts,
                   t.prompt.attn_dim, t.prompt.query_rank, static_cast<int>(t.prompt.placement));
  f += fmt::format("degrade {} fwhm {:.17g} sigma {:.17g} profile {} poisson {:.17g} gauss {:.17g} seed {}\n",
                   degrade_model_name(t.degrade.model), t.degrade.psf_fwhm_um, t.degrade.psf_sigma_px,
                   t.degrade.psf_profile.size(), t.degrade.poisson_peak, t.degrade.gaussian_sigma, t.degrade.seed);
  return f;
}

// An uncalibrated stack's voxel is taken as factor x 1 x 1 pixel.
void take_uncalibrated_voxel(const RestoreJob& job, InputStack& in) {
  if (in.calibrated) return;
  in.set_voxel_size({in.factor, 1.0, 1.0});
  log_info("{} is uncalibrated: taking its voxel as {} x 1 x 1 pixel (z, y, x)", job.input, num(in.factor));
}

// Reads the input whole when the job fits its memory budget, else opens it for streaming.
// `prompt_factor` (> 0: predict with a prompt file) is the K an uncalibrated input with
// --factor auto will take, so that the estimate counts the output it will really make.
InputStack open_input(const RestoreJob& job, Method method, const std::string& model_hash,
                      double prompt_factor = 0) {
  InputStack in;
  const double budget_gb = job.max_memory_gb > 0 ? job.max_memory_gb : stream::default_max_memory_gb();
  in.budget = budget_gb * kGiB;
  // Opened once: the factor and the estimate, then the whole read or the streamed copy.
  PlaneReader reader(job.input, job.read);
  const Shape3 s = reader.shape();
  const bool calibrated = reader.info().calibrated;
  // Resolved from the metadata before any voxel is read: a missing --factor fails at once,
  // and the estimate counts the output the job will really make.
  in.factor = resolve_factor(job, reader.voxel_size(), calibrated, prompt_factor);
  const double need = stream::in_memory_bytes(s, reader.dtype(), in.factor, job.out_dtype.value_or(reader.dtype()),
                                              !job.uncertainty.empty() && method != Method::Interp);
  // A --max-memory above the machine's memory cannot hold the job either: stream it.
  const double ram = stream::physical_memory_gb() * kGiB;
  const bool fits = need <= in.budget && (ram <= 0 || need <= ram);
  // Under mpirun the ranks share the work slab by slab: always the streamed job.
  if (fits && Ranks::size() == 1) {
    in.whole = reader.read_planes(0, s.z);
    in.calibrated = calibrated;
    take_uncalibrated_voxel(job, in);
    return in;
  }
  if (Ranks::size() > 1)
    log_info("mpirun: {} ranks share the job slab by slab", Ranks::size());
  else
    log_info("the job needs about {:.2f} GB in memory, over {} {:.2f} GB: streaming it", need / kGiB,
             need <= in.budget ? "the machine's" : "--max-memory", need <= in.budget ? ram / kGiB : budget_gb);
  if (!job.report.empty())
    throw_input(
        "--report needs the volumes in memory, and this job needs about {:.1f} GB, over --max-memory {:.1f} GB: "
        "raise --max-memory or drop --report",
        need / kGiB, budget_gb);
  limit_retained_heap(in.budget / 8);
  in.scratch = std::make_unique<stream::Scratch>(job, job_fingerprint(job, model_hash));
  in.streamed = std::make_unique<stream::Input>(job, *in.scratch, in.budget, reader);
  in.calibrated = in.streamed->calibrated();
  take_uncalibrated_voxel(job, in);
  return in;
}

// After a streamed job: its scratch directory is no longer needed.
void finish_input(InputStack& in, RestoreOutcome& out) {
  if (!in.scratch) return;
  out.streamed = true;
  out.resumed = in.scratch->resumed();
  in.scratch->remove();
}

// The backbone file of a job: its own, or the shipped default.
std::string backbone_path(const RestoreJob& job) {
  if (job.backbone.empty()) return default_backbone_path();
  check_input_file(job.backbone, "backbone file");
  return job.backbone;
}

void log_backbone(const Backbone& b) {
  log_info("backbone {} ({} parameters, hash {})", b.name, b.config.parameter_count(),
           b.hash.substr(0, 12));
}

RestoreOutcome run_predict(const RestoreJob& job) {
  Method method = job.method;
  if (job.prompt.empty()) {
    if (method != Method::Interp && method != Method::ZeroShot)
      throw_input(
          "--mode {} needs --prompt FILE (make one with `isoprompt tune` or `isoprompt restore "
          "--prompt-out`)",
          method_name(method));
  } else {
    // The file's mode decides what to load (a U-Net needs no backbone).
    const Method fm = file_method(read_prompt_info(job.prompt));
    if (fm != method) {
      if (!job.method_from_file)
        throw_input("{} holds a {} model, not --mode {}: pass --mode {}", job.prompt,
                    file_method_text(fm), method_name(method), method_name(fm));
      method = fm;
    }
  }
  RestoreOutcome out;
  Models models;
  if (method == Method::UNet) {
    refuse_backbone_for_unet(job, method);
    LoadedPrompt lp = load_unet(job.prompt, job.device);
    models.unet = lp.unet;
    out.info = lp.info;
    out.have_info = true;
  } else if (method != Method::Interp) {
    models.backbone = load_backbone(backbone_path(job), job.device);
    log_backbone(models.backbone);
    if (method == Method::ZeroShot) {
      models.prompted = PromptedModel(models.backbone, PromptConfig{}, false);
    } else {
      LoadedPrompt lp = load_prompt(job.prompt, models.backbone);
      models.prompted = lp.model;
      out.info = lp.info;
      out.have_info = true;
    }
  }
  if (out.have_info)
    log_info("{} {}: tuned {} steps, validation PSNR {} dB ({} {}, {} {})", method_name(method),
             job.prompt, out.info.steps, num(out.info.val_psnr), start_name(method),
             num(out.info.zero_shot_psnr), interp_name(out.info.interp), num(out.info.interp_psnr));

  InputStack v = open_input(job, method,
                             uses_backbone(method) ? models.backbone.hash : out.have_info ? out.info.backbone_hash : "",
                             out.have_info ? out.info.factor : 0.0);
  const double k = v.factor;
  const Backbone* bb = uses_backbone(method) ? &models.backbone : nullptr;
  Interp interp = job.interp ? *job.interp : resolve_interp("auto", bb);
  if (out.have_info) {
    if (!job.interp)
      interp = out.info.interp;  // the interpolation the prompt was trained with
    else if (*job.interp != out.info.interp)
      log_warn("the prompt was trained with {} interpolation, reconstructing with {}",
               interp_name(out.info.interp), interp_name(*job.interp));
  }
  std::optional<Normalizer> norm;
  // This volume's own percentiles, at the levels the prompt was tuned with.
  if (out.have_info)
    norm = v.normalizer(out.info.pmin, out.info.pmax);
  else if (method == Method::ZeroShot)
    norm = v.normalizer(job.tune_params.pmin, job.tune_params.pmax);
  reconstruct_and_write(job, v, method, k, interp, models, norm, {}, out);
  finish_input(v, out);
  return out;
}

void log_bank_choice(const std::string& dir, const BankChoice& c) {
  log_info(
      "bank {}: {} prompt{} scored on this stack's held-out pairs (zero-shot {} dB, "
      "interpolation {} dB)",
      dir, c.ranking.size(), c.ranking.size() == 1 ? "" : "s", num(c.zero_shot_psnr),
      num(c.interp_psnr));
  for (size_t i = 0; i < c.ranking.size(); ++i)
    log_info("  {}. {}  {} dB ({:+.2f} vs zero-shot)", i + 1, c.ranking[i].name,
             num(c.ranking[i].val_psnr), c.ranking[i].val_psnr - c.zero_shot_psnr);
  for (const std::string& s : c.skipped) log_info("  skipped {}", s);
  if (c.best >= 0)
    log_info("bank: starting from '{}'", c.ranking.front().name);
  else
    log_info("bank: no prompt beats the backbone alone on this stack: starting from zero");
}

// Adds a tuned prompt to job.bank; returns its entry name.
std::string add_to_bank(const RestoreJob& job, const InputStack& v, const TuneResult& r) {
  BankEntry what;
  what.name = job.bank_name;
  if (what.name.empty()) {
    // The input's stem (last path component, every extension removed), made unique.
    std::string stem = parse_volume_path(job.input).file;
    while (!stem.empty() && stem.back() == '/') stem.pop_back();
    stem = stem.substr(stem.find_last_of('/') + 1);
    what.name = unique_bank_name(open_bank(job.bank, false), stem.substr(0, stem.find('.')));
  }
  what.tag = job.bank_tag;
  what.source = job.input;
  what.voxel = v.voxel_size();
  what.unit = v.streamed ? v.streamed->unit() : v.whole.unit();
  // save_prompt writes atomically; the bank copies the file in, then indexes it.
  const std::string tmp = fmt::format("{}/.incoming-{}.prompt.safetensors", job.bank, getpid());
  std::filesystem::create_directories(job.bank);
  struct Remove {
    std::string path;
    ~Remove() { std::remove(path.c_str()); }
  } cleanup{tmp};
  save_prompt(tmp, r);
  const BankEntry e = bank_add(job.bank, tmp, what);
  log_info("added the prompt to bank {} as '{}'", job.bank, e.name);
  return e.name;
}

RestoreOutcome run_restore(const RestoreJob& job) {
  const Method method = job.method;
  if (!job.prompt.empty()) throw_input("--prompt is for predict; restore tunes its own");
  if (!job.prompt_out.empty() && (method == Method::Interp || method == Method::ZeroShot))
    throw_input("--prompt-out needs --mode prompt, full or unet (nothing is tuned with --mode {})",
                method_name(method));
  refuse_backbone_for_unet(job, method);
  if (!job.tune_params.resume_from.empty() && method != Method::Prompt && method != Method::Full &&
      method != Method::UNet)
    throw_input("--resume needs --mode prompt or full (nothing is tuned with --mode {})",
                method_name(method));
  if (!job.tune_params.resume_from.empty() && method == Method::UNet)
    throw_input("--resume is only supported with --mode prompt");
  if ((!job.bank.empty() || job.bank_add) && method != Method::Prompt)
    throw_input("--bank needs --mode prompt (a bank holds prompts for the frozen backbone)");
  if (job.bank_add && job.bank.empty()) throw_input("--bank-add needs --bank DIR");
  if (!job.bank.empty() && !job.tune_params.resume_from.empty())
    throw_input("--bank and --resume both choose the starting prompt: pass one of them");

  RestoreOutcome out;
  Models models;
  if (uses_backbone(method)) {
    models.backbone = load_backbone(backbone_path(job), job.device);
    log_backbone(models.backbone);
  }
  InputStack v = open_input(job, method, uses_backbone(method) ? models.backbone.hash : "");
  const double k = v.factor;
  const Interp interp =
      job.interp ? *job.interp
                 : resolve_interp("auto", uses_backbone(method) ? &models.backbone : nullptr);
  const TuneParams& base = job.tune_params;
  if (method == Method::Interp) {
    reconstruct_and_write(job, v, method, k, interp, models, std::nullopt, {}, out);
    finish_input(v, out);
    return out;
  }
  if (method == Method::ZeroShot) {
    models.prompted = PromptedModel(models.backbone, PromptConfig{}, false);
    reconstruct_and_write(job, v, method, k, interp, models, v.normalizer(base.pmin, base.pmax), {},
                          out);
    finish_input(v, out);
    return out;
  }

  TuneParams tp = base;
  tp.mode = method == Method::Full   ? TuneParams::Mode::Full
            : method == Method::UNet ? TuneParams::Mode::UNet
                                     : TuneParams::Mode::Prompt;
  tp.factor = k;
  tp.interp = interp;
  tp.device = job.device;
  // A streamed stack tunes on some of its planes, with the whole volume's normalisation.
  if (v.streamed) tp.norm = v.normalizer(tp.pmin, tp.pmax);
  // A streamed run keeps its tuned state in the scratch directory: a rerun after an
  // interruption reconstructs with it instead of tuning again.
  const std::string kept = v.scratch ? v.scratch->path("prompt.safetensors") : "";
  // Under mpirun rank 0 tunes; the others load its state once it is saved.
  const bool leader = Ranks::rank() == 0;
  if (!leader) Ranks::barrier();
  const bool tuned_before = !kept.empty() && file_exists(kept);
  if (!job.bank.empty() && !tuned_before) {
    // An empty or missing bank is fine when this run is to start it.
    const PromptBank bank = open_bank(job.bank, !job.bank_add);
    // A name the user chose must be free before the tuning time is spent.
    if (job.bank_add && !job.bank_name.empty() &&
        unique_bank_name(bank, job.bank_name) != job.bank_name)
      throw_input(
          "bank {} already has an entry '{}' (remove it first, or pick another "
          "--bank-name)",
          job.bank, job.bank_name);
    out.used_bank = true;
    out.bank_choice = choose_prompt(bank, v.tune_volume(), models.backbone, tp);
    log_bank_choice(job.bank, out.bank_choice);
    if (out.bank_choice.best >= 0) tp.resume_from = out.bank_choice.path;
  }
  TuneResult r;
  if (tuned_before) {
    LoadedPrompt lp = method == Method::UNet ? load_unet(kept, job.device) : load_prompt(kept, models.backbone);
    r.model = lp.model;
    r.unet = lp.unet;
    r.info = lp.info;
    r.evaluated = true;
    log_info("using the state tuned by the interrupted run ({})", kept);
  } else {
    r = method == Method::UNet ? tune(v.tune_volume(), tp) : tune(v.tune_volume(), models.backbone, tp);
    if (!kept.empty() && !r.cancelled) save_prompt(kept, r);
  }
  if (leader && Ranks::size() > 1) Ranks::barrier();
  out.tuned = true;
  out.have_info = true;
  out.info = r.info;
  out.val_history = r.val_history;
  out.loss_history = r.loss_history;
  // An interrupted run never replaces a prompt file with an untrained one.
  const bool save = leader && !job.prompt_out.empty() && (!r.cancelled || r.evaluated);
  if (save) {
    save_prompt(job.prompt_out, r);
    out.saved_prompt = true;
    log_info("saved the {} to {}",
             method == Method::Full   ? "fully fine-tuned model"
             : method == Method::UNet ? "U-Net"
                                      : "prompt",
             job.prompt_out);
  }
  if (r.cancelled) {
    if (save)
      log_warn("interrupted during tuning: kept the best state so far in {}", job.prompt_out);
    else if (!job.prompt_out.empty())
      log_warn("interrupted before the first validation: {} was not written", job.prompt_out);
    throw Cancelled();
  }
  log_info("tuned: validation PSNR {} dB ({} {}, {} {}) at step {}", num(r.info.val_psnr),
           start_name(method), num(r.info.zero_shot_psnr), interp_name(r.info.interp),
           num(r.info.interp_psnr), r.info.best_step);
  // The validation scores go into the output file, so the result says how it was judged.
  FileNotes scores = {{"validation_psnr_db", num(r.info.val_psnr)},
                      {"validation_pairs", validation_kind(r.info)},
                      {method == Method::UNet ? "untrained_psnr_db" : "zero_shot_psnr_db",
                       num(r.info.zero_shot_psnr)},
                      {"interp_psnr_db", fmt::format("{} ({})", num(r.info.interp_psnr),
                                                     interp_name(r.info.interp))}};
  if (out.used_bank && out.bank_choice.best >= 0)
    scores.emplace_back("bank_start",
                        fmt::format("{} ({})", out.bank_choice.ranking.front().name, job.bank));
  if (!model_beats_interpolation(r.info)) {
    // Never worse than interpolation without saying so: the stack's own pairs are the only
    // evidence there is without ground truth.
    log_warn(
        "the tuned model is not better than {} interpolation on this stack's {} pairs ({} dB "
        "vs {} dB){}",
        interp_name(r.info.interp), validation_kind(r.info), num(r.info.val_psnr),
        num(r.info.interp_psnr),
        job.fallback_to_interp
            ? ": writing the interpolation instead (--fallback none keeps the model)"
            : ": writing the model's result anyway (--fallback none)");
    if (job.bank_add)
      log_warn("--bank-add: the prompt is not added to {}: it did not beat the interpolation",
               job.bank);
    if (job.fallback_to_interp) {
      scores.emplace_back("fallback", fmt::format("the tuned {} model was not better than the "
                                                  "interpolation on {} pairs",
                                                  method_name(method), validation_kind(r.info)));
      out.fell_back = true;
      reconstruct_and_write(job, v, Method::Interp, k, r.info.interp, models, std::nullopt,
                            std::move(scores), out);
      finish_input(v, out);
      return out;
    }
    scores.emplace_back("warning", fmt::format("not better than interpolation on {} pairs",
                                               validation_kind(r.info)));
  }
  if (method == Method::UNet)
    models.unet = r.unet;
  else
    models.prompted = r.model;
  reconstruct_and_write(job, v, method, k, interp, models, r.info.norm, std::move(scores), out);
  // After the output: the result the user asked for comes first.
  if (job.bank_add && leader) out.banked_as = add_to_bank(job, v, r);
  finish_input(v, out);
  return out;
}

}  // namespace

const char* method_name(Method m) {
  switch (m) {
    case Method::Prompt:
      return "prompt";
    case Method::ZeroShot:
      return "zero-shot";
    case Method::Full:
      return "full";
    case Method::UNet:
      return "unet";
    case Method::Interp:
      return "interp";
  }
  return "?";
}

Method parse_method(const std::string& s) {
  for (Method m : {Method::Prompt, Method::ZeroShot, Method::Full, Method::UNet, Method::Interp})
    if (s == method_name(m)) return m;
  throw_input("unknown --mode '{}': expected prompt, zero-shot, full, unet or interp", s);
}

std::string default_backbone_path() {
  const std::string name = "isoprompt-default.safetensors";
  std::string looked;
  if (const char* env = std::getenv("ISOPROMPT_MODELS"); env && *env) {
    const std::string p = std::string(env) + "/" + name;
    if (file_exists(p)) return p;
    looked = p + " ($ISOPROMPT_MODELS), ";
  }
  const std::string p = std::string(ISO_SOURCE_DIR) + "/models/" + name;
  if (file_exists(p)) return p;
  throw_input("default backbone not found (looked for {}{}); pass --backbone FILE", looked, p);
}

std::string uncertainty_definition(bool tta) {
  return tta ? "standard deviation of the 8 restorations of each voxel (XZ and YZ, each as it is "
               "and flipped along x or y, z, both), output intensity units"
             : "standard deviation of the 2 restorations of each voxel (XZ and YZ), output "
               "intensity units";
}

void check_restore_job(const RestoreJob& job) {
  if (job.method == Method::Interp) {
    // Both are statements about a network's restorations; interpolation has none, and a
    // map of zeros would claim a certainty nobody measured.
    if (job.tta) throw_input("--tta needs a network: --mode interp has no restorations to average");
    if (!job.uncertainty.empty())
      throw_input(
          "--uncertainty needs a network: the map is the spread of the network's XZ and YZ "
          "restorations, and --mode interp has none");
  }
  if (!(job.factor == 0 || (job.factor >= 1 && job.factor <= 1000)))
    throw_input("--factor must be 'auto' or a number in 1..1000, got {}", job.factor);
  if (job.tile != 0 && job.tile < 16)
    throw_input("--tile {} is too small: use 0 (automatic) or at least 16", job.tile);
  if (job.overlap < -1) throw_input("--overlap {} must be >= 0 (or -1 for automatic)", job.overlap);
  if (job.batch < 0) throw_input("--batch {} must be >= 0 (0 = automatic)", job.batch);
  if (!(job.tile_memory_gb > 0) || !std::isfinite(job.tile_memory_gb))
    throw_input("--tile-memory {} must be a positive number of GB", job.tile_memory_gb);
  if (!(job.max_memory_gb >= 0) || !std::isfinite(job.max_memory_gb))
    throw_input("--max-memory {} must be a positive number of GB", job.max_memory_gb);
  check_input_volume(job.input, "input file");
  if (!job.prompt.empty()) check_input_file(job.prompt, "prompt file");
  const std::vector<std::string> inputs = job_inputs(job);
  check_output_path(job.output, inputs);
  std::vector<std::string> taken = inputs;
  taken.push_back(job.output);
  if (!job.uncertainty.empty()) {
    check_output_path(job.uncertainty, taken);
    taken.push_back(job.uncertainty);
  }
  if (!job.report.empty()) {
    check_output_path(job.report, taken);
    taken.push_back(job.report);
  }
  if (!job.prompt_out.empty()) check_output_path(job.prompt_out, taken);
}

RestoreOutcome run_restore_job(const RestoreJob& job) {
  check_restore_job(job);
  return job.tune ? run_restore(job) : run_predict(job);
}

}  // namespace isoprompt
