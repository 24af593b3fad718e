// Restoration operators: resampling along one axis, degradation models, intensity
// normalisation. Plain C++ with OpenMP; every function returns a new float32 Volume
// unless it says "in place".
//
// Geometry (used everywhere, see docs/ops.md): grids are cell-centred. Voxel i along
// an axis with step s covers [i*s, (i+1)*s).
//   - downsample by K: output j covers input [jK, (j+1)K); each input voxel is weighted
//     by its overlap length / K (for integer K: the mean of K voxels). Output length is
//     floor(n / K): voxels left over at the end are dropped.
//   - upsample by K: output i reads input coordinate (i + 0.5)/K - 0.5. Output length
//     round(n * K) unless given.
//   - boundary of upsampling: half-sample symmetric (the line mirrored about its outer cell
//     faces, ... b a | a b ... y z | z y ...) for nearest, linear and B-spline (for nearest
//     and linear this is the same as clamp-to-edge); clamp-to-edge for Keys and Lanczos.
//     Area downsampling never reads outside [0, n).
//   - the output voxel size along the axis is exactly step * K (down) or step / K (up).
//
//   Volume lo = isoprompt::downsample(gt, 0, 4.0);                          // z / 4
//   Volume up = isoprompt::upsample(lo, 0, 4.0, Interp::BSpline3, gt.nz()); // back to gt's z
//
// Axes: 0 = z, 1 = y, 2 = x.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "isoprompt/volume.h"

