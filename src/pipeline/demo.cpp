// isoprompt demo: phantom -> x4 z-averaging -> cubic / zero-shot / prompt-tuned -> metrics.
#include "isoprompt/demo.h"

#include <chrono>
#include <cmath>

#include "isoprompt/infer.h"
#include "isoprompt/log.h"
#include "isoprompt/metrics.h"
#include "isoprompt/ops.h"
#include "isoprompt/restore.h"
#include "isoprompt/runtime.h"
#include "isoprompt/stats.h"
#include "isoprompt/train.h"

namespace isoprompt {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

DemoRow score(const std::string& name, const Volume& gt, const Volume& pred, double seconds,
              int64_t trainable) {
  EvalOptions eo;  // GT 0.1 / 99.9 percentiles -> [0, 1], clipped
  const EvalReport r = evaluate(gt, pred, eo);
  DemoRow row;
  row.method = name;
  row.psnr = r.overall.psnr;
  row.ssim = r.overall.ssim;
  row.ssim_xz = r.xz.ssim;
  row.seconds = seconds;
  row.trainable = trainable;
  log_info("{}: PSNR {:.2f} dB, SSIM {:.4f} ({:.1f} s)", name, row.psnr, row.ssim, seconds);
  return row;
}

Volume restore_with(const Volume& input, double factor, PromptedModel& model,
                    const std::optional<Normalizer>& norm, const c10::Device& device) {
  ReconstructParams rp;
  rp.factor = factor;
  rp.interp = backbone_input_interp(model.backbone());  // what the backbone was pretrained on
  rp.device = device;
  rp.norm = norm;
  rp.out_dtype = DType::F32;
  return reconstruct_with_model(input, rp, model);
}

}  // namespace

DemoResult run_demo(const DemoParams& p, Backbone& backbone) {
  using clock = std::chrono::steady_clock;
  DemoResult res;
  if (!(p.factor >= 1) || p.factor != std::floor(p.factor) || p.size.z < 2 * p.factor)
    throw_input("demo factor must be a whole number >= 1 and at most half the z size, got {}",
                p.factor);
  PhantomParams pp;
  pp.size = p.size;
  // A whole number of acquired planes, so every method returns the GT's z size.
  pp.size.z = p.size.z / static_cast<int64_t>(p.factor) * static_cast<int64_t>(p.factor);
  pp.kind = p.kind;
  pp.seed = p.seed;
  log_info("1/4 ground truth: {} phantom of {} voxels (seed {})", phantom_kind_name(p.kind),
           to_string(p.size), p.seed);
  res.gt = make_phantom(pp);
  const auto pc = percentiles(res.gt, {0.1, 99.9});
  res.gt_lo = pc[0];
  res.gt_hi = pc[1];

  log_info("2/4 simulated acquisition: z averaged over {} planes", p.factor);
  res.input = downsample(res.gt, 0, p.factor);

  log_info("3/4 cubic interpolation (B-spline)");
  auto t0 = clock::now();
  res.cubic = upsample(res.input, 0, p.factor, Interp::BSpline3, res.gt.nz());
  res.rows.push_back(score("cubic", res.gt, res.cubic, seconds_since(t0), 0));
  check_interrupted();

  log_info("4/4 restoration with backbone {} ({} parameters)", backbone.name,
           backbone.config.parameter_count());
  t0 = clock::now();
  PromptedModel zero(backbone, PromptConfig{}, false);
  res.zero_shot = restore_with(res.input, p.factor, zero, std::nullopt, p.device);
  res.rows.push_back(score("zero-shot", res.gt, res.zero_shot, seconds_since(t0), 0));

  if (p.tune) {
    t0 = clock::now();
    TuneParams tp;
    tp.factor = p.factor;
    tp.steps = p.tune_steps;
    tp.time_budget_s = p.tune_seconds;
    tp.crop_min = 64;
    tp.crop_max = 64;
    tp.cache_crops = 48;
    tp.eval_every = 20;
    tp.seed = p.seed;
    tp.interp = backbone_input_interp(backbone);
    TuneResult tr = tune(res.input, backbone, tp);
    log_info("prompt tuning: {} steps, held-out PSNR {:.2f} dB (zero-shot {:.2f}, {} {:.2f})",
             tr.info.steps, tr.info.val_psnr, tr.info.zero_shot_psnr, interp_name(tp.interp),
             tr.info.interp_psnr);
    res.tuned = restore_with(res.input, p.factor, tr.model, tr.info.norm, p.device);
    res.rows.push_back(score("prompt-tuned", res.gt, res.tuned, seconds_since(t0),
                             tr.model.prompt_parameter_count()));
  }
  return res;
}

}  // namespace isoprompt
