// Backbone pretraining from scratch on an endless stream of synthetic 2D restoration pairs.
//
//   PretrainParams p;
//   p.config = default_backbone_config();
//   p.steps = 20000;
//   p.checkpoint_path = "/tmp/run/ckpt.safetensors";
//   p.log_csv = "/tmp/run/log.csv";
//   p.export_path = "models/isoprompt-default.safetensors";
//   PretrainResult r = pretrain(p);            // Ctrl-C: checkpoint written, Cancelled thrown
//   p.resume_path = p.checkpoint_path;          // later: continue exactly where it stopped
//
// Pairs. Each training pair is a crop of a clean 2D plane (target) and the same crop degraded
// along its rows axis (the axis that plays z at inference) and interpolated back with cubic
// interpolation (input): box (average) or Gaussian axial PSF, factor 2..10, optional Poisson
// and Gaussian noise, occasionally an extra lateral blur along the columns. Planes come from a
// pool of procedural phantom volumes (phantom.h), one replaced every few steps, and optionally
// from the user's volumes (XY planes only, unless the voxels are isotropic). Crops are random
// among the 8 flips/transposes that keep the rows axis as the degraded one.
//
// Determinism. The pairs of step s are a pure function of (seed, s) and the params, so a run
// resumed from a checkpoint reproduces the uninterrupted run exactly (same thread count).
// The checkpoint holds the weights, the Adam moments, the step and the wall time so far.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "isoprompt/model.h"
#include "isoprompt/ops.h"
#include "isoprompt/volume.h"

namespace isoprompt {

/// The configuration of the shipped default backbone: sized for CPU inference
/// (about 6x fewer FLOPs per slice than UniFMIR's isotropic model).
SwinConfig default_backbone_config();

/// How degraded inputs are synthesised (also used by the demo and tests).
struct PairParams {
  int64_t crop = 64;  // crop edge (px)
  double min_factor = 2, max_factor = 10;
  // Draw factors log-uniformly (as many pairs in 2..4 as in 4..8) instead of uniformly. The
  // per-pixel loss of large factors dwarfs that of small ones, so a uniform draw leaves the
  // common 2-3x anisotropy with little of the gradient.
  bool log_uniform_factor = false;
  double psf_prob = 0.5;      // Gaussian axial PSF instead of a box average
  double poisson_prob = 0.4;  // Poisson noise, peak uniform in [poisson_min, poisson_max]
  double poisson_min = 20, poisson_max = 500;
  double gaussian_prob = 0.3;  // additive Gaussian noise, sigma uniform in [0, gaussian_max]
  double gaussian_max = 0.04;
  double lateral_blur_prob = 0.15;  // extra Gaussian blur of the input along the columns
  Interp interp =
      Interp::Keys;  // how the degraded rows are interpolated back (the network's input)
};

// ---- real-image corpus (pretrain --data) -----------------------------------------------

enum class Modality { EM, Fluorescence, Other };
const char* modality_name(Modality m);  // "em", "fluo", "other"
/// From the corpus's file-name convention: "em_*" is EM, "fluo_*" fluorescence, else other.
Modality modality_of(const std::string& file_name);

/// The acquisition a file belongs to: channels, splits and parts of one source share it
/// ("fluo_hela_ch1_neubias.tif" -> "fluo_hela", "em_sstem_cremi_val_10.tif" -> "em_sstem_cremi"),
/// so that a held-out split never puts one channel of an image in training and another in
/// validation.
std::string corpus_group(const std::string& file_name);

/// Whole-group split of a corpus: per modality, groups sorted by name, every `every`-th one
/// (index % every == 1) held out for validation. A pure function of the names.
struct CorpusSplit {
  std::vector<std::string> train, held_out;  // file names, sorted
};
CorpusSplit split_corpus(const std::vector<std::string>& file_names, int64_t every = 6);

/// One file of the corpus, ready for cutting pairs: `planes` is float32, each read unit (a
/// 3D stack, one frame of a 2D set, one channel) normalised by its own 1/99.8 percentiles.
/// XY planes only, unless the file is a single 3D stack with near-isotropic calibrated voxels
/// (then its XZ/YZ planes are clean too and `isotropic` is set).
struct CorpusImage {
  std::string name;
  Modality modality = Modality::Other;
  Volume planes;
  bool isotropic = false;
};
/// Reads every plane of `path` (2D image, 2D set / time-lapse, 3D stack, every channel).
CorpusImage load_corpus_image(const std::string& path);
/// The .tif/.tiff files of `dir`, sorted; InputError if there are none.
std::vector<std::string> list_tiff_files(const std::string& dir);

struct PretrainParams {
  SwinConfig config = default_backbone_config();
  int64_t steps = 1000;  // total steps of the run (a resumed run continues to this)
  int64_t batch = 8;
  PairParams pairs;
  double lr = 4e-4;  // Adam (beta 0.9/0.999, eps 1e-8), linear warm-up then constant
  int64_t warmup = 100;
  double min_lr_ratio = 1.0;  // < 1: cosine decay from lr to lr*ratio over `steps`
  uint64_t seed = 0;
  int64_t phantom_size = 96;        // edge of the generated phantom cubes
  int64_t phantom_every = 16;       // one of the 4 pool volumes is replaced every N steps
  std::vector<CorpusImage> corpus;  // real images to train on (pretrain --data: the train split)
  std::vector<CorpusImage> val_corpus;  // held-out real images for validation (never trained on)
  double data_fraction = 0.5;  // share of training pairs cut from `corpus` when it is not empty
  bool identity_init = true;   // start from a net that outputs its input (see pretrain.cpp)

