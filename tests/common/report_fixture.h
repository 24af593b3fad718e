// A realistic QC report input for the report tests (tests/infer, tests/interop): a
// fluorescence phantom as ground truth, its 4x z-degraded stack as input, a "restoration"
// that lies between the interpolation and the truth, and a map of their spread.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "isoprompt/ops.h"
#include "isoprompt/phantom.h"
#include "isoprompt/report.h"

namespace isoprompt::test {

struct ReportFixture {
  Volume gt, input, output, uncertainty;
  ReportInputs inputs;  // points into the volumes above: keep the fixture alive

  explicit ReportFixture(Shape3 gt_size = {64, 80, 96}, double factor = 4.0) {
    PhantomParams pp;
    pp.size = gt_size;
    pp.seed = 3;
    pp.voxel = {0.1, 0.1, 0.1};
    gt = make_phantom(pp);
    DegradeParams dp;
    dp.factor = factor;
    input = degrade(gt, 0, dp);
    const Volume interp = upsample(input, 0, factor, Interp::BSpline3, std::lround(input.nz() * factor));
    output = interp.like(DType::F32);
    uncertainty = interp.like(DType::F32);
    const float* g = gt.data<float>();
    const float* q = interp.data<float>();
    float* o = output.data<float>();
    float* u = uncertainty.data<float>();
    for (int64_t i = 0; i < output.numel(); ++i) {  // gt has at least as many planes as output
      o[i] = 0.7f * g[i] + 0.3f * q[i];
      u[i] = 0.25f * std::abs(g[i] - q[i]);
    }
    inputs.title = "phantom_x4.tif";
    inputs.input = &input;
    inputs.output = &output;
    inputs.uncertainty = &uncertainty;
    inputs.ground_truth = &gt;
    inputs.factor = factor;
    inputs.interp = Interp::BSpline3;
    for (int64_t step = 0; step <= 400; step += 25) {
      inputs.val_history.emplace_back(step, 30.0 + 2.0 * (1.0 - std::exp(-double(step) / 120.0)));
      inputs.loss_history.emplace_back(step, 0.08 * std::exp(-double(step) / 60.0) + 0.004);
    }
    inputs.zero_shot_psnr = 30.0;
    inputs.interp_psnr = 29.2;
    inputs.parameters = {{"mode", "prompt"}, {"steps", "400"}, {"backbone", "isoprompt-default <test>"}};
    inputs.timings = {{"tuning", "12.3 s"}, {"reconstruction", "4.5 s"}};
    inputs.files = {{"output", "phantom_x4.iso.tif"}, {"uncertainty", "phantom_x4.unc.tif"}};
  }
  ReportFixture(const ReportFixture&) = delete;
  ReportFixture& operator=(const ReportFixture&) = delete;
};

}  // namespace isoprompt::test
