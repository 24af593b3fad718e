// Backbone pretraining: synthetic pair stream, Adam, checkpoint/resume, validation, export.
#include "isoprompt/pretrain.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "isoprompt/checkpoint.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/ops.h"
#include "isoprompt/phantom.h"
#include "isoprompt/progress.h"
#include "isoprompt/runtime.h"
#include "isoprompt/stats.h"
#include "isoprompt/train.h"

namespace isoprompt {

SwinConfig default_backbone_config() {
  SwinConfig c;
  // 226,885 parameters, 33.0 GFLOP per 256x256 slice: the widest candidate within the
  // 0.4 s/slice budget with the cheapest training step (models/README.md).
  c.embed_dim = 48;
  c.depths = {2, 2, 2};
  c.num_heads = {6, 6, 6};
  c.window_size = 8;
  c.mlp_ratio = 2.0;
  c.num_feat = 48;
  c.img_size = 16;  // only sizes the stored attention-mask buffers; any input size works
  return c;
}

// ---- pairs ---------------------------------------------------------------------------

namespace {

constexpr uint64_t kValSeed = 0x7a11da7e5eedULL;  // validation data never depends on --seed
constexpr int64_t kPoolSlots = 4;

// Gaussian blur of a rows x cols image along its columns (x), clamp-to-edge.
void blur_cols(float* img, int64_t rows, int64_t cols, double sigma) {
  const auto k = gaussian_kernel(sigma);
  const int64_t r = static_cast<int64_t>(k.size() / 2);
  std::vector<float> buf(static_cast<size_t>(cols + 2 * r));
  for (int64_t y = 0; y < rows; ++y) {
    float* p = img + y * cols;
    for (int64_t x = -r; x < cols + r; ++x)
      buf[x + r] = p[std::min(cols - 1, std::max<int64_t>(0, x))];
    for (int64_t x = 0; x < cols; ++x) {
      float acc = 0;
      for (int64_t j = 0; j <= 2 * r; ++j) acc += k[j] * buf[x + j];
      p[x] = acc;
    }
  }
}

// Copies plane `index` of orientation `pl` into a rows x cols buffer.
void extract_plane(const Volume& v, Plane pl, int64_t index, std::vector<float>& out, int64_t& rows,
                   int64_t& cols) {
  const PlaneView<float> view = v.plane<float>(pl, index);
  rows = view.rows;
  cols = view.cols;
  out.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = view(r, c);
}

Volume normalized_float(const Volume& v) {
  const auto pc = percentiles(v, {1.0, 99.8});
  const double lo = pc[0], hi = pc[1] > pc[0] ? pc[1] : pc[0] + 1;
  Volume f(v.shape(), DType::F32, v.voxel_size(), v.unit());
  float* d = f.data<float>();
  const float scale = static_cast<float>(1.0 / (hi - lo)), off = static_cast<float>(lo);
  for (int64_t i = 0; i < v.numel(); ++i) d[i] = (voxel_as_float(v, i) - off) * scale;
  return f;
}

PhantomKind kind_for(uint64_t h) {
  // mixed and em are the most varied, so they come up more often.
  static const PhantomKind table[] = {
      PhantomKind::Mixed,  PhantomKind::Mixed,     PhantomKind::Mixed,
      PhantomKind::EM,     PhantomKind::EM,        PhantomKind::Filaments,
      PhantomKind::Nuclei, PhantomKind::Membranes, PhantomKind::Puncta};
  return table[h % (sizeof(table) / sizeof(table[0]))];
}

// A phantom for the stream: random kind, random extra isotropic blur, percentile-normalised.
Volume stream_phantom(uint64_t seed, int64_t size) {
  SplitMix r(seed);
  PhantomParams pp;
  pp.size = {size, size, size};
  pp.kind = kind_for(r.next());
  pp.seed = r.next();
  Volume v = make_phantom(pp);
  const double blur = r.uniform() < 0.5 ? 0.0 : r.uniform(0.3, 1.2);
  if (blur > 0) gaussian_blur_inplace(v, blur, blur, blur);
  return normalized_float(v);
}

const Volume& pool_volume(const PretrainParams& p, PhantomPool& pool, int64_t slot, int64_t step) {
  if (pool.ids.size() != static_cast<size_t>(kPoolSlots)) {
    pool.ids.assign(kPoolSlots, -1);
    pool.volumes.assign(kPoolSlots, Volume());
  }
  const int64_t every = std::max<int64_t>(1, p.phantom_every);
  const int64_t id = (step + slot * every) / (kPoolSlots * every) * kPoolSlots + slot;
  if (pool.ids[size_t(slot)] != id) {
    pool.volumes[size_t(slot)] =
        stream_phantom(hash_combine(p.seed, static_cast<uint64_t>(id)), p.phantom_size);
    pool.ids[size_t(slot)] = id;
  }
  return pool.volumes[size_t(slot)];
}

}  // namespace

void make_pair(const float* clean, int64_t rows, int64_t cols, const PairParams& p, uint64_t seed,
               float* input, float* target) {
  const int64_t crop = p.crop;
  SplitMix r(seed);
  const bool transpose = r.uniform() < 0.5, flip_r = r.uniform() < 0.5, flip_c = r.uniform() < 0.5;
  const int64_t R = transpose ? cols : rows, C = transpose ? rows : cols;  // oriented source size
  if (R < crop || C < crop)
    throw_input("a {}x{} plane is too small for {}x{} training crops", rows, cols, crop, crop);
  // Degrade a taller window than the crop so the crop is not at the window's clamped edges.
  const int64_t win = std::min(R, crop + 32);
  const int64_t r0 = r.randint(0, R - win), c0 = r.randint(0, C - crop);
  const int64_t top = (win - crop) / 2;
  const double gain = r.uniform(0.7, 1.1);
  std::vector<float> w(static_cast<size_t>(win * crop)), d(w.size());
  for (int64_t y = 0; y < win; ++y)
    for (int64_t x = 0; x < crop; ++x) {
      int64_t sy = r0 + y, sx = c0 + x;
      if (flip_r) sy = R - 1 - sy;
      if (flip_c) sx = C - 1 - sx;
      const float v = transpose ? clean[sx * cols + sy] : clean[sy * cols + sx];
      w[y * crop + x] = static_cast<float>(gain * v);
    }
  DegradeParams dp;
  const bool integer = r.uniform() < 0.5;
  const int64_t kmin = static_cast<int64_t>(std::ceil(p.min_factor)),
                kmax = static_cast<int64_t>(std::floor(p.max_factor));
  if (p.log_uniform_factor) {
    const double f = std::exp(r.uniform(std::log(p.min_factor), std::log(p.max_factor)));
    dp.factor = integer && kmin <= kmax
                    ? double(std::clamp<int64_t>(std::llround(f), kmin, kmax))
                    : f;
  } else {
    dp.factor = integer && kmin <= kmax ? double(r.randint(kmin, kmax))
                                        : r.uniform(p.min_factor, p.max_factor);
  }
  if (r.uniform() < p.psf_prob) {
    dp.model = DegradeParams::Psf;
    dp.psf_sigma_px = dp.factor * r.uniform(0.35, 0.65);
  }
  if (r.uniform() < p.poisson_prob) dp.poisson_peak = r.uniform(p.poisson_min, p.poisson_max);
  if (r.uniform() < p.gaussian_prob) dp.gaussian_sigma = r.uniform(0.0, p.gaussian_max);
  dp.seed = r.next();
  const double lateral = r.uniform() < p.lateral_blur_prob ? r.uniform(0.3, 1.0) : 0.0;
  // p.interp must be what reconstruct() will feed the network (ReconstructParams::interp).
  degrade_restore_rows(w.data(), win, crop, d.data(), dp, p.interp);
  if (lateral > 0) blur_cols(d.data(), win, crop, lateral);
  std::copy(w.begin() + top * crop, w.begin() + (top + crop) * crop, target);
  std::copy(d.begin() + top * crop, d.begin() + (top + crop) * crop, input);
}

namespace {

// The corpus images of each modality, so that a draw can balance modalities.
std::vector<std::vector<size_t>> by_modality(const std::vector<CorpusImage>& images) {
  std::map<Modality, std::vector<size_t>> m;
  for (size_t i = 0; i < images.size(); ++i) m[images[i].modality].push_back(i);
  std::vector<std::vector<size_t>> out;
  for (auto& kv : m) out.push_back(std::move(kv.second));
  return out;
}

// Orientations of `v` whose planes hold a crop x crop window; XY only unless `all`.
std::vector<Plane> usable_planes(const Volume& v, bool all, int64_t crop) {
  std::vector<Plane> ok;
  for (Plane pl : {Plane::XY, Plane::XZ, Plane::YZ}) {
    if (!all && pl != Plane::XY) continue;
    const PlaneView<float> view = v.plane<float>(pl, 0);
    if (std::min(view.rows, view.cols) >= crop) ok.push_back(pl);
  }
  return ok;
}

}  // namespace

void training_batch(const PretrainParams& p, int64_t step, PhantomPool& pool, at::Tensor& input,
                    at::Tensor& target) {
  const int64_t B = p.batch, c = p.pairs.crop;
  input = at::empty({B, 1, c, c}, at::kFloat);
  target = at::empty({B, 1, c, c}, at::kFloat);
  const auto groups = by_modality(p.corpus);
  std::vector<float> plane;
  for (int64_t b = 0; b < B; ++b) {
    SplitMix r(hash_combine(hash_combine(p.seed, static_cast<uint64_t>(step)),
                            static_cast<uint64_t>(b) + 0xba7c4));
    const Volume* v = nullptr;
    bool all_orientations = true;
    if (!groups.empty() && r.uniform() < p.data_fraction) {
      // Modality first, then a file: EM is 12 of the corpus's 87 files but half its use.
      const auto& g = groups[size_t(r.randint(0, static_cast<int64_t>(groups.size()) - 1))];
      const CorpusImage& img =
          p.corpus[g[size_t(r.randint(0, static_cast<int64_t>(g.size()) - 1))]];
      v = &img.planes;
      all_orientations = img.isotropic;
    } else {
      v = &pool_volume(p, pool, r.randint(0, kPoolSlots - 1), step);
    }
    const std::vector<Plane> ok = usable_planes(*v, all_orientations, c);
    if (ok.empty())
      throw_input("training volume of shape {} has no plane of at least {}x{} pixels",
                  to_string(v->shape()), c, c);
    const Plane pl = ok[size_t(r.randint(0, static_cast<int64_t>(ok.size()) - 1))];
    const int64_t index = r.randint(0, v->plane_count(pl) - 1);
    int64_t rows = 0, cols = 0;
    extract_plane(*v, pl, index, plane, rows, cols);
    make_pair(plane.data(), rows, cols, p.pairs, r.next(), input.data_ptr<float>() + b * c * c,
              target.data_ptr<float>() + b * c * c);
  }
}

double psnr_unit(const at::Tensor& a, const at::Tensor& b) {
  const double mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean().item<double>();
  return mse > 0 ? 10.0 * std::log10(1.0 / mse) : 99.0;
}

void identity_init(SwinIR& net) {
  at::NoGradGuard ng;
  const SwinConfig& c = net->config();
  for (auto& kv : net->named_parameters(true)) {
    const std::string& name = kv.key();
    at::Tensor t = kv.value();
    if (name == "conv_first.weight") {
      t[0].zero_();
      for (int64_t ch = 0; ch < c.in_chans; ++ch) t[0][ch][1][1].fill_(ch == 0 ? 1.0 : 0.0);
    } else if (name == "conv_first.bias") {
      t[0].zero_();
    } else if (name == "conv_after_body.weight" || name == "conv_after_body.bias") {
      t.zero_();
    } else if (name == "conv_before_upsample.0.weight") {
      t[0].zero_();
      t[0][0][1][1].fill_(1.0);
    } else if (name == "conv_before_upsample.0.bias") {
      t[0].fill_(1.0);  // keeps channel 0 positive through the LeakyReLU for inputs > -1
    } else if (name == "conv_last.weight") {
      t.zero_();
      t[0][0][1][1].fill_(1.0);
    } else if (name == "conv_last.bias") {
      t.fill_(-1.0);
    }
  }
}

// ---- validation ----------------------------------------------------------------------

ValSet make_val_set(const PretrainParams& p) {
  const int64_t size = p.val_crop, per = std::max<int64_t>(1, p.val_pairs);
  const double factors[] = {2, 4, 8};
  // Sources per modality: held-out corpus images, then phantoms (one 112^3 volume per kind).
  struct Source {
    const Volume* v;
    bool all;
  };
  std::map<std::string, std::vector<Source>> sources;
  for (const CorpusImage& img : p.val_corpus)
    if (!usable_planes(img.planes, img.isotropic, size).empty())
      sources[modality_name(img.modality)].push_back({&img.planes, img.isotropic});
  std::vector<Volume> phantoms;
  for (PhantomKind kind : all_phantom_kinds()) {
    PhantomParams ph;
    ph.size = {112, 112, 112};
    ph.kind = kind;
    ph.seed = hash_combine(kValSeed, static_cast<uint64_t>(phantoms.size()));
    phantoms.push_back(normalized_float(make_phantom(ph)));
  }
  for (const Volume& v : phantoms) sources["phantom"].push_back({&v, true});

  ValSet vs;
  for (const auto& [modality, list] : sources)
    for (double f : factors) {
      ValGroup g;
      g.modality = modality;
      g.factor = f;
      g.pairs = per;
      vs.offset.push_back(vs.groups.empty() ? 0 : vs.offset.back() + vs.groups.back().pairs);
      vs.groups.push_back(g);
    }
  const int64_t n = vs.groups.empty() ? 0 : vs.offset.back() + vs.groups.back().pairs;
  vs.input = at::empty({n, 1, size, size}, at::kFloat);
  vs.target = at::empty({n, 1, size, size}, at::kFloat);
  PairParams pp = p.pairs;
  pp.crop = size;
  pp.lateral_blur_prob = 0;
  // Fixed factors: the training stream's factor draw must not change the validation set.
  pp.log_uniform_factor = false;
  std::vector<float> plane;
  for (size_t gi = 0; gi < vs.groups.size(); ++gi) {
    const ValGroup& g = vs.groups[gi];
    const auto& list = sources.at(g.modality);
    pp.min_factor = pp.max_factor = g.factor;
    for (int64_t i = 0; i < g.pairs; ++i) {
      // Sources in turn, planes by hash: a pure function of the group name, factor and i.
      const Source& src = list[size_t(i) % list.size()];
      SplitMix r(
          hash_combine(hash_combine(kValSeed, std::hash<std::string>{}(g.modality)),
                       static_cast<uint64_t>(g.factor * 1000) * 100003 + static_cast<uint64_t>(i)));
      const std::vector<Plane> ok = usable_planes(*src.v, src.all, size);
      const Plane pl = ok[size_t(r.randint(0, static_cast<int64_t>(ok.size()) - 1))];
      const int64_t count = src.v->plane_count(pl);
      // Phantom planes near the faces are mostly empty: keep to the middle 80%.
      const int64_t lo = src.all ? count / 10 : 0,
                    hi = src.all ? count - 1 - count / 10 : count - 1;
      int64_t rows = 0, cols = 0;
      extract_plane(*src.v, pl, r.randint(lo, hi), plane, rows, cols);
      const int64_t row = vs.offset[gi] + i;
      make_pair(plane.data(), rows, cols, pp, r.next(),
                vs.input.data_ptr<float>() + row * size * size,
                vs.target.data_ptr<float>() + row * size * size);
    }
  }
  return vs;
}

std::pair<double, double> validate_net(SwinIR& net, ValSet& vs, const c10::Device& dev) {
  at::NoGradGuard ng;
  const int64_t n = vs.input.size(0);
  std::vector<double> in(static_cast<size_t>(n)), out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t e = std::min(n, i + 8);
    at::Tensor x = vs.input.slice(0, i, e), y = vs.target.slice(0, i, e);
    at::Tensor o = net->forward(x.to(dev)).to(at::kCPU);
    for (int64_t k = 0; k < e - i; ++k) {
      in[size_t(i + k)] = psnr_unit(x[k], y[k]);
      out[size_t(i + k)] = psnr_unit(o[k], y[k]);
    }
  }
  double sin = 0, sout = 0;
  for (size_t gi = 0; gi < vs.groups.size(); ++gi) {
    ValGroup& g = vs.groups[gi];
    double a = 0, b = 0;
    for (int64_t k = vs.offset[gi]; k < vs.offset[gi] + g.pairs; ++k) {
      a += in[size_t(k)];
      b += out[size_t(k)];
    }
    g.psnr_input = a / double(g.pairs);
    g.psnr_output = b / double(g.pairs);
    sin += a;
    sout += b;
  }
  return {sin / double(std::max<int64_t>(1, n)), sout / double(std::max<int64_t>(1, n))};
}