  std::string checkpoint_path;    // "" = no checkpoints
  double checkpoint_minutes = 5;  // also written at the end and on Ctrl-C
  std::string resume_path;        // continue from this checkpoint
  // Resume although the data settings differ from the checkpoint's (a deliberate change of
  // the mix mid-campaign): weights, optimiser and step carry over, but the run no longer
  // reproduces an unbroken one.
  bool resume_new_data = false;
  std::string log_csv;            // "" = no log; appended to when resuming
  int64_t log_every = 10;
  int64_t val_every = 100;  // validation PSNR every N steps (and at the end)
  int64_t val_pairs = 64;   // fixed validation pairs per (modality, factor) group, not from `seed`
  int64_t val_crop = 80;    // their edge (px)
  double max_minutes = 0;   // stop (cleanly, with a checkpoint) after this; 0 = no limit
  std::string export_path;  // model file written at the end (save_backbone)
  std::string model_name = "isoprompt-default";
};

/// Validation gain of one (modality, factor) group: mean PSNR of the interpolated input and
/// of the network's output over its pairs.
struct ValGroup {
  std::string modality;  // "em", "fluo", "other" or "phantom"
  double factor = 0;
  int64_t pairs = 0;
  double psnr_input = 0, psnr_output = 0;
  double gain() const { return psnr_output - psnr_input; }
};

struct PretrainResult {
  int64_t steps_done = 0;                          // total, including resumed ones
  double seconds = 0;                              // total wall time, including resumed sessions
  double val_psnr_input = 0, val_psnr_output = 0;  // dB on the held-out pairs (mean over all)
  std::vector<ValGroup> val_groups;                // per modality and factor
  double last_loss = 0;                            // mean L1 over the last log interval
  bool stopped_early = false;                      // max_minutes reached before `steps`
};

/// Runs (or resumes) pretraining on `device`. Throws InputError for bad params or an
/// incompatible checkpoint, Cancelled on Ctrl-C (after writing the checkpoint).
PretrainResult pretrain(const PretrainParams& p, c10::Device device = c10::Device(c10::kCPU));

// ---- building blocks, exposed for tests and the demo ----------------------------------

/// One synthetic pair: a degraded-then-interpolated input and its clean target, both
/// crop x crop float32 in [~0, ~1]. `clean` is a row-major rows x cols image already
/// normalised to [0, 1]; the crop is taken at a random position. Deterministic in `seed`.
void make_pair(const float* clean, int64_t rows, int64_t cols, const PairParams& p, uint64_t seed,
               float* input, float* target);

/// The training batch of step `step`: inputs and targets, batch x 1 x crop x crop float32.
/// A pure function of (p, step); `pool` caches the phantom volumes between calls.
struct PhantomPool;
void training_batch(const PretrainParams& p, int64_t step, PhantomPool& pool, at::Tensor& input,
                    at::Tensor& target);

struct PhantomPool {
  std::vector<int64_t> ids;     // volume id held in each slot (-1 = empty)
  std::vector<Volume> volumes;  // normalised float32 phantoms
};

/// The fixed validation set: groups of pairs, one group per (modality, factor), from the
/// held-out images of `p.val_corpus` and from phantoms; independent of `p.seed`.
struct ValSet {
  at::Tensor input, target;  // n x 1 x val_crop x val_crop
  std::vector<ValGroup>
      groups;  // pairs of group g are rows [offset[g], offset[g] + groups[g].pairs)
  std::vector<int64_t> offset;
};
ValSet make_val_set(const PretrainParams& p);
/// Runs `net` over the set; fills every group's PSNRs and returns the means over all pairs.
std::pair<double, double> validate_net(SwinIR& net, ValSet& vs, const c10::Device& dev);
/// "em x2 +0.412, em x4 ... dB" for logs; a JSON array for model metadata.
std::string val_gains_text(const std::vector<ValGroup>& groups);
std::string val_groups_json(const std::vector<ValGroup>& groups);

/// PSNR (dB) of `a` against `b` with data range 1.
double psnr_unit(const at::Tensor& a, const at::Tensor& b);

/// Makes `net` compute (approximately) the identity: conv_first passes the input into
/// channel 0, conv_after_body starts at zero, and channel 0 runs through the tail.
void identity_init(SwinIR& net);

}  // namespace isoprompt
