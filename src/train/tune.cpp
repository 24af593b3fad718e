#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>

#include "isoprompt/bank.h"
#include "isoprompt/error.h"
#include "isoprompt/log.h"
#include "isoprompt/progress.h"
#include "isoprompt/train.h"

namespace isoprompt {

void save_prompt(const std::string& path, const TuneResult& result) {
  if (result.info.mode == TuneParams::Mode::UNet) return save_unet(path, result.unet, result.info);
  save_prompt(path, result.model, result.info);
}

namespace {

// 99 dB stands for a perfect match; a NaN or Inf anywhere gives NaN, never 99.
double psnr_db(const at::Tensor& pred, const at::Tensor& target) {
  const double mse = (pred.to(at::kDouble) - target.to(at::kDouble)).pow(2).mean().item<double>();
  if (!std::isfinite(mse)) return NAN;
  return mse > 0 ? 10.0 * std::log10(1.0 / mse) : 99.0;
}

// A score over NaN-polluted predictions must not be reported (nor steer the best state).
double checked_psnr(double db, const char* what) {
  if (std::isnan(db))
    throw_error("the {} validation PSNR is not a number: its predictions hold NaN or Inf values", what);
  return db;
}

void check_params(const TuneParams& p) {
  if (p.steps < 0 || p.steps > 100000000) throw_input("--steps must be in 0..1e8, got {}", p.steps);
  if (!(p.lr >= 0) || !(p.lr < 10)) throw_input("--lr must be in [0, 10) (0 = auto), got {}", p.lr);
  if (!(p.min_lr_ratio > 0) || !(p.min_lr_ratio <= 1))
    throw_input("--min-lr-ratio must be in (0, 1], got {}", p.min_lr_ratio);
  if (p.batch < 1 || p.batch > 4096) throw_input("--batch must be in 1..4096, got {}", p.batch);
  if (p.crop_min < 8 || p.crop_max < p.crop_min || p.crop_max > 4096)
    throw_input("--crop must satisfy 8 <= min <= max <= 4096, got {}-{}", p.crop_min, p.crop_max);
  if (p.val_crops < 1) throw_input("validation needs at least one crop, got {}", p.val_crops);
  if (p.eval_every < 1) throw_input("validation interval must be >= 1 step, got {}", p.eval_every);
  if (p.cache_crops < 0) throw_input("feature cache size must be >= 0, got {}", p.cache_crops);
  if (!(p.time_budget_s >= 0)) throw_input("--time-budget must be >= 0 seconds, got {}", p.time_budget_s);
  if (p.factor != 0 && !(p.factor >= 1))
    throw_input("--factor must be >= 1 (z-step / xy-pixel), got {}", p.factor);
}

double resolve_factor(const Volume& vol, double factor) {
  if (factor > 0) return factor;
  const VoxelSize& v = vol.voxel_size();
  const double k = v.anisotropy();
  if (!(k > 1.0 + 1e-6))
    throw_input("cannot infer the anisotropy factor: the voxel size is z {} / x {} {} (K = {}); "
                "pass --factor K",
                v.z, v.x, vol.unit(), k);
  return k;
}

// Restores requires_grad flags of a set of tensors on scope exit.
class GradFlags {
 public:
  explicit GradFlags(std::vector<at::Tensor> ts) : ts_(std::move(ts)) {
    for (auto& t : ts_) old_.push_back(t.requires_grad());
  }
  void set(bool v) {
    for (auto& t : ts_) t.requires_grad_(v);
  }
  ~GradFlags() {
    for (size_t i = 0; i < ts_.size(); ++i) ts_[i].requires_grad_(old_[i]);
  }

