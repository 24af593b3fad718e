// Degradation models: blur along one axis, subsample on the K-grid, optional noise.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "isoprompt/ops.h"
#include "ops/line_resampler.h"

namespace isoprompt {
namespace detail {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

LineWeights degrade_weights(int64_t n_in, const DegradeParams& p, double step_um) {
  if (p.model == DegradeParams::Average) return area_weights(n_in, p.factor);
  if (!p.psf_profile.empty()) {
    // Measured profile: background (its minimum) removed, centred on its centroid,
    // linearly interpolated between samples.
    std::vector<double> prof = p.psf_profile;
    const double mn = *std::min_element(prof.begin(), prof.end());
    double sum = 0, mom = 0;
    for (size_t i = 0; i < prof.size(); ++i) {
      prof[i] -= mn;
      sum += prof[i];
      mom += prof[i] * double(i);
    }
    const double mu = sum > 0 ? mom / sum : (prof.size() - 1) / 2.0;
    const double radius = std::max(mu, double(prof.size() - 1) - mu) + 1.0;
    auto kernel = [prof, mu](double t) {
      const double x = mu + t;
      if (x < 0 || x > double(prof.size() - 1)) return 0.0;
      const size_t last = prof.size() - 1;
      if (last == 0) return prof[0];
      const size_t i = std::min(static_cast<size_t>(x), last - 1);
      const double f = x - double(i);
      return prof[i] * (1 - f) + prof[i + 1] * f;
    };
    return kernel_weights(n_in, p.factor, kernel, radius);
  }
  const double sigma = p.psf_sigma_px > 0 ? p.psf_sigma_px : p.psf_fwhm_um / (2.0 * std::sqrt(2.0 * std::log(2.0))) / step_um;
  auto gauss = [sigma](double t) { return std::exp(-0.5 * t * t / (sigma * sigma)); };
  return kernel_weights(n_in, p.factor, gauss, 4.0 * sigma);
}

void add_noise(float* data, int64_t lines, int64_t line_len, const DegradeParams& p, uint64_t stream) {
  if (p.poisson_peak <= 0 && p.gaussian_sigma <= 0) return;
  const int64_t n = lines * line_len;
  float mx = 0.f;
#pragma omp parallel for reduction(max : mx) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, data[i]);
  const double scale = p.poisson_peak > 0 && mx > 0 ? p.poisson_peak / double(mx) : 0.0;
  const uint64_t base = splitmix64(p.seed ^ splitmix64(stream + 0x51ED));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t l = 0; l < lines; ++l) {
    std::mt19937_64 rng(splitmix64(base + static_cast<uint64_t>(l)));
    std::normal_distribution<double> normal(0.0, 1.0);
    float* d = data + l * line_len;
    for (int64_t i = 0; i < line_len; ++i) {
      double x = d[i];
      if (scale > 0) {
        const double lam = std::max(0.0, x * scale);
        x = lam > 0 ? double(std::poisson_distribution<int64_t>(lam)(rng)) / scale : 0.0;
      }
      if (p.gaussian_sigma > 0) x += p.gaussian_sigma * normal(rng);
      d[i] = static_cast<float>(x);
    }
  }
}

}  // namespace detail

void validate(const DegradeParams& p) {
  if (!(p.factor >= 1.0) || !std::isfinite(p.factor))
    throw_input("degradation factor must be a finite number >= 1, got {}", p.factor);
  if (p.model == DegradeParams::Psf) {
    const int n_set = (p.psf_fwhm_um > 0) + (p.psf_sigma_px > 0) + (!p.psf_profile.empty());
    if (n_set != 1)
      throw_input("the psf model needs exactly one of a fwhm in um, a sigma in px or a profile, got {}", n_set);
    if (p.psf_fwhm_um < 0 || p.psf_sigma_px < 0) throw_input("psf width must be positive");
    for (double x : p.psf_profile)
      if (!std::isfinite(x)) throw_input("psf profile contains a non-finite value");
  }
  if (p.poisson_peak < 0 || !std::isfinite(p.poisson_peak))
    throw_input("poisson peak must be >= 0 (0 = off), got {}", p.poisson_peak);
  if (p.gaussian_sigma < 0 || !std::isfinite(p.gaussian_sigma))
    throw_input("gaussian noise sigma must be >= 0 (0 = off), got {}", p.gaussian_sigma);
}

std::vector<double> read_psf_profile_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw_input("cannot open psf profile file {}", path);
  std::vector<double> out;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    for (char& c : line)
      if (c == ',' || c == ';' || c == '\t') c = ' ';
    std::istringstream ss(line);
    std::string tok;
    while (ss >> tok) {
      char* end = nullptr;
      const double v = std::strtod(tok.c_str(), &end);
      if (end == tok.c_str() || *end != '\0' || !std::isfinite(v))
        throw_input("psf profile file {} line {}: '{}' is not a number", path, line_no, tok);
      out.push_back(v);
    }
  }
  if (out.size() < 2) throw_input("psf profile file {} holds {} values, need at least 2", path, out.size());
  return out;
}

std::vector<double> psf_profile_from_stack(const Volume& psf) {
  if (psf.empty()) throw_input("psf stack is empty");
  int64_t best = 0;
  float best_v = -INFINITY;
  for (int64_t i = 0; i < psf.numel(); ++i) {
    const float v = voxel_as_float(psf, i);
    if (v > best_v) best_v = v, best = i;
  }
  const int64_t plane = psf.ny() * psf.nx(), yx = best % plane;
  std::vector<double> prof(psf.nz());
  for (int64_t z = 0; z < psf.nz(); ++z) prof[z] = voxel_as_float(psf, z * plane + yx);
  if (prof.size() < 2) throw_input("psf stack has {} z slices, need at least 2 for an axial profile", prof.size());
  return prof;
}

Volume degrade(const Volume& v, int axis, const DegradeParams& p) {
  validate(p);
  const detail::AxisLayout l = detail::layout(v.shape(), axis);
  if (detail::downsampled_length(l.n, p.factor) < 1)
    throw_input("cannot degrade an axis of length {} by factor {}: fewer voxels than the factor", l.n, p.factor);
  const double step = detail::axis_step(v.voxel_size(), axis);
  Volume out = detail::apply_along_axis(v, axis, detail::degrade_weights(l.n, p, step), p.factor);
  detail::add_noise(out.data<float>(), out.numel() / std::max<int64_t>(1, out.nx()), out.nx(), p);
  return out;
}

void degrade_restore_rows(const float* src, int64_t rows, int64_t cols, float* dst, const DegradeParams& p,
                          Interp interp, double row_step_um, uint64_t noise_stream) {
  validate(p);
  const int64_t n_low = detail::downsampled_length(rows, p.factor);
  if (n_low < 1) throw_input("cannot degrade an image of {} rows by factor {}", rows, p.factor);
  std::vector<float> low(static_cast<size_t>(n_low * cols));
  detail::apply_weights<float>(src, 1, cols, detail::degrade_weights(rows, p, row_step_um), low.data());
  detail::add_noise(low.data(), n_low, cols, p, noise_stream);
  if (interp == Interp::BSpline3) detail::bspline3_prefilter(low.data(), 1, n_low, cols);
  detail::apply_weights<float>(low.data(), 1, cols, detail::interp_weights(n_low, p.factor, interp, rows), dst);
}

}  // namespace isoprompt
