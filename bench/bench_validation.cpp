// Which validation judges a prompt tuning better: held-out planes or every plane
// (in-sample)? Run by hand (not in CI); docs/method.md, "Validation on thin stacks", has its
// figures. Each case is made as bench_real_data makes it (ground truth cropped to whole
// K-planes, z averaged over K), tuned with every default but the judge, reconstructed, and
// scored against the ground truth.
//
//   build/bench/bench_validation [--steps N] [--threads T] FILE K [FILE K ...]
//   build/bench/bench_validation cells3d_nucleus_crop.tif 4 pretrain/fluo_beads_3d_mpicbg.tif 2
//
// FILE is relative to ../shared/data. Prints one line per case and judge: the step kept, the
// validation, zero-shot and interpolation PSNR on the judge's pairs, whether `restore` would
// keep the model, and the ground-truth PSNR of the model and of the interpolation.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "isoprompt/infer.h"
#include "isoprompt/io.h"
#include "isoprompt/metrics.h"
#include "isoprompt/ops.h"
#include "isoprompt/restore.h"
#include "isoprompt/runtime.h"
#include "isoprompt/train.h"

using namespace isoprompt;

int main(int argc, char** argv) {
  int64_t steps = TuneParams{}.steps;
  int threads = 1;
  std::vector<std::pair<std::string, int>> cases;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--steps") steps = std::atoll(v.c_str());
    else if (a == "--threads") threads = std::atoi(v.c_str());
    else cases.emplace_back(a, std::atoi(v.c_str()));
  }
  if (cases.empty()) {
    std::fprintf(stderr, "usage: bench_validation [--steps N] [--threads T] FILE K [FILE K ...]\n");
    return 2;
  }
  set_threads(threads);
  try {
    Backbone bb = load_backbone(std::string(ISO_SOURCE_DIR) + "/models/isoprompt-default.safetensors");
    for (const auto& [file, K] : cases) {
      Volume gt = read_volume(std::string(ISO_SHARED_DIR) + "/data/" + file);
      gt = crop(gt, {0, 0, 0}, {gt.nz() / K * K, gt.ny(), gt.nx()});
      const Volume lr = downsample(gt, 0, K);
      const double interp_gt =
          evaluate(gt, upsample(lr, 0, K, backbone_input_interp(bb), gt.nz()), EvalOptions{}).overall.psnr;
      for (const bool in_sample : {false, true}) {
        TuneParams tp;
        tp.interp = backbone_input_interp(bb);
        tp.factor = K;
        tp.steps = steps;
        if (in_sample) tp.val_fraction = 0;
        else tp.min_val_planes = 1;  // hold out whatever 10% gives, however few
        TuneResult tr = tune(lr, bb, tp);
        ReconstructParams rp;
        rp.factor = K;
        rp.interp = tp.interp;
        rp.norm = tr.info.norm;
        rp.out_dtype = DType::F32;
        const Volume pred = reconstruct_with_model(lr, rp, tr.model);
        const double gt_psnr = evaluate(gt, pred, EvalOptions{}).overall.psnr;
        std::printf("%s x%d %s: kept step %lld of %lld, val %.3f (zero-shot %.3f, interp %.3f), restore keeps "
                    "the model: %s; GT PSNR %.3f (interp %.3f)\n",
                    file.c_str(), K, in_sample ? "in-sample" : "held-out", (long long)tr.info.best_step,
                    (long long)steps, tr.info.val_psnr, tr.info.zero_shot_psnr, tr.info.interp_psnr,
                    model_beats_interpolation(tr.info) ? "yes" : "no", gt_psnr, interp_gt);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_validation: %s\n", e.what());
    return 1;
  }
  return 0;
}
