// The end-to-end demo: phantom ground truth -> simulated z-anisotropy -> cubic,
// zero-shot and prompt-tuned restoration with a backbone -> metrics against the truth.
//
//   DemoParams p;                          // 64x96x96 mixed phantom, x4 z-averaging
//   Backbone bb = load_backbone(path);
//   DemoResult r = run_demo(p, bb);        // r.rows: method, PSNR, SSIM, seconds
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "isoprompt/model.h"
#include "isoprompt/phantom.h"
#include "isoprompt/volume.h"

namespace isoprompt {

struct DemoParams {
  Shape3 size{128, 128, 128};  // ground truth, isotropic voxels (about 2 min on 2 cores)
  PhantomKind kind = PhantomKind::Mixed;
  uint64_t seed = 0;
  double factor = 4;          // z-averaging factor of the simulated acquisition
  double tune_seconds = 120;  // prompt-tuning time budget
  int64_t tune_steps = 1500;  // at most this many steps
  bool tune = true;           // false: cubic and zero-shot only
  c10::Device device = c10::Device(c10::kCPU);
};

struct DemoRow {
  std::string method;  // "cubic", "zero-shot", "prompt-tuned"
  double psnr = 0, ssim = 0, ssim_xz = 0;  // vs ground truth (GT 0.1/99.9 percentiles -> [0, 1])
  double seconds = 0;  // tuning + reconstruction
  int64_t trainable = 0;  // parameters trained for this volume
};

struct DemoResult {
  Volume gt, input, cubic, zero_shot, tuned;  // tuned is empty when params.tune is false
  std::vector<DemoRow> rows;
  double gt_lo = 0, gt_hi = 1;  // display / evaluation range (GT percentiles)
};

/// Runs the demo (progress via log.h and Progress). Throws Cancelled on Ctrl-C.
DemoResult run_demo(const DemoParams& p, Backbone& backbone);

}  // namespace isoprompt
