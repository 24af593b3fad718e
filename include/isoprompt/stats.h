// Whole-volume intensity statistics. Percentiles are exact (numpy's default
// 'linear' definition) and computed from histograms, never by sorting a copy of the
// volume, so they stream over data of any size. NaN/Inf voxels are excluded and counted.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "isoprompt/volume.h"

namespace isoprompt {

struct IntensityStats {
  double min = 0, max = 0, mean = 0, std = 0;  // over finite voxels
  int64_t finite_count = 0, nan_count = 0, inf_count = 0;
};

IntensityStats intensity_stats(const Volume& v);

// Percentiles in [0, 100] of the finite voxels, numpy.percentile(method='linear').
std::vector<double> percentiles(const Volume& v, const std::vector<double>& pcts);

// Calls its argument once for every slab of a volume, in any order, so that every voxel is
// seen once; percentiles_of_slabs calls it once (uint8/uint16) or three times (float32).
using SlabVisitor = std::function<void(const std::function<void(const Volume&)>&)>;
// The same values as percentiles() of the whole volume, for a volume seen slab by slab.
std::vector<double> percentiles_of_slabs(DType dtype, const SlabVisitor& visit,
                                         const std::vector<double>& pcts);

// Where the NaN/Inf voxels of a float32 volume are.
struct NonFiniteReport {
  int64_t nan_count = 0, inf_count = 0;
  int64_t first_z = -1, first_y = -1, first_x = -1;  // first in (z, y, x) order; -1 if none
  int64_t count() const { return nan_count + inf_count; }
};
NonFiniteReport find_non_finite(const Volume& v);

// Replaces every NaN/Inf voxel of a float32 volume by the median of the finite voxels in
// its 3x3x3 neighbourhood (of the original values, so replacements do not spread), or by
// the median of all finite voxels when it has none. Returns what was replaced. Throws
// InputError when the volume has no finite voxel at all.
NonFiniteReport replace_non_finite(Volume& v);

}  // namespace isoprompt
