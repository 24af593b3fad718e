// Whole-volume intensity statistics. Percentiles are exact (numpy's default
// 'linear' definition) and computed from histograms, never by sorting a copy of the
// volume, so they stream over data of any size. NaN/Inf voxels are excluded and counted.
#pragma once

#include <cstdint>
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

}  // namespace isoprompt
