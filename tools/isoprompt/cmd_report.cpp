// `isoprompt report`: the QC report (include/isoprompt/report.h) of a restoration already
// on disk. The factor and interpolation come from the restored file's provenance notes
// unless given.
#include <chrono>
#include <cmath>
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
#include "isoprompt/ops.h"
#include "isoprompt/report.h"
#include "isoprompt/restore.h"

namespace isoprompt::cli {

namespace {

struct ReportArgs {
  std::string input, restored, uncertainty, gt, out, title, factor = "auto", interp = "auto", nan = "refuse";
  double psf_fwhm = 0, psf_sigma = 0;
};

std::string num(double v) { return fmt::format("{:.6g}", v); }

const std::string* note(const FileNotes& notes, const std::string& key) {
  for (const auto& [k, v] : notes)
    if (k == key) return &v;
  return nullptr;
}

// "26.13" or "26.13 (cubic)" -> 26.13; NaN when absent or not a number.
double note_number(const FileNotes& notes, const std::string& key) {
  const std::string* v = note(notes, key);
  if (!v) return NAN;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  return end != v->c_str() && std::isfinite(x) ? x : NAN;
}

struct Loaded {
  Volume volume;
  TiffFileInfo info;
};

Loaded load(const std::string& path, const std::string& nan) {
  Loaded l;
  ReadOptions ro;
  ro.nan = parse_nan_policy(nan);
  l.volume = read_volume(path, ro, &l.info);
  return l;
}

// --factor auto: what the restored file says it was made with, else the calibration.
double resolve_report_factor(const ReportArgs& a, const Loaded& in, const Loaded& out, std::string& source) {
  const double given = parse_factor(a.factor);
  if (given > 0) {
    source = "--factor";
    return given;
  }
  const double noted = note_number(out.info.notes, "factor");
  if (noted >= 1) {
    source = a.restored + " (isoprompt.factor)";
    return noted;
  }
  if (in.info.calibrated && out.info.calibrated && in.volume.unit() == out.volume.unit()) {
    source = "z steps of the two files";
    return in.volume.voxel_size().z / out.volume.voxel_size().z;
  }
  if (in.info.calibrated) {
    source = a.input + " z step / xy pixel";
    return in.volume.voxel_size().anisotropy();
  }
  throw_input("{} records no factor and {} has no voxel-size calibration: pass --factor K", a.restored, a.input);
}

// --interp auto: the restored file's interpolation (interp mode writes it; restore writes it
// beside the interpolation's validation score), else the cubic B-spline, the input
// interpolation of the shipped backbone and of --mode interp.
Interp resolve_report_interp(const ReportArgs& a, const Loaded& out, std::string& source) {
  if (a.interp != "auto") {
    source = "--interp";
    return parse_interp(a.interp);
  }
  if (const std::string* v = note(out.info.notes, "interp")) {
    source = a.restored + " (isoprompt.interp)";
    return parse_interp(*v);
  }
  if (const std::string* v = note(out.info.notes, "interp_psnr_db")) {
    const auto open = v->find('('), close = v->find(')');
    if (open != std::string::npos && close != std::string::npos && close > open) {
      source = a.restored + " (isoprompt.interp_psnr_db)";
      return parse_interp(v->substr(open + 1, close - open - 1));
    }
  }
  source = "the default: the restored file does not say";
  return resolve_interp("auto", nullptr);
}

void run_report(const ReportArgs& a) {
  apply_globals();
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  // Every check that needs no voxels, before reading any.
  check_input_volume(a.input, "input file");
  check_input_volume(a.restored, "restored volume");
  if (!a.uncertainty.empty()) check_input_volume(a.uncertainty, "uncertainty map");
  if (!a.gt.empty()) check_input_volume(a.gt, "ground truth");
  check_output_path(a.out, {a.input, a.restored, a.uncertainty, a.gt});
  parse_factor(a.factor);
  if (a.interp != "auto") parse_interp(a.interp);
  if (a.psf_fwhm > 0 && a.psf_sigma > 0) throw_input("give one of --psf-fwhm and --psf-sigma, not both");

  const Loaded in = load(a.input, a.nan);
  const Loaded out = load(a.restored, a.nan);
  Loaded umap, gt;
  if (!a.uncertainty.empty()) umap = load(a.uncertainty, a.nan);
  if (!a.gt.empty()) gt = load(a.gt, a.nan);
  const auto t1 = clock::now();

  ReportInputs r;
  r.title = a.title.empty() ? a.input : a.title;
  r.input = &in.volume;
  r.output = &out.volume;
  r.uncertainty = a.uncertainty.empty() ? nullptr : &umap.volume;
  r.ground_truth = a.gt.empty() ? nullptr : &gt.volume;
  std::string factor_source, interp_source;
  r.factor = resolve_report_factor(a, in, out, factor_source);
  r.interp = resolve_report_interp(a, out, interp_source);
  if (a.psf_fwhm > 0 || a.psf_sigma > 0) {
    r.degrade.model = DegradeParams::Psf;
    r.degrade.psf_fwhm_um = a.psf_fwhm;
    r.degrade.psf_sigma_px = a.psf_sigma;
  }
  r.degrade.factor = r.factor;
  validate(r.degrade);
  // Eight restorations per voxel with TTA (the map's own note says which), else two.
  const std::string* definition = r.uncertainty ? note(umap.info.notes, "uncertainty") : nullptr;
  const bool tta = (definition && definition->find("of the 8 ") != std::string::npos) ||
                   (!definition && note(out.info.notes, "tta"));
  r.uncertainty_restorations = tta ? 8 : 2;
  r.zero_shot_psnr = note_number(out.info.notes, "zero_shot_psnr_db");
  r.interp_psnr = note_number(out.info.notes, "interp_psnr_db");

  r.parameters = {{"factor", fmt::format("{} (from {})", num(r.factor), factor_source)},
                  {"interpolation", fmt::format("{} (from {})", interp_name(r.interp), interp_source)},
                  {"re-degradation", r.degrade.model == DegradeParams::Average
                                         ? "box average of K planes"
                                         : fmt::format("PSF, FWHM {} um / sigma {} px", num(a.psf_fwhm),
                                                       num(a.psf_sigma))}};
  for (const auto& [k, v] : out.info.notes) r.parameters.emplace_back("restored file: " + k, v);
  r.files = {{"input", a.input}, {"restored", a.restored}};
  if (r.uncertainty) r.files.emplace_back("uncertainty map", a.uncertainty);
  if (r.ground_truth) r.files.emplace_back("ground truth", a.gt);
  r.files.emplace_back("report (written)", a.out);
  const double read_s = std::chrono::duration<double>(t1 - t0).count();
  r.timings = {{"reading the volumes", fmt::format("{:.2f} s", read_s)}};

  ReportMetrics m;
  write_report(a.out, r, &m);
  const double report_s = std::chrono::duration<double>(clock::now() - t1).count();

  auto dbs = [](double v) { return std::isinf(v) ? std::string("inf") : fmt::format("{:.2f} dB", v); };
  std::printf("wrote %s (%.1f s)  self-consistency PSNR(re-degraded, input): restored %s, %s interpolation %s\n",
              a.out.c_str(), report_s, dbs(m.self.output_psnr).c_str(), interp_name(r.interp),
              dbs(m.self.interp_psnr).c_str());
  if (m.gt.available)
    std::printf("against %s: restored %s (SSIM %.4f), interpolation %s (SSIM %.4f)\n", a.gt.c_str(),
                dbs(m.gt.output_psnr).c_str(), m.gt.output_ssim, dbs(m.gt.interp_psnr).c_str(), m.gt.interp_ssim);
}

}  // namespace

void register_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  auto* c = app.add_subcommand("report",
                               "QC report of a restoration as one self-contained HTML file: orthogonal views, z "
                               "profiles, self-consistency (re-degraded output vs input), metrics against --gt");
  c->add_option("input", a->input, "the anisotropic stack that was restored")->required();
  c->add_option("restored", a->restored, "the restored volume (predict / restore output)")->required();
  c->add_option("-o,--output", a->out, "report file (.html)")->required();
  c->add_option("--uncertainty", a->uncertainty, "the uncertainty map written with --uncertainty");
  c->add_option("--gt", a->gt, "ground truth on the restored grid: adds PSNR and SSIM");
  c->add_option("--factor", a->factor,
                "z factor K, or auto = the restored file's recorded factor, else the calibration")
      ->capture_default_str();
  c->add_option("--interp", a->interp,
                "interpolation of the input view and baseline: nearest | linear | keys | cubic | lanczos | auto "
                "(the restored file's, else cubic)")
      ->capture_default_str();
  c->add_option("--psf-fwhm", a->psf_fwhm, "re-degrade with a Gaussian PSF of this FWHM (um) instead of a box");
  c->add_option("--psf-sigma", a->psf_sigma, "re-degrade with a Gaussian PSF of this sigma (input px)");
  c->add_option("--title", a->title, "title of the report (default: the input path)");
  add_nan_flag(c, a->nan);
  c->callback([a] { run_report(*a); });
}

}  // namespace isoprompt::cli