 private:
  std::vector<at::Tensor> ts_;
  std::vector<bool> old_;
};

std::vector<at::Tensor> clone_all(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.detach().clone());
  return out;
}

void copy_all(const std::vector<at::Tensor>& dst, const std::vector<at::Tensor>& src) {
  torch::NoGradGuard g;
  for (size_t i = 0; i < dst.size(); ++i) {
    at::Tensor d = dst[i];
    d.copy_(src[i]);
  }
}

// A fixed pool of training crops with their frozen features, grouped by crop side.
struct FeatureCache {
  struct Group {
    int64_t size = 0;
    at::Tensor features, targets;  // M×C×Hp×Wp, M×1×S×S
  };
  std::vector<Group> groups;
  int64_t count = 0;
};

PairOptions pair_options(const TuneParams& params, double factor) {
  PairOptions po;
  po.factor = factor;
  po.degrade = params.degrade;
  po.interp = params.interp;
  po.pmin = params.pmin;
  po.pmax = params.pmax;
  po.norm = params.norm;
  po.val_fraction = params.val_fraction;
  // A prompt (about 22,000 parameters) cannot memorise the planes it trains on, so a thin
  // stack judges it in-sample; full fine-tuning and a U-Net can, so they keep held-out planes.
  po.min_val_planes = params.min_val_planes > 0             ? params.min_val_planes
                      : params.mode == TuneParams::Mode::Prompt ? PairOptions{}.min_val_planes
                                                                : 1;
  po.crop_min = params.crop_min;
  po.crop_max = params.crop_max;
  po.seed = params.seed;
  return po;
}

// What a prompt file records about the pairs, whatever the mode trained.
PromptInfo pair_info(const TuneParams& params, double factor, const PairSampler& sampler) {
  PromptInfo info;
  info.mode = params.mode;
  info.factor = factor;
  info.degrade = params.degrade;
  info.degrade.factor = factor;
  info.interp = params.interp;
  info.norm = sampler.normalizer();
  info.pmin = params.pmin;
  info.pmax = params.pmax;
  info.version = ISOPROMPT_VERSION;
  info.val_in_sample = sampler.validation_in_sample();
  return info;
}

// "12 training / 3 validation planes", or "15 planes, validated in-sample".
std::string planes_text(const PairSampler& sampler) {
  if (sampler.validation_in_sample())
    return fmt::format("{} planes, validated in-sample", sampler.train_planes().size());
  return fmt::format("{} training / {} validation planes", sampler.train_planes().size(),
                     sampler.val_planes().size());
}

// One mode's part of the optimisation loop that every mode shares.
struct TrainingLoop {
  const char* label = "";                  // progress bar
  std::vector<at::Tensor> trainable;       // what Adam updates and the best state copies
  std::function<void()> prepare;           // runs first, where Ctrl-C is caught (feature cache)
  std::function<at::Tensor()> batch_loss;  // forward pass and loss of one training batch
  std::function<double()> evaluate;        // validation PSNR of the current state
  std::function<std::string(double loss, double val)> status;  // progress bar text
};

struct LoopBest {
  double psnr = 0;
  int64_t step = 0;   // 0 = the start
  bool kept = false;  // false: interrupted before the start was evaluated
};

// Adam with the cosine decay over --steps or the time budget, validation every eval_every
// steps (and at the end), the best state kept and restored at the end, Ctrl-C and a
// non-finite loss stopping early. Fills res' counters and histories.
LoopBest run_training_loop(const TuneParams& params, const TrainingLoop& loop,
                           const std::function<double()>& elapsed, TuneResult& res) {
  const std::vector<at::Tensor>& trainable = loop.trainable;
  double best = 0;
  int64_t best_step = 0, step = 0;
  std::vector<at::Tensor> best_state;
  double last_loss = NAN, last_val = NAN;
  auto status = [&]() { return loop.status(last_loss, std::isnan(last_val) ? best : last_val); };

  try {
    if (loop.prepare) loop.prepare();

    // The start (zero-shot for a fresh prompt, the loaded state when resuming, a random
    // U-Net) is the first candidate: training can only keep something better on the
    // held-out pairs.
    best = loop.evaluate();
    best_state = clone_all(trainable);
    res.val_history.emplace_back(0, best);

    torch::optim::Adam opt(trainable, torch::optim::AdamOptions(tune_lr(params, 0)));
    auto& adam_options =
        static_cast<torch::optim::AdamOptions&>(opt.param_groups().front().options());
    Progress bar(loop.label, params.steps, "steps");
    for (step = 1; step <= params.steps; ++step) {
      // Cosine decay over the run, which ends at --steps or at the time budget, whichever
      // comes first: a large rate early learns fast, a small one late stops the
      // oscillation that a constant 1e-2 shows (docs/method.md).
      double progress = static_cast<double>(step - 1) / static_cast<double>(params.steps);
      if (params.time_budget_s > 0) progress = std::max(progress, elapsed() / params.time_budget_s);
      adam_options.lr(tune_lr(params, progress));
      const at::Tensor loss = loop.batch_loss();
      opt.zero_grad();
      loss.backward();
      opt.step();
      last_loss = loss.item<double>();
      res.loss_history.emplace_back(step, last_loss);
      ++res.steps_run;
      if (!std::isfinite(last_loss)) {
        log_warn("the loss became {} at step {}: stopping, keeping the state of step {}", last_loss,
                 step, best_step);
        break;
      }
      const bool out_of_time = params.time_budget_s > 0 && elapsed() >= params.time_budget_s;
      if (step % params.eval_every == 0 || step == params.steps || out_of_time) {
        last_val = loop.evaluate();
        res.evaluated = true;
        res.val_history.emplace_back(step, last_val);
        if (last_val > best) {
          best = last_val;
          best_step = step;
          best_state = clone_all(trainable);
        }
      }
      if (out_of_time) {
        res.out_of_time = true;
        log_info("time budget of {} s reached after {} steps", params.time_budget_s, step);
        break;
      }
      bar.update(step, status());
    }
    if (!res.out_of_time) bar.finish(status());
  } catch (const Cancelled&) {
    res.cancelled = true;
    log_warn("interrupted after {} steps: keeping the best state (step {}, {:.2f} dB)",
             res.steps_run, best_step, best);
  }
  if (!best_state.empty()) copy_all(trainable, best_state);
  return {best, best_step, !best_state.empty()};
}

// Validation PSNR of `f` over the fixed pairs, `chunk` crops per forward pass.
double validation_psnr(const PairBatch& val, int64_t chunk,
                       const std::function<at::Tensor(const at::Tensor&)>& f, const char* what) {
  torch::NoGradGuard g;
  std::vector<at::Tensor> preds;
  for (int64_t i = 0; i < val.input.size(0); i += chunk)
    preds.push_back(f(val.input.slice(0, i, i + chunk)));
  return checked_psnr(psnr_db(at::cat(preds), val.target), what);
}

}  // namespace