// ---- training -------------------------------------------------------------------------

namespace {

// The parameters that define the data stream: a resumed run must match them.
std::string stream_json(const PretrainParams& p) {
  nlohmann::ordered_json j;
  j["seed"] = p.seed;
  j["batch"] = p.batch;
  j["crop"] = p.pairs.crop;
  j["factors"] = {p.pairs.min_factor, p.pairs.max_factor};
  j["factor_draw"] = p.pairs.log_uniform_factor ? "log-uniform" : "uniform";
  j["psf_prob"] = p.pairs.psf_prob;
  j["poisson"] = {p.pairs.poisson_prob, p.pairs.poisson_min, p.pairs.poisson_max};
  j["gaussian"] = {p.pairs.gaussian_prob, p.pairs.gaussian_max};
  j["lateral_blur_prob"] = p.pairs.lateral_blur_prob;
  j["phantom_size"] = p.phantom_size;
  j["phantom_every"] = p.phantom_every;
  j["input_interp"] = interp_name(p.pairs.interp);
  std::vector<std::string> train, held_out;
  for (const CorpusImage& img : p.corpus) train.push_back(img.name);
  for (const CorpusImage& img : p.val_corpus) held_out.push_back(img.name);
  j["data"] = train;
  j["data_fraction"] = p.data_fraction;
  j["held_out"] = held_out;
  j["val"] = {p.val_pairs, p.val_crop};
  return j.dump();
}

// The learning-rate schedule: a resumed run may change it (with a warning), e.g. to anneal.
std::string optim_json(const PretrainParams& p) {
  nlohmann::ordered_json j;
  j["lr"] = p.lr;
  j["warmup"] = p.warmup;
  j["min_lr_ratio"] = p.min_lr_ratio;
  return j.dump();
}

std::string fmt_double(double v) {
  return fmt::format("{:.17g}", v);
}

}  // namespace