namespace isoprompt {

/// Interpolation kernels for upsampling.
///   Nearest:  the nearest input voxel (ties go to the higher index).
///   Linear:   triangle kernel, support 2.
///   Keys:     Keys cubic convolution with a = -0.5 (Catmull-Rom), support 4; interpolating,
///             reproduces quadratics in the interior; clamp-to-edge. The network's z-upsampled
///             input is built with this kernel (the shipped backbone was trained on it).
///   Lanczos3: sinc(t) sinc(t/3), support 6, weights renormalised to sum to 1; clamp-to-edge.
///   BSpline3: the "cubic" of scipy.ndimage.zoom(order=3, grid_mode=True, mode='reflect') and
///             skimage resize(order=3): the line is prefiltered to cubic B-spline coefficients
///             (recursive filter, pole sqrt(3) - 2), then evaluated with the cubic B-spline
///             kernel. Both steps extend the line half-sample symmetrically, so taps past the
///             ends read -1 -> 0, -2 -> 1, n -> n - 1. Interpolating; reproduces cubics away
///             from the ends.
enum class Interp { Nearest, Linear, Keys, Lanczos3, BSpline3 };
/// "nearest", "linear", "keys", "lanczos", "cubic" (BSpline3).
const char* interp_name(Interp m);
/// Accepts the names above, "catmull-rom" (Keys), "bspline" (BSpline3) and "lanczos3";
/// throws InputError listing the choices.
Interp parse_interp(const std::string& s);

/// Area-average downsampling along `axis` by `factor` >= 1 (fractional allowed).
Volume downsample(const Volume& v, int axis, double factor);

/// Interpolating upsampling along `axis` by `factor` >= 1 (fractional allowed).
/// `out_len` < 0 means round(n * factor). The voxel size along `axis` becomes step / factor.
Volume upsample(const Volume& v, int axis, double factor, Interp interp, int64_t out_len = -1);

/// How an isotropic image is made anisotropic: blur along the axis, subsample by
/// `factor`, then optionally add noise.
struct DegradeParams {
  enum Model { Average, Psf };
  /// Average: box filter of width K, i.e. the area average of downsample().
  /// Psf: a Gaussian (or measured profile) along the axis, sampled at the centres of
  /// the K-grid, (j + 0.5) K - 0.5 in input voxels; tails clamp to the edge.
  Model model = Average;
  double factor = 1.0;
  /// Psf width: exactly one of the three may be set. FWHM in the volume's unit (µm),
  /// converted with the voxel step along the axis; sigma in input pixels; or a sampled
  /// profile (one value per input voxel step, centred on its centroid).
  double psf_fwhm_um = 0;
  double psf_sigma_px = 0;
  std::vector<double> psf_profile;
  /// Poisson noise: the degraded image is scaled so its maximum is `poisson_peak`
  /// photons, sampled, and scaled back. 0 = off.
  double poisson_peak = 0;
  /// Additive Gaussian noise, standard deviation in the image's intensity units. 0 = off.
  double gaussian_sigma = 0;
  /// Noise seed: the same seed gives the same noise, whatever the thread count.
  uint64_t seed = 0;
};
/// Checks the parameters (factor >= 1, one PSF width for Psf, ...); throws InputError.
void validate(const DegradeParams& p);
/// Reads a PSF profile from a text file: numbers separated by whitespace, commas or
/// newlines ('#' starts a comment). Throws InputError naming the file.
std::vector<double> read_psf_profile_text(const std::string& path);
/// The axial profile through the brightest voxel of a PSF stack (z axis), for --psf-file TIFF.
std::vector<double> psf_profile_from_stack(const Volume& psf);

/// Degrades `v` along `axis`. Output: float32, length floor(n / K) along the axis,
/// voxel step * K.
Volume degrade(const Volume& v, int axis, const DegradeParams& p);

/// Self-supervised training pairs: degrades a row-major rows x cols float image along
/// its rows (axis 0) and upsamples it back to `rows` rows with `interp`, into `dst`
/// (rows x cols, may not alias src). Same kernels as degrade() + upsample().
/// `dst` rows past round(floor(rows/K) * K) are filled by clamp-to-edge extrapolation.
/// `row_step_um` converts psf_fwhm_um to pixels (the lateral pixel size of the slice).
/// `noise_stream` selects an independent noise stream (e.g. the slice index).
void degrade_restore_rows(const float* src, int64_t rows, int64_t cols, float* dst,
                          const DegradeParams& p, Interp interp, double row_step_um = 1.0,
                          uint64_t noise_stream = 0);

/// Crops `v` to the box [origin, origin + size); keeps dtype and voxel size (deep copy).
Volume crop(const Volume& v, Shape3 origin, Shape3 size);

// ---- Intensity normalisation -------------------------------------------------------

/// Maps [lo, hi] to [0, 1]. lo/hi are intensities in the input's scale.
struct Normalizer {
  double lo = 0, hi = 1;
  double scale() const { return hi > lo ? 1.0 / (hi - lo) : 1.0; }  // constant image: offset only
};
/// Percentiles of the whole volume (exact, streaming; default 1 and 99.8).
Normalizer percentile_normalizer(const Volume& v, double pmin = 1.0, double pmax = 99.8);

/// float32 (x - lo) / (hi - lo), no clipping.
Volume normalize(const Volume& v, const Normalizer& n);
/// Same, in place on a float32 volume.
void normalize_inplace(Volume& f32, const Normalizer& n);
/// Clips a float32 volume to [lo, hi] in place; returns the number of voxels changed.
int64_t clip_inplace(Volume& f32, float lo, float hi);

/// Voxels that did not fit the output dtype when denormalising.
struct ClipReport {
  int64_t below = 0, above = 0, total = 0;
  double min_value = 0, max_value = 0;  // the representable range used
  /// "clipped 0.31% of voxels (1234 above 65535, 0 below 0)" or "" when none were clipped.
  std::string summary() const;
};
/// Inverse of normalize(): x * (hi - lo) + lo, converted to `out` (integers round to
/// nearest and saturate; float32 saturates at +-FLT_MAX, so finite data near the float
/// range never turn into Inf from a network's small overshoot; the saturated voxels are
/// counted in `report` when given).
Volume denormalize(const Volume& f32, const Normalizer& n, DType out, ClipReport* report = nullptr);
/// denormalize() for float32 in place (the same arithmetic and saturation).
void denormalize_inplace(Volume& f32, const Normalizer& n, ClipReport* report = nullptr);

}  // namespace isoprompt
