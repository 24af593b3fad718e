#include <algorithm>
#include <cmath>
#include <vector>

#include "isoprompt/error.h"
#include "isoprompt/log.h"
#include "isoprompt/train.h"

namespace isoprompt {

namespace {

// Rows of real context degraded above and below a crop: covers the box (K), the Keys or
// Lanczos support in low-resolution samples (3 each side, times K) and a PSF's tails.
int64_t row_margin(const PairOptions& o, double row_step_um) {
  double m = 4.0 * o.factor + 8.0;
  if (o.degrade.model == DegradeParams::Psf) {
    double sigma = o.degrade.psf_sigma_px;
    if (o.degrade.psf_fwhm_um > 0) sigma = o.degrade.psf_fwhm_um / row_step_um / 2.3548200450309493;
    if (!o.degrade.psf_profile.empty()) sigma = static_cast<double>(o.degrade.psf_profile.size()) / 2;
    m += 4.0 * sigma;
  }
  return static_cast<int64_t>(std::ceil(m));
}

}  // namespace

PairSampler::PairSampler(const Volume& vol, const PairOptions& opt) : vol_(vol), opt_(opt) {
  if (vol.empty()) throw_input("cannot tune on an empty volume");
  if (!(opt.factor >= 1.0) || opt.factor > 1000)
    throw_input("anisotropy factor must be in 1..1000, got {}", opt.factor);
  if (opt.crop_min < 1 || opt.crop_max < opt.crop_min)
    throw_input("crop sizes must satisfy 1 <= min <= max, got {}-{}", opt.crop_min, opt.crop_max);
  if (!(opt.val_fraction >= 0) || opt.val_fraction >= 1)
    throw_input("validation fraction must be in [0, 1), got {}", opt.val_fraction);
  if (opt.min_val_planes < 1)
    throw_input("--min-val-planes must be at least 1, got {}", opt.min_val_planes);
  opt_.degrade.factor = opt.factor;
  validate(opt_.degrade);
  norm_ = opt.norm ? *opt.norm : percentile_normalizer(vol, opt.pmin, opt.pmax);
  max_crop_ = std::min({vol.ny(), vol.nx(), opt.crop_max});

  const int64_t nz = vol.nz();
  int64_t nv = 0;
  if (nz >= 2 && opt.val_fraction > 0)
    nv = std::clamp<int64_t>(std::llround(opt.val_fraction * nz), 1, nz - 1);
  if (nv > 0 && nv < opt.min_val_planes) {
    log_info("only {} of {} planes would be held out (fewer than {}): validating on all of them, "
             "in-sample (--min-val-planes 1 holds them out anyway)",
             nv, nz, opt.min_val_planes);
    nv = 0;
  }
  std::vector<bool> is_val(static_cast<size_t>(nz), false);
  for (int64_t i = 0; i < nv; ++i) {
    const auto z = static_cast<int64_t>((i + 0.5) * nz / nv);  // evenly spread
    is_val[static_cast<size_t>(std::min(z, nz - 1))] = true;
  }
  for (int64_t z = 0; z < nz; ++z) (is_val[static_cast<size_t>(z)] ? val_ : train_).push_back(z);
  if (val_.empty()) {
    val_ = train_;
    in_sample_ = true;
    if (nz == 1) log_warn("volume has a single z-plane: validation uses the training plane");
  }
}

int64_t PairSampler::draw_size(std::mt19937_64& rng) const {
  const int64_t hi = max_crop_ / 8 * 8, lo = (std::min(opt_.crop_min, max_crop_) + 7) / 8 * 8;
  if (hi < 8 || lo > hi) return max_crop_;
  std::uniform_int_distribution<int64_t> d(lo / 8, hi / 8);
  return d(rng) * 8;
}

PairBatch PairSampler::pair_at(int64_t z, int64_t y, int64_t x, int64_t size, bool flip_rows,
                               bool flip_cols, uint64_t noise_stream) const {
  const int64_t ny = vol_.ny(), nx = vol_.nx();
  if (z < 0 || z >= vol_.nz() || size < 1 || y < 0 || x < 0 || y + size > ny || x + size > nx)
    throw_error("pair crop z {} y {} x {} size {} is outside the {} volume", z, y, x, size,
                to_string(vol_.shape()));
  const double row_step = vol_.voxel_size().y;
  const int64_t m = row_margin(opt_, row_step);
  const int64_t r0 = std::max<int64_t>(0, y - m), r1 = std::min(ny, y + size + m);
  const int64_t rows = r1 - r0;
  std::vector<float> src(static_cast<size_t>(rows * size)), dst(src.size());
  const double lo = norm_.lo, sc = norm_.scale();
  visit_dtype(vol_.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const PlaneView<T> p = vol_.xy<T>(z);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < size; ++c)
        src[static_cast<size_t>(r * size + c)] =
            static_cast<float>((static_cast<double>(p(r0 + r, x + c)) - lo) * sc);
  });
  degrade_restore_rows(src.data(), rows, size, dst.data(), opt_.degrade, opt_.interp, row_step,
                       noise_stream);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor in = at::from_blob(dst.data(), {rows, size}, f32).slice(0, y - r0, y - r0 + size);
  at::Tensor tg = at::from_blob(src.data(), {rows, size}, f32).slice(0, y - r0, y - r0 + size);
  // Flips keep the degraded axis on rows; a transpose would move it and is never used.
  std::vector<int64_t> dims;
  if (flip_rows) dims.push_back(0);
  if (flip_cols) dims.push_back(1);
  if (!dims.empty()) {
    in = in.flip(dims);
    tg = tg.flip(dims);
  }
  return {in.clone().view({1, 1, size, size}), tg.clone().view({1, 1, size, size})};
}

PairBatch PairSampler::sample(int64_t batch, int64_t size, std::mt19937_64& rng) const {
  size = std::min(size, max_crop_);
  std::vector<at::Tensor> ins, tgs;
  std::uniform_int_distribution<size_t> pz(0, train_.size() - 1);
  std::uniform_int_distribution<int64_t> py(0, vol_.ny() - size), px(0, vol_.nx() - size);
  std::bernoulli_distribution coin(0.5);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t z = train_[pz(rng)], y = py(rng), x = px(rng);
    const bool fr = opt_.flips && coin(rng), fc = opt_.flips && coin(rng);
    PairBatch p = pair_at(z, y, x, size, fr, fc, rng());
    ins.push_back(p.input);
    tgs.push_back(p.target);
  }
  return {at::cat(ins), at::cat(tgs)};
}

PairBatch PairSampler::validation(int64_t count, int64_t size, uint64_t seed) const {
  size = std::min(size, max_crop_);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::uniform_int_distribution<int64_t> py(0, vol_.ny() - size), px(0, vol_.nx() - size);
  std::vector<at::Tensor> ins, tgs;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t z = val_[static_cast<size_t>(i) % val_.size()];
    const int64_t y = py(rng), x = px(rng);
    PairBatch p = pair_at(z, y, x, size, false, false, 1000003ULL + static_cast<uint64_t>(i));
    ins.push_back(p.input);
    tgs.push_back(p.target);
  }
  return {at::cat(ins), at::cat(tgs)};
}

}  // namespace isoprompt
