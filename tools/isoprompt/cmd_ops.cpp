// `isoprompt simulate`, `isoprompt baseline` and `isoprompt eval`.
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "common_args.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/metrics.h"
#include "isoprompt/ops.h"

namespace isoprompt::cli {

namespace {

Volume load(const std::string& path, bool* calibrated = nullptr, const std::string& nan = "") {
  TiffFileInfo fi;
  ReadOptions ro;
  if (!nan.empty()) ro.nan = parse_nan_policy(nan);
  Volume v = read_volume(path, ro, &fi);
  if (calibrated) *calibrated = fi.calibrated;
  return v;
}
void save(const std::string& path, const Volume& v) { write_volume(path, v); }

int parse_axis(const std::string& s) {
  if (s == "z") return 0;
  if (s == "y") return 1;
  if (s == "x") return 2;
  throw_input("--axis must be z, y or x, got '{}'", s);
}
const char* axis_letter(int a) { return a == 0 ? "z" : a == 1 ? "y" : "x"; }
double step_of(const VoxelSize& v, int a) { return a == 0 ? v.z : a == 1 ? v.y : v.x; }

std::string num(double v) { return fmt::format("{:.6g}", v); }

// Converts float32 results to `dt` with rounding; warns about clipped voxels.
Volume to_dtype(const Volume& f32, DType dt, const std::string& what) {
  if (dt == DType::F32) return f32;
  ClipReport rep;
  Volume out = denormalize(f32, Normalizer{0.0, 1.0}, dt, &rep);
  if (!rep.summary().empty()) log_warn("{}: {}", what, rep.summary());
  return out;
}

// ---- simulate -------------------------------------------------------------------------

struct SimulateArgs {
  std::string in, out, axis = "z", model = "average", psf_file;
  double factor = 0, psf_fwhm = 0, psf_sigma = 0, poisson = 0, gaussian = 0;
  uint64_t seed = 0;
};

void run_simulate(const SimulateArgs& a) {
  apply_globals();
  check_input_volume(a.in);
  check_output_path(a.out, {a.in, a.psf_file});
  const int axis = parse_axis(a.axis);
  DegradeParams p;
  p.factor = a.factor;
  if (a.model == "average") {
    p.model = DegradeParams::Average;
    if (a.psf_fwhm > 0 || a.psf_sigma > 0 || !a.psf_file.empty())
      throw_input("--psf-fwhm, --psf-sigma and --psf-file need --model psf");
  } else if (a.model == "psf") {
    p.model = DegradeParams::Psf;
    const int n_set = (a.psf_fwhm > 0) + (a.psf_sigma > 0) + (!a.psf_file.empty());
    if (n_set != 1) throw_input("--model psf needs exactly one of --psf-fwhm, --psf-sigma or --psf-file");
    p.psf_fwhm_um = a.psf_fwhm;
    p.psf_sigma_px = a.psf_sigma;
  } else {
    throw_input("--model must be average or psf, got '{}'", a.model);
  }
  p.poisson_peak = a.poisson;
  p.gaussian_sigma = a.gaussian;
  p.seed = a.seed;
  if (!a.psf_file.empty()) {
    check_input_file(a.psf_file, "psf file");
    const std::string ext = lowercase_extension(a.psf_file);
    if (ext == ".tif" || ext == ".tiff" || ext == ".ome.tif" || ext == ".ome.tiff")
      p.psf_profile = psf_profile_from_stack(load(a.psf_file));
    else
      p.psf_profile = read_psf_profile_text(a.psf_file);
  }
  validate(p);

  const Volume v = load(a.in);
  const Volume d = degrade(v, axis, p);
  const Volume out = to_dtype(d, v.dtype(), "simulate");
  save(a.out, out);
  const double s0 = step_of(v.voxel_size(), axis), s1 = step_of(out.voxel_size(), axis);
  log_info("simulate: {} -> {} ({}), {} step {} -> {} {} (factor {})", to_string(v.shape()), to_string(out.shape()),
           dtype_name(out.dtype()), axis_letter(axis), num(s0), num(s1), v.unit(), num(p.factor));
  std::printf("wrote %s  %s %s, voxel %s x %s x %s %s\n", a.out.c_str(), to_string(out.shape()).c_str(),
              dtype_name(out.dtype()), num(out.voxel_size().z).c_str(), num(out.voxel_size().y).c_str(),
              num(out.voxel_size().x).c_str(), out.unit().c_str());
}

// ---- baseline -------------------------------------------------------------------------

struct BaselineArgs {
  std::string in, out, method = "cubic", factor = "auto", axis = "z", nan = "refuse";
};

void run_baseline(const BaselineArgs& a) {
  apply_globals();
  check_input_volume(a.in);
  check_output_path(a.out, {a.in});
  const Interp m = parse_interp(a.method);
  const int axis = parse_axis(a.axis);
  double factor = parse_factor(a.factor);
  bool calibrated = false;
  const Volume v = load(a.in, &calibrated, a.nan);
  if (a.factor == "auto") {
    if (!calibrated)
      throw_input("{} has no voxel-size calibration, so --factor auto cannot work: pass --factor K", a.in);
    const VoxelSize& vs = v.voxel_size();
    const double lateral = axis == 2 ? vs.y : vs.x;
    factor = step_of(vs, axis) / lateral;
    if (!(factor >= 1))
      throw_input("{}: {} step {} is finer than the lateral pixel {}: nothing to upsample", a.in, axis_letter(axis),
                  num(step_of(vs, axis)), num(lateral));
    if (axis == 0 && vs.y != vs.x) log_warn("pixels are not square (y {} vs x {}): using x", num(vs.y), num(vs.x));
    log_info("factor auto: {} step {} / lateral {} = {}", axis_letter(axis), num(step_of(vs, axis)), num(lateral),
             num(factor));
  }
  const Volume up = upsample(v, axis, factor, m);
  const Volume out = to_dtype(up, v.dtype(), "baseline");
  save(a.out, out);
  std::printf("wrote %s  %s %s, voxel %s x %s x %s %s (%s, factor %s)\n", a.out.c_str(),
              to_string(out.shape()).c_str(), dtype_name(out.dtype()), num(out.voxel_size().z).c_str(),
              num(out.voxel_size().y).c_str(), num(out.voxel_size().x).c_str(), out.unit().c_str(),
              interp_name(m), num(factor).c_str());
}

// ---- eval -----------------------------------------------------------------------------

struct EvalArgs {
  std::string gt, pred, mask, norm = "gt-percentiles", nan = "refuse";
  bool json = false, crop_to_gt = false;
  double pmin = 0.1, pmax = 99.9, data_range = 0;
  int scales = 5;
};

nlohmann::json metric_json(const MetricSet& m) {
  auto v = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  return {{"psnr", v(m.psnr)}, {"ssim", v(m.ssim)}, {"ms_ssim", v(m.ms_ssim)}, {"nrmse", v(m.nrmse)}};
}

std::string fmt_metric(double x, int prec) {
  if (std::isinf(x)) return "inf";
  return fmt::format("{:.{}f}", x, prec);
}

void run_eval(const EvalArgs& a) {
  apply_globals();
  check_input_volume(a.gt, "ground truth");
  check_input_volume(a.pred, "prediction");
  if (!a.mask.empty()) check_input_volume(a.mask, "mask");
  EvalOptions o;
  if (a.norm == "gt-percentiles") o.norm = EvalOptions::GtPercentiles;
  else if (a.norm == "none") o.norm = EvalOptions::None;
  else throw_input("--norm must be gt-percentiles or none, got '{}'", a.norm);
  if (!(a.pmin >= 0 && a.pmax <= 100 && a.pmin < a.pmax))
    throw_input("--pmin/--pmax must satisfy 0 <= pmin < pmax <= 100, got {} and {}", a.pmin, a.pmax);
  if (a.data_range < 0) throw_input("--data-range must be positive, got {}", a.data_range);
  if (a.data_range > 0 && o.norm != EvalOptions::None) throw_input("--data-range needs --norm none");
  if (a.scales < 1 || a.scales > 5) throw_input("--ms-ssim-scales must be 1..5, got {}", a.scales);
  o.pmin = a.pmin;
  o.pmax = a.pmax;
  o.data_range = a.data_range;
  o.ms_ssim_scales = a.scales;
  o.crop_to_gt = a.crop_to_gt;
  const Volume gt = load(a.gt, nullptr, a.nan);
  const Volume pred = load(a.pred, nullptr, a.nan);
  Volume mask;
  if (!a.mask.empty()) {
    mask = load(a.mask);
    o.mask = &mask;
  }
  const EvalReport r = evaluate(gt, pred, o);
  if (a.json) {
    nlohmann::json j;
    j["gt"] = a.gt;
    j["pred"] = a.pred;
    j["shape"] = {r.shape.z, r.shape.y, r.shape.x};
    j["voxels"] = r.voxels;
    j["normalization"] = a.norm;
    if (o.norm == EvalOptions::GtPercentiles)
      j["gt_percentiles"] = {{"pmin", a.pmin}, {"pmax", a.pmax}, {"lo", r.gt_lo}, {"hi", r.gt_hi}};
    j["data_range"] = r.data_range;
    j["ms_ssim_scales"] = r.ms_ssim_scales;
    j["overall"] = metric_json(r.overall);
    j["xy"] = metric_json(r.xy);
    j["xz"] = metric_json(r.xz);
    j["yz"] = metric_json(r.yz);
    j["note"] = "null = +inf (identical)";
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::string s;
  s += fmt::format("shape    {} ({} voxels evaluated)\n", to_string(r.shape), r.voxels);
  if (o.norm == EvalOptions::GtPercentiles)
    s += fmt::format("scale    GT p{} = {} -> 0, p{} = {} -> 1, clipped, data range 1\n", num(a.pmin), num(r.gt_lo),
                     num(a.pmax), num(r.gt_hi));
  else
    s += fmt::format("scale    raw values, data range {}\n", num(r.data_range));
  s += fmt::format("{:<9}{:>10}{:>9}{:>9}{:>9}\n", "", "PSNR dB", "SSIM", "MS-SSIM", "NRMSE");
  auto row = [&](const char* name, const MetricSet& m) {
    s += fmt::format("{:<9}{:>10}{:>9}{:>9}{:>9}\n", name, fmt_metric(m.psnr, 2), fmt_metric(m.ssim, 4),
                     fmt_metric(m.ms_ssim, 4), fmt_metric(m.nrmse, 4));
  };
  row("overall", r.overall);
  row("xy", r.xy);
  row("xz", r.xz);
  row("yz", r.yz);
  s += fmt::format("(ms-ssim with {} scale{}; per-orientation values are means over planes)\n", r.ms_ssim_scales,
                   r.ms_ssim_scales == 1 ? "" : "s");
  std::fputs(s.c_str(), stdout);
}

}  // namespace

void register_ops_commands(CLI::App& app) {
  {
    auto a = std::make_shared<SimulateArgs>();
    auto* c = app.add_subcommand("simulate",
                                 "make an isotropic stack anisotropic: blur along an axis, subsample by K, add noise");
    c->add_option("input", a->in, "isotropic input TIFF")->required();
    c->add_option("-o,--output", a->out, "anisotropic output TIFF (same dtype; step along the axis x K)")->required();
    c->add_option("--factor", a->factor, "subsampling factor K >= 1 (fractional allowed, e.g. 4.43)")
        ->required()
        ->check(CLI::Range(1.0, 1e6));
    c->add_option("--axis", a->axis, "axis to degrade: z, y or x")->capture_default_str();
    c->add_option("--model", a->model, "average (box of K voxels) or psf (Gaussian / measured profile)")
        ->capture_default_str();
    c->add_option("--psf-fwhm", a->psf_fwhm, "psf: Gaussian FWHM in the file's unit (um)");
    c->add_option("--psf-sigma", a->psf_sigma, "psf: Gaussian sigma in input pixels");
    c->add_option("--psf-file", a->psf_file,
                  "psf: measured profile, a text file (one value per input voxel) or a PSF stack TIFF");
    c->add_option("--poisson", a->poisson, "Poisson noise: photons at the image maximum (0 = off)")
        ->capture_default_str();
    c->add_option("--gaussian", a->gaussian, "additive Gaussian noise sigma in intensity units (0 = off)")
        ->capture_default_str();
    c->add_option("--seed", a->seed, "noise seed")->capture_default_str()->check(seed_validator());
    c->callback([a] { run_simulate(*a); });
  }
  {
    auto a = std::make_shared<BaselineArgs>();
    auto* c = app.add_subcommand("baseline", "make a stack isotropic by interpolation along z");
    c->add_option("input", a->in, "anisotropic input TIFF")->required();
    c->add_option("-o,--output", a->out, "isotropic output TIFF (same dtype; step along the axis / K)")->required();
    c->add_option("--method", a->method,
                  "nearest, linear, cubic (cubic B-spline, prefiltered, as scipy/skimage order 3; also 'bspline'), "
                  "keys (Keys a = -0.5; also 'catmull-rom') or lanczos (Lanczos-3)")
        ->capture_default_str();
    c->add_option("--factor", a->factor, "upsampling factor K >= 1, or auto = z-step / xy-pixel from the calibration")
        ->capture_default_str();
    c->add_option("--axis", a->axis, "axis to upsample: z, y or x")->capture_default_str();
    add_nan_flag(c, a->nan);
    c->callback([a] { run_baseline(*a); });
  }
  {
    auto a = std::make_shared<EvalArgs>();
    auto* c = app.add_subcommand("eval", "compare a restored volume with its ground truth (PSNR, SSIM, MS-SSIM, NRMSE)");
    c->add_option("--gt", a->gt, "ground-truth TIFF")->required();
    c->add_option("--pred", a->pred, "restored TIFF")->required();
    c->add_flag("--json", a->json, "print JSON instead of a table");
    c->add_flag("--crop-to-gt", a->crop_to_gt, "shapes differ: evaluate the common box at the origin (the prediction is cropped to the GT; a shorter prediction crops the GT too)");
    c->add_option("--mask", a->mask, "mask TIFF of the GT's shape (non-zero = evaluate)");
    c->add_option("--norm", a->norm,
                  "gt-percentiles: map both to [0,1] with the GT's pmin/pmax percentiles, clip, range 1; "
                  "none: raw values")
        ->capture_default_str();
    c->add_option("--pmin", a->pmin, "low GT percentile")->capture_default_str();
    c->add_option("--pmax", a->pmax, "high GT percentile")->capture_default_str();
    c->add_option("--data-range", a->data_range, "with --norm none: data range (0 = dtype range of the GT)")
        ->capture_default_str();
    c->add_option("--ms-ssim-scales", a->scales, "MS-SSIM scales (1..5; fewer when planes are small)")
        ->capture_default_str();
    add_nan_flag(c, a->nan);
    c->callback([a] { run_eval(*a); });
  }
}

}  // namespace isoprompt::cli
