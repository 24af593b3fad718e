// One 1D line resampler serves every operator in ops/: a sparse weight matrix
// (output j = sum_k w_jk * input idx_jk) applied along one axis of a strided array.
// Boundary handling (clamp-to-edge, or half-sample symmetric for the B-spline) is folded
// into the indices when the matrix is built.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "isoprompt/ops.h"

namespace isoprompt::detail {

struct LineWeights {
  int64_t n_in = 0, n_out = 0;
  std::vector<int64_t> offset;  // n_out + 1 entries into index/weight
  std::vector<int64_t> index;   // input voxel, already folded into [0, n_in)
  std::vector<float> weight;
  int64_t taps(int64_t j) const { return offset[j + 1] - offset[j]; }
};

// Output length of an area-average / K-grid downsampling: floor(n / K) (tolerant of
// floating-point noise, so 12 / (12/5.0) gives 5, not 4).
int64_t downsampled_length(int64_t n, double factor);

// Area average over [jK, (j+1)K).
LineWeights area_weights(int64_t n_in, double factor);
// Interpolation at (i + 0.5)/K - 0.5 for i in [0, n_out).
LineWeights interp_weights(int64_t n_in, double factor, Interp interp, int64_t n_out);
// A symmetric kernel k(t) of support [-radius, radius] sampled at the K-grid centres
// (j + 0.5)K - 0.5, weights renormalised to sum 1.
LineWeights kernel_weights(int64_t n_in, double factor, const std::function<double(double)>& kernel,
                           double radius);
// The blur-and-subsample matrix of a degradation model (no noise).
LineWeights degrade_weights(int64_t n_in, const DegradeParams& p, double step_um);

// Interpolation kernel value at offset t, and its support radius.
double interp_kernel(Interp m, double t);
double interp_radius(Interp m);

// src is [outer][w.n_in][inner], dst is [outer][w.n_out][inner], both contiguous.
template <typename T>
void apply_weights(const T* src, int64_t outer, int64_t inner, const LineWeights& w, float* dst);

// A volume axis seen as [outer][n][inner].
struct AxisLayout {
  int64_t outer, n, inner;
};
AxisLayout layout(const Shape3& s, int axis);  // throws InputError for a bad axis
double axis_step(const VoxelSize& v, int axis);

// Applies a weight matrix along `axis`: float32 output with v's metadata, the axis
// length replaced by w.n_out and the step multiplied by `step_mul`.
Volume apply_along_axis(const Volume& v, int axis, const LineWeights& w, double step_mul);

// In place: turns samples into cubic B-spline coefficients along the middle axis of
// [outer][n][inner] (half-sample symmetric boundary, as interp_weights' BSpline3 taps).
// Needed before applying BSpline3 weights.
void bspline3_prefilter(float* data, int64_t outer, int64_t n, int64_t inner);

// Adds seeded Poisson and/or Gaussian noise in place to `lines` x `line_len` floats
// (the noise of each line depends only on seed, stream and line index).
void add_noise(float* data, int64_t lines, int64_t line_len, const DegradeParams& p, uint64_t stream = 0);

}  // namespace isoprompt::detail