std::string val_gains_text(const std::vector<ValGroup>& groups) {
  std::string out;
  for (const ValGroup& g : groups)
    out +=
        fmt::format("{}{} x{:g} {:+.3f}", out.empty() ? "" : ", ", g.modality, g.factor, g.gain());
  return out + " dB";
}

std::string val_groups_json(const std::vector<ValGroup>& groups) {
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  for (const ValGroup& g : groups)
    j.push_back({{"modality", g.modality},
                 {"factor", g.factor},
                 {"pairs", g.pairs},
                 {"psnr_input", std::round(g.psnr_input * 1e4) / 1e4},
                 {"psnr_output", std::round(g.psnr_output * 1e4) / 1e4}});
  return j.dump();
}

namespace {

struct TrainState {
  SwinIR net{nullptr};
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<at::Tensor> m, v;
  int64_t step = 0;
  double seconds_before = 0;  // wall time of earlier sessions
  double loss_acc = 0;
  int64_t loss_n = 0;
};

void write_checkpoint(const std::string& path, const TrainState& st, const PretrainParams& p,
                      double seconds) {
  TensorList list;
  for (size_t i = 0; i < st.params.size(); ++i)
    list.emplace_back("param/" + st.params[i].first, st.params[i].second.detach());
  for (size_t i = 0; i < st.params.size(); ++i)
    list.emplace_back("adam_m/" + st.params[i].first, st.m[i]);
  for (size_t i = 0; i < st.params.size(); ++i)
    list.emplace_back("adam_v/" + st.params[i].first, st.v[i]);
  std::map<std::string, std::string> meta{{"format", "isoprompt-pretrain-checkpoint"},
                                          {"step", std::to_string(st.step)},
                                          {"seconds", fmt_double(seconds)},
                                          {"config", p.config.to_json()},
                                          {"stream", stream_json(p)},
                                          {"optim", optim_json(p)},
                                          {"loss_acc", fmt_double(st.loss_acc)},
                                          {"loss_n", std::to_string(st.loss_n)}};
  write_safetensors(path, list, meta);
}

// The top-level keys whose values differ between two JSON objects, for a readable message.
static std::string changed_keys(const std::string& saved_json, const std::string& this_json) {
  const auto a = nlohmann::json::parse(saved_json, nullptr, false),
             b = nlohmann::json::parse(this_json, nullptr, false);
  if (!a.is_object() || !b.is_object()) return "unreadable settings";
  std::string out;
  auto add = [&](const std::string& k) { out += (out.empty() ? "" : ", ") + k; };
  for (const auto& [k, v] : a.items())
    if (!b.contains(k) || b[k] != v) add(k);
  for (const auto& [k, v] : b.items())
    if (!a.contains(k)) add(k);
  return out;
}

void read_checkpoint(const std::string& path, TrainState& st, const PretrainParams& p) {
  check_input_file(path, "checkpoint");
  std::map<std::string, std::string> meta;
  const TensorMap t = read_safetensors(path, &meta);
  auto get = [&](const std::string& k) {
    auto it = meta.find(k);
    if (it == meta.end())
      throw CheckpointError(
          fmt::format("{} is not a pretraining checkpoint (no '{}' metadata)", path, k));
    return it->second;
  };
  if (get("format") != "isoprompt-pretrain-checkpoint")
    throw CheckpointError(
        fmt::format("{} is not a pretraining checkpoint (format '{}')", path, get("format")));
  const SwinConfig saved = SwinConfig::from_json(get("config"));
  if (saved != p.config)
    throw_input("checkpoint {} was made with model {}, but this run asks for {}", path,
                saved.to_json(), p.config.to_json());
  if (get("stream") != stream_json(p)) {
    const std::string changed = changed_keys(get("stream"), stream_json(p));
    if (!p.resume_new_data)
      throw_input("checkpoint {} was made with other data settings ({}); use the same flags, "
                  "or --resume-new-data to continue with these",
                  path, changed);
    log_warn("resuming {} with new data settings ({})", path, changed);
  }
  if (get("optim") != optim_json(p))
    log_warn("resuming {} with another learning-rate schedule: {} (checkpoint: {})", path,
             optim_json(p), get("optim"));
  at::NoGradGuard ng;
  for (size_t i = 0; i < st.params.size(); ++i) {
    const std::string& name = st.params[i].first;
    for (const char* prefix : {"param/", "adam_m/", "adam_v/"}) {
      auto it = t.find(prefix + name);
      if (it == t.end())
        throw CheckpointError(
            fmt::format("checkpoint {} has no tensor '{}{}'", path, prefix, name));
      if (it->second.sizes() != st.params[i].second.sizes())
        throw CheckpointError(
            fmt::format("tensor '{}{}' in {} has the wrong shape", prefix, name, path));
    }
    st.params[i].second.copy_(t.at("param/" + name));
    st.m[i].copy_(t.at("adam_m/" + name));
    st.v[i].copy_(t.at("adam_v/" + name));
  }
  // Metadata is file content: a bad number is a CheckpointError, not std::stoll's exception.
  auto number = [&](const std::string& k) {
    const std::string s = get(k);
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
      throw CheckpointError(fmt::format("{}: metadata '{}' is not a number: '{}'", path, k, s));
    return v;
  };
  auto whole = [&](const std::string& k) {
    const double v = number(k);
    if (v < 0 || v != std::floor(v) || v > 1e15)
      throw CheckpointError(
          fmt::format("{}: metadata '{}' is not a step count: '{}'", path, k, get(k)));
    return static_cast<int64_t>(v);
  };
  st.step = whole("step");
  st.seconds_before = number("seconds");
  st.loss_acc = number("loss_acc");
  st.loss_n = whole("loss_n");
}

double lr_at(const PretrainParams& p, int64_t step) {
  double f = p.warmup > 0 ? std::min(1.0, double(step + 1) / double(p.warmup)) : 1.0;
  if (p.min_lr_ratio < 1.0 && p.steps > 0)
    f *= cosine_decay(p.min_lr_ratio, double(step) / double(p.steps));
  return p.lr * f;
}

void seed_torch(uint64_t seed) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

void validate_params(const PretrainParams& p) {
  p.config.validate();
  if (p.steps < 1) throw_input("--steps must be >= 1, got {}", p.steps);
  if (p.batch < 1) throw_input("--batch must be >= 1, got {}", p.batch);
  if (p.pairs.crop < 8) throw_input("--crop must be >= 8, got {}", p.pairs.crop);
  if (p.phantom_size < p.pairs.crop)
    throw_input("--phantom-size ({}) must be at least the crop size ({})", p.phantom_size,
                p.pairs.crop);
  if (!(p.pairs.min_factor >= 1) || p.pairs.max_factor < p.pairs.min_factor)
    throw_input("degradation factors must satisfy 1 <= min <= max, got {} and {}",
                p.pairs.min_factor, p.pairs.max_factor);
  if (!(p.lr > 0)) throw_input("--lr must be positive, got {}", p.lr);
  if (!(p.data_fraction >= 0 && p.data_fraction <= 1))
    throw_input("--data-fraction must be in [0, 1], got {}", p.data_fraction);
  if (p.val_crop < 16) throw_input("--val-crop must be >= 16, got {}", p.val_crop);
  if (p.val_pairs < 1) throw_input("--val-pairs must be >= 1, got {}", p.val_pairs);
  // The checkpoint may be the file resumed from (that is how a run continues); nothing
  // else may overwrite an input or another output.
  if (!p.checkpoint_path.empty()) check_output_path(p.checkpoint_path, {p.export_path, p.log_csv});
  if (!p.export_path.empty())
    check_output_path(p.export_path, {p.resume_path, p.checkpoint_path, p.log_csv});
  if (!p.log_csv.empty()) check_output_path(p.log_csv, {p.resume_path});
}

std::string iso_date() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

PretrainResult pretrain(const PretrainParams& p, c10::Device device) {
  validate_params(p);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto session_seconds = [&] { return std::chrono::duration<double>(clock::now() - t0).count(); };

  TrainState st;
  seed_torch(hash_combine(p.seed, 0x1417));
  st.net = SwinIR(p.config);
  if (p.identity_init) identity_init(st.net);
  st.net->to(device);
  st.net->train();
  for (auto& kv : st.net->named_parameters(true)) {
    st.params.emplace_back(kv.key(), kv.value());
    st.m.push_back(at::zeros_like(kv.value()));
    st.v.push_back(at::zeros_like(kv.value()));
  }
  if (!p.resume_path.empty()) {
    read_checkpoint(p.resume_path, st, p);
    log_info("resumed {} at step {} ({} of training so far)", p.resume_path, st.step,
             Progress::format_duration(st.seconds_before));
  }
  log_info("model {}: {} parameters, {:.1f} GFLOP per 256x256 slice", p.config.to_json(),
           p.config.parameter_count(), p.config.gflops(256, 256));

  std::unique_ptr<std::ofstream> csv;
  bool csv_header = false;
  if (!p.log_csv.empty()) {
    const bool append = !p.resume_path.empty() && file_exists(p.log_csv);
    csv = std::make_unique<std::ofstream>(p.log_csv, append ? std::ios::app : std::ios::trunc);
    if (!*csv) throw_input("cannot write log file {}", p.log_csv);
    csv_header = !append;
  }
  ValSet val = make_val_set(p);
  log_info("validation: {} fixed pairs of {}x{} in {} groups (modality x factor)",
           val.input.size(0), p.val_crop, p.val_crop, val.groups.size());
  if (csv && csv_header) {
    *csv << "step,loss,lr,val_psnr_input,val_psnr_output,seconds";
    for (const ValGroup& g : val.groups)
      *csv << fmt::format(",gain_{}_x{:g}", g.modality, g.factor);
    *csv << "\n";
  }
  PretrainResult res;
  PhantomPool pool;
  auto last_ckpt = clock::now();
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;

  auto checkpoint = [&] {
    if (p.checkpoint_path.empty()) return;
    write_checkpoint(p.checkpoint_path, st, p, st.seconds_before + session_seconds());
    last_ckpt = clock::now();
    log_debug("checkpoint at step {} written to {}", st.step, p.checkpoint_path);
  };
  auto run_validation = [&] {
    st.net->eval();
    const auto [pin, pout] = validate_net(st.net, val, device);
    st.net->train();
    res.val_psnr_input = pin;
    res.val_psnr_output = pout;
    res.val_groups = val.groups;
    return std::make_pair(pin, pout);
  };

  Progress bar("pretraining", p.steps, "steps", st.step);
  try {
    bar.update(st.step);
    while (st.step < p.steps) {
      at::Tensor x, y;
      training_batch(p, st.step, pool, x, y);
      x = x.to(device);
      y = y.to(device);
      for (auto& pr : st.params)
        if (pr.second.grad().defined()) pr.second.mutable_grad() = at::Tensor();
      at::Tensor out = st.net->forward(x);
      at::Tensor loss = (out - y).abs().mean();
      loss.backward();
      const double lr = lr_at(p, st.step);
      {
        at::NoGradGuard ng;
        const double t = double(st.step + 1);
        const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
        for (size_t i = 0; i < st.params.size(); ++i) {
          at::Tensor& w = st.params[i].second;
          const at::Tensor g = w.grad();
          if (!g.defined()) continue;
          st.m[i].mul_(b1).add_(g, 1 - b1);
          st.v[i].mul_(b2).addcmul_(g, g, 1 - b2);
          const at::Tensor denom = (st.v[i] / bc2).sqrt_().add_(eps);
          w.addcdiv_(st.m[i], denom, -lr / bc1);
        }
      }
      const double lv = loss.item<double>();
      if (!std::isfinite(lv))
        throw_error(
            "pretraining diverged at step {} (loss {}); lower --lr or resume from the last "
            "checkpoint",
            st.step, lv);
      st.loss_acc += lv;
      st.loss_n += 1;
      st.step += 1;
      const bool do_val = (p.val_every > 0 && st.step % p.val_every == 0) || st.step == p.steps;
      const bool do_log = st.step % std::max<int64_t>(1, p.log_every) == 0 || do_val;
      if (do_log) {
        const double mean_loss = st.loss_acc / double(std::max<int64_t>(1, st.loss_n));
        res.last_loss = mean_loss;
        std::string vin, vout, gains;
        if (do_val) {
          const auto [pin, pout] = run_validation();
          vin = fmt::format("{:.3f}", pin);
          vout = fmt::format("{:.3f}", pout);
          log_info("step {}: loss {:.5f}, validation PSNR input {} dB, output {} dB; gain {}",
                   st.step, mean_loss, vin, vout, val_gains_text(val.groups));
          for (const ValGroup& g : val.groups) gains += fmt::format(",{:.4f}", g.gain());
        } else {
          gains.assign(val.groups.size(), ',');
        }
        if (csv) {
          *csv << fmt::format("{},{:.6f},{:.3g},{},{},{:.1f}{}\n", st.step, mean_loss, lr, vin,
                              vout, st.seconds_before + session_seconds(), gains);
          csv->flush();
        }
        st.loss_acc = 0;
        st.loss_n = 0;
      }
      bar.update(st.step, fmt::format("loss {:.4f}", lv));
      if (std::chrono::duration<double>(clock::now() - last_ckpt).count() >=
          p.checkpoint_minutes * 60)
        checkpoint();
      if (p.max_minutes > 0 && session_seconds() >= p.max_minutes * 60 && st.step < p.steps) {
        res.stopped_early = true;
        log_info("stopping after {} minutes at step {} (--max-minutes)", p.max_minutes, st.step);
        break;
      }
    }
  } catch (const Cancelled&) {
    checkpoint();
    if (!p.checkpoint_path.empty())
      log_info("interrupted at step {}: checkpoint written to {} (continue with --resume)", st.step,
               p.checkpoint_path);
    throw;
  }
  bar.finish();
  checkpoint();
  if (res.val_psnr_input == 0) run_validation();
  res.steps_done = st.step;
  res.seconds = st.seconds_before + session_seconds();
  if (!p.export_path.empty()) {
    st.net->eval();
    std::map<std::string, std::string> meta{
        {"name", p.model_name},
        {"description", p.corpus.empty() ? "isoprompt backbone pretrained from scratch on "
                                           "procedural phantoms (isoprompt pretrain)"
                                         : "isoprompt backbone pretrained from scratch on real "
                                           "microscopy images and procedural phantoms (isoprompt "
                                           "pretrain --data)"},
        {"input_interp", interp_name(p.pairs.interp)},
        {"val_groups", val_groups_json(res.val_groups)},
        {"pretrain_steps", std::to_string(res.steps_done)},
        {"pretrain_batch", std::to_string(p.batch)},
        {"pretrain_crop", std::to_string(p.pairs.crop)},
        {"pretrain_seconds", fmt::format("{:.0f}", res.seconds)},
        {"pretrain_settings", stream_json(p)},
        {"pretrain_optim", optim_json(p)},
        {"val_psnr_input", fmt::format("{:.3f}", res.val_psnr_input)},
        {"val_psnr_output", fmt::format("{:.3f}", res.val_psnr_output)},
        {"created", iso_date()}};
    save_backbone(p.export_path, st.net, meta);
    log_info("exported {} ({} steps)", p.export_path, res.steps_done);
  }
  return res;
}

}  // namespace isoprompt
