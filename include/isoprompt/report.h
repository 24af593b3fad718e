// QC report of a restoration: one self-contained HTML file (images embedded as PNG data
// URLs, plots as inline SVG, no script, no external resource) that a microscopist can open
// on a laptop to judge a result, with or without ground truth.
//
//   isoprompt::ReportInputs in;
//   in.title = "stack.tif";
//   in.input = &stack;            // the anisotropic stack as read (its voxel size)
//   in.output = &iso;             // the restored volume
//   in.factor = 4;                // how z was upsampled ...
//   in.interp = Interp::BSpline3; // ... and with what (the interpolated view, the baseline)
//   in.val_history = tuned.val_history;  // optional tuning curve
//   isoprompt::write_report("stack.report.html", in);
//
// Contents: orthogonal views (XY at the middle z, XZ at the middle y, YZ at the middle x,
// z drawn at its physical scale) of the input interpolated along z, the output, the ground
// truth and the uncertainty map; z profiles through the centre; the tuning curve; the
// self-consistency check; parameters, timings, voxel sizes and files.
//
// Self-consistency (no ground truth needed): a restoration that is right must, degraded
// again along z the way the stack was degraded (ReportInputs::degrade, by default the
// box average of K planes that `simulate` and the training pairs use), reproduce the input.
// The report gives PSNR(re-degraded output, input) and, beside it, the same number for the
// plain interpolation (interpolated input re-degraded), both with the input's 0.1 / 99.9
// percentiles mapped to [0, 1] and clipped (data range 1, as `eval` does with a ground
// truth). Higher is more consistent; +inf means the re-degraded volume equals the input.
// Consistency is necessary, not sufficient: many volumes degrade to the same input. On a
// noisy stack a denoising restoration scores below the interpolation (which keeps the
// noise) and above the noise floor (SelfConsistency::noise_floor_psnr); the page says which.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "isoprompt/ops.h"
#include "isoprompt/volume.h"

namespace isoprompt {

/// Everything the report shows. Pointers are borrowed (must live during the call); optional
/// ones may be null. Volumes may be of any dtype.
struct ReportInputs {
  std::string title;                       // e.g. the input file name
  const Volume* input = nullptr;           // the anisotropic stack as read (required)
  const Volume* output = nullptr;          // the restored volume (required; same y, x as input)
  const Volume* uncertainty = nullptr;     // optional; the output's shape
  const Volume* ground_truth = nullptr;    // optional; adds PSNR / SSIM against it
  /// z upsampling factor K >= 1 and interpolation: the interpolated view and baseline.
  double factor = 0;
  Interp interp = Interp::BSpline3;
  /// How the stack is taken to have been degraded along z, for the self-consistency
  /// check. Its factor is ignored (`factor` is used); noise is never added.
  DegradeParams degrade;
  /// Restorations behind each voxel of the uncertainty map: 2 (XZ and YZ) or 8 (with TTA).
  /// With 2 the map is |xz - yz| / 2, so the report can state the XZ-vs-YZ agreement.
  int uncertainty_restorations = 2;
  /// Tuning curve, as TuneResult has it: (step, validation PSNR dB), (step, training loss).
  std::vector<std::pair<int64_t, double>> val_history, loss_history;
  double zero_shot_psnr = NAN, interp_psnr = NAN;  // reference lines on the curve (dB)
  bool val_in_sample = false;  // the curve's pairs came from the training planes (thin stack)
  /// Free key/value tables, shown as given.
  std::vector<std::pair<std::string, std::string>> parameters, timings, files;
};

/// Self-consistency numbers (dB; +inf = identical, NaN = not computed).
struct SelfConsistency {
  double output_psnr = NAN;             // PSNR(re-degraded output, input)
  double interp_psnr = NAN;             // PSNR(re-degraded interpolated input, input)
  double output_vs_interp_psnr = NAN;   // PSNR(output, interpolated input): how far the
                                        // restoration moved from the interpolation (not a score)
  double xz_yz_psnr = NAN;              // PSNR(XZ restoration, YZ restoration) from a 2-pass map
  double uncertainty_mean = NAN;        // map mean, output intensity units
  double uncertainty_p99 = NAN;         // map 99th percentile
  int64_t planes_compared = 0;          // input planes compared
  /// The input's noise, estimated (estimate_noise_sigma, on the PSNR scale), and the PSNR a
  /// restoration that removed all of it would get: 10 log10(1 / sigma^2). An interpolation
  /// keeps most of the noise, so on a noisy stack a denoising restoration scores between
  /// this floor and the interpolation's value without being wrong.
  double input_noise_sigma = NAN;
  double noise_floor_psnr = NAN;
  Normalizer range;                     // input p0.1 / p99.9: what maps to [0, 1]
};

/// Scores against ground truth (GT percentiles 0.1 / 99.9 -> [0, 1], as `eval`).
struct GroundTruthScores {
  bool available = false;
  double output_psnr = NAN, output_ssim = NAN;
  double interp_psnr = NAN, interp_ssim = NAN;
};

struct ReportMetrics {
  SelfConsistency self;
  GroundTruthScores gt;
  double display_lo = 0, display_hi = 1;  // gray scale of every intensity panel (output p0.1 / p99.9)
  double map_hi = 0;                      // colour scale of the map: 0 .. its p99.9
};

/// PSNR(degrade(iso) along z, input) over the input planes both have, with `range` mapped
/// to [0, 1] and clipped (data range 1). `p.factor` must be set. +inf when identical.
double redegraded_psnr(const Volume& input, const Volume& iso, const DegradeParams& p, const Normalizer& range);

/// Standard deviation of the noise of `v`, after `range` -> [0, 1] and clipping: Immerkaer's
/// estimator (1996) on every XY plane, sqrt(pi / 2) / (6 (W - 2) (H - 2)) sum |v * L| with L
/// the 3x3 difference of two Laplacians ([1 -2 1; -2 4 -2; 1 -2 1]), averaged over the
/// planes. Exact for white Gaussian noise on a locally linear image; fine structure leaks
/// into it, so it errs high. 0 for planes smaller than 3 x 3.
double estimate_noise_sigma(const Volume& v, const Normalizer& range);

/// The numbers of the report without the HTML. Throws InputError when the volumes do not
/// fit together (y/x differ, the output's plane count is not round(nz * factor) +- 1, the
/// map's shape is not the output's, factor < 1).
ReportMetrics compute_report_metrics(const ReportInputs& in);

/// The whole report as one HTML document. `metrics` (optional) receives the numbers shown.
std::string render_report_html(const ReportInputs& in, ReportMetrics* metrics = nullptr);

/// render_report_html() written to `path` atomically (temporary file + rename).
void write_report(const std::string& path, const ReportInputs& in, ReportMetrics* metrics = nullptr);

/// Base64 (RFC 4648, with padding), as the report embeds its images; exposed for tests.
std::string base64_encode(const std::vector<uint8_t>& bytes);

}  // namespace isoprompt