double default_tune_lr(TuneParams::Mode mode) {
  switch (mode) {
    case TuneParams::Mode::Full:
      return 3e-4;
    case TuneParams::Mode::UNet:
      return 4e-4;  // CSBDeep's train_learning_rate
    case TuneParams::Mode::Prompt:
      break;
  }
  return 3e-2;
}

double cosine_decay(double min_ratio, double progress) {
  progress = std::clamp(progress, 0.0, 1.0);
  return min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(M_PI * progress));
}

double tune_lr(const TuneParams& p, double progress) {
  const double lr = p.lr > 0 ? p.lr : default_tune_lr(p.mode);
  return lr * cosine_decay(p.min_lr_ratio, progress);
}

std::vector<double> score_prompts_on_validation(const Volume& vol, Backbone& backbone,
                                                const TuneParams& params,
                                                const std::vector<std::string>& prompt_files,
                                                double* zero_shot_psnr, double* interp_psnr) {
  check_params(params);
  if (!backbone.net) throw_error("scoring prompts needs a loaded backbone");
  const double factor = resolve_factor(vol, params.factor);
  // The same sampler and seed as tune(): the same held-out planes, crops and degradation.
  const PairSampler sampler(vol, pair_options(params, factor));
  PairBatch val = sampler.validation(params.val_crops, sampler.max_crop(), params.seed);
  const auto ps = backbone.net->parameters();
  const torch::Device dev = ps.empty() ? torch::Device(torch::kCPU) : ps.front().device();
  val.input = val.input.to(dev);
  val.target = val.target.to(dev);
  backbone.net->eval();
  if (interp_psnr) *interp_psnr = checked_psnr(psnr_db(val.input, val.target), "interpolation");
  if (zero_shot_psnr)
    *zero_shot_psnr = validation_psnr(
        val, params.batch, [&](const at::Tensor& x) { return backbone.net->forward(x); },
        "zero-shot");
  std::vector<double> scores;
  for (const std::string& file : prompt_files) {
    LoadedPrompt lp = load_prompt(file, backbone);
    scores.push_back(validation_psnr(
        val, params.batch, [&](const at::Tensor& x) { return lp.model.forward(x); }, "banked"));
  }
  return scores;
}

TuneResult tune(const Volume& vol, Backbone& backbone, const TuneParams& params) {
  if (params.mode == TuneParams::Mode::UNet) return tune(vol, params);  // needs no backbone
  check_params(params);
  if (!backbone.net) throw_error("tune needs a loaded backbone");
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const bool full = params.mode == TuneParams::Mode::Full;
  const double factor = resolve_factor(vol, params.factor);

  PromptConfig pcfg = params.prompt;
  int64_t prev_steps = 0;
  TuneResult res;
  LoadedPrompt resumed;
  if (!params.resume_from.empty()) {
    if (full) throw_input("--resume is only supported with --mode prompt");
    resumed = load_prompt(params.resume_from, backbone);
    if (resumed.info.mode != TuneParams::Mode::Prompt)
      throw_input("cannot resume from {}: it holds a fully tuned backbone, not a prompt",
                  params.resume_from);
    pcfg = resumed.info.prompt;
    prev_steps = resumed.info.steps;
    if (std::abs(resumed.info.factor - factor) > 1e-9)
      log_warn("resuming a prompt tuned for K = {} with K = {}", resumed.info.factor, factor);
  }

  const PairSampler sampler(vol, pair_options(params, factor));
  std::mt19937_64 rng(params.seed);
  torch::manual_seed(params.seed);

  // The model being tuned. Full mode trains a private copy of the backbone.
  PromptedModel model;
  if (full) {
    SwinIR copy(backbone.net->config());
    TensorMap w;
    for (const auto& kv : backbone.net->weights()) w[kv.first] = kv.second.detach().clone();
    copy->load_weights(w, backbone.name);
    const auto ps = backbone.net->parameters();
    copy->to(ps.empty() ? torch::Device(torch::kCPU) : ps.front().device());
    copy->eval();
    Backbone b = backbone;
    b.net = copy;
    model = PromptedModel(b, pcfg, false);
  } else if (!params.resume_from.empty()) {
    model = resumed.model;
  } else {
    model = PromptedModel(backbone, pcfg, true);
  }
  pcfg = model.config();  // auto sizes resolved against this backbone
  const torch::Device dev = model.device();
  model.backbone().net->eval();
  GradFlags backbone_flags(backbone.net->parameters());
  backbone_flags.set(false);  // frozen: no weight gradients computed
  std::vector<at::Tensor> trainable;
  if (full) {
    trainable = model.backbone().net->parameters();
    for (auto& t : trainable) t.requires_grad_(true);
  } else {
    trainable = model.prompt_parameters();
  }
  int64_t n_trainable = 0;
  for (auto& t : trainable) n_trainable += t.numel();
  const int64_t n_backbone = backbone.net->config().parameter_count();
  log_info("tuning {} parameters ({:.2f}% of the backbone's {}), K = {}, {}", n_trainable,
           100.0 * n_trainable / std::max<int64_t>(1, n_backbone), n_backbone, factor,
           planes_text(sampler));

  if (!full && 10 * n_trainable > n_backbone)
    log_warn("the prompt has {} parameters, over 10% of the backbone's {}: consider fewer "
             "--prompts, a smaller --attn-dim or --prompt-at tail",
             n_trainable, n_backbone);
  const bool use_cache = !full && pcfg.placement == PromptConfig::Placement::Tail &&
                         params.cache_crops > 0;
  const int64_t chunk = params.batch;

  // Validation pairs (fixed), their features when cached, and the two baselines.
  const int64_t vsize = sampler.max_crop();
  PairBatch val = sampler.validation(params.val_crops, vsize, params.seed);
  val.input = val.input.to(dev);
  val.target = val.target.to(dev);
  std::vector<at::Tensor> val_feats;
  double zero_shot = 0;
  {
    torch::NoGradGuard g;
    std::vector<at::Tensor> preds;
    for (int64_t i = 0; i < val.input.size(0); i += chunk) {
      const at::Tensor x = val.input.slice(0, i, i + chunk);
      if (use_cache) {
        val_feats.push_back(backbone.net->features(x));
        preds.push_back(backbone.net->tail(val_feats.back(), vsize, vsize));
      } else {
        preds.push_back(backbone.net->forward(x));
      }
    }
    zero_shot = checked_psnr(psnr_db(at::cat(preds), val.target), "zero-shot");
  }
  const double interp_psnr = checked_psnr(psnr_db(val.input, val.target), "interpolation");
  auto evaluate = [&]() {
    torch::NoGradGuard g;
    std::vector<at::Tensor> preds;
    for (int64_t i = 0, k = 0; i < val.input.size(0); i += chunk, ++k) {
      if (use_cache)
        preds.push_back(model.tail(val_feats[static_cast<size_t>(k)], vsize, vsize));
      else
        preds.push_back(model.forward(val.input.slice(0, i, i + chunk)));
    }
    return checked_psnr(psnr_db(at::cat(preds), val.target), "tuned model's");
  };

  FeatureCache cache;
  TrainingLoop loop;
  loop.label = full ? "tuning (full)" : "tuning prompt";
  loop.trainable = trainable;
  loop.evaluate = evaluate;
  loop.status = [&](double loss, double val) {
    return fmt::format("loss {:.4f} val {:.2f} dB (zero-shot {:.2f}, {} {:.2f})", loss, val,
                       zero_shot, interp_name(params.interp), interp_psnr);
  };
  loop.prepare = [&] {
    if (use_cache) {
      // Crop side per chunk of `batch` crops; the pool holds about cache_crops crops,
      // capped by memory.
      const int64_t c = backbone.net->config().embed_dim, win = backbone.net->config().window_size;
      const int64_t pmax = (sampler.max_crop() + win - 1) / win * win;
      const int64_t per_crop = c * pmax * pmax * 4 + sampler.max_crop() * sampler.max_crop() * 4;
      int64_t n = std::min(params.cache_crops, params.cache_max_bytes / std::max<int64_t>(1, per_crop));
      n = std::max(n, params.batch);
      const int64_t chunks = (n + chunk - 1) / chunk;
      std::map<int64_t, std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>> by_size;
      Progress bar("caching features", chunks, "batches");
      torch::NoGradGuard g;
      for (int64_t k = 0; k < chunks; ++k) {
        const int64_t s = sampler.draw_size(rng);
        PairBatch pb = sampler.sample(chunk, s, rng);
        auto& slot = by_size[s];
        slot.first.push_back(backbone.net->features(pb.input.to(dev)));
        slot.second.push_back(pb.target.to(dev));
        bar.update(k + 1);
      }
      bar.finish();
      for (auto& kv : by_size) {
        FeatureCache::Group gr{kv.first, at::cat(kv.second.first), at::cat(kv.second.second)};
        cache.count += gr.features.size(0);
        cache.groups.push_back(std::move(gr));
      }
      res.cache_seconds = elapsed();
      log_info("feature cache: {} crops in {:.1f} s", cache.count, res.cache_seconds);
      if (params.init_from_features && params.resume_from.empty())
        model.tail_module()->init_from_features(cache.groups.front().features, params.seed);
    } else if (!full && model.tail_module() && params.init_from_features &&
               params.resume_from.empty()) {
      torch::NoGradGuard g;
      PairBatch pb = sampler.sample(chunk, sampler.draw_size(rng), rng);
      model.tail_module()->init_from_features(model.features(pb.input.to(dev)), params.seed);
    }
  };
  loop.batch_loss = [&] {
    at::Tensor pred, target;
    if (use_cache) {
      // Pick a size group in proportion to its crops, then `batch` distinct crops.
      std::uniform_int_distribution<int64_t> pick(0, cache.count - 1);
      int64_t r = pick(rng);
      size_t gi = 0;
      while (r >= cache.groups[gi].features.size(0)) r -= cache.groups[gi++].features.size(0);
      const auto& gr = cache.groups[gi];
      const int64_t m = gr.features.size(0);
      std::vector<int64_t> idx(static_cast<size_t>(m));
      for (int64_t i = 0; i < m; ++i) idx[static_cast<size_t>(i)] = i;
      std::shuffle(idx.begin(), idx.end(), rng);
      idx.resize(static_cast<size_t>(std::min(m, params.batch)));
      const at::Tensor sel = at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(dev);
      pred = model.tail(gr.features.index_select(0, sel), gr.size, gr.size);
      target = gr.targets.index_select(0, sel);
    } else {
      PairBatch pb = sampler.sample(params.batch, sampler.draw_size(rng), rng);
      const at::Tensor x = pb.input.to(dev);
      pred = model.forward(x);
      target = pb.target.to(dev);
    }
    return restoration_loss(pred, target);
  };
  const LoopBest kept = run_training_loop(params, loop, elapsed, res);
  if (full) {
    for (auto& t : trainable) t.requires_grad_(false);
    model.backbone().hash = backbone_hash(model.backbone().net);
  }

  PromptInfo& info = res.info;
  info = pair_info(params, factor, sampler);
  info.backbone_name = backbone.name;
  info.backbone_hash = backbone.hash;
  info.prompt = pcfg;
  info.steps = prev_steps + res.steps_run;
  info.best_step =
      kept.step == 0 ? (params.resume_from.empty() ? 0 : prev_steps) : prev_steps + kept.step;
  info.val_psnr = kept.kept ? kept.psnr : zero_shot;
  info.zero_shot_psnr = zero_shot;
  info.interp_psnr = interp_psnr;
  info.seconds = elapsed() + (params.resume_from.empty() ? 0.0 : resumed.info.seconds);
  res.model = model;
  log_info("validation PSNR {:.2f} dB at step {} (zero-shot {:.2f}, {} {:.2f})", info.val_psnr,
           info.best_step, zero_shot, interp_name(params.interp), interp_psnr);
  return res;
}

TuneResult tune(const Volume& vol, const TuneParams& params) {
  if (params.mode != TuneParams::Mode::UNet)
    throw_input("--mode {} adapts a backbone: it needs one", mode_name(params.mode));
  check_params(params);
  if (!params.resume_from.empty()) throw_input("--resume is only supported with --mode prompt");
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const double factor = resolve_factor(vol, params.factor);
  const PairSampler sampler(vol, pair_options(params, factor));
  std::mt19937_64 rng(params.seed);
  torch::manual_seed(params.seed);  // the U-Net's initial weights

  const UNetConfig& uc = params.unet;
  const torch::Device dev = params.device;
  UNet net(uc);
  net->to(dev);
  log_info(
      "training a U-Net from scratch: {} parameters (depth {}, {} first filters, {}x{} "
      "kernels{}), K = {}, {}",
      uc.parameter_count(), uc.depth, uc.filters, uc.kernel, uc.kernel,
      uc.residual ? ", residual" : "", factor, planes_text(sampler));

  PairBatch val = sampler.validation(params.val_crops, sampler.max_crop(), params.seed);
  val.input = val.input.to(dev);
  val.target = val.target.to(dev);
  const double interp_psnr = checked_psnr(psnr_db(val.input, val.target), "interpolation");

  TuneResult res;
  TrainingLoop loop;
  loop.label = "training U-Net";
  loop.trainable = net->parameters();
  loop.evaluate = [&] {
    return validation_psnr(
        val, params.batch, [&](const at::Tensor& x) { return net->forward(x); }, "U-Net's");
  };
  loop.batch_loss = [&] {
    const PairBatch pb = sampler.sample(params.batch, sampler.draw_size(rng), rng);
    return (net->forward(pb.input.to(dev)) - pb.target.to(dev)).abs().mean();  // L1, as CARE
  };
  loop.status = [&](double loss, double v) {
    return fmt::format("loss {:.4f} val {:.2f} dB ({} {:.2f})", loss, v, interp_name(params.interp),
                       interp_psnr);
  };
  const LoopBest kept = run_training_loop(params, loop, elapsed, res);
  for (auto& t : loop.trainable) t.requires_grad_(false);

  PromptInfo& info = res.info;
  info = pair_info(params, factor, sampler);
  info.unet = uc;
  info.steps = res.steps_run;
  info.best_step = kept.step;
  // A random U-Net has no zero-shot score: its untrained start stands in.
  info.zero_shot_psnr = res.val_history.empty() ? NAN : res.val_history.front().second;
  info.val_psnr = kept.kept ? kept.psnr : NAN;
  info.interp_psnr = interp_psnr;
  info.seconds = elapsed();
  res.unet = net;
  log_info("validation PSNR {:.2f} dB at step {} (untrained {:.2f}, {} {:.2f})", info.val_psnr,
           info.best_step, info.zero_shot_psnr, interp_name(params.interp), interp_psnr);
  return res;
}

}  // namespace isoprompt
