// The plane-range form of replace_non_finite (stats.h), for the plane-wise reader
// (io/planes.cpp), which holds a few planes of a volume, not all of it.
#pragma once

#include <cstdint>

#include "isoprompt/volume.h"

namespace isoprompt::core {

// Replaces the NaN/Inf voxels of planes [z_begin, z_end) of the float32 volume `v` as
// replace_non_finite does: by the median of the finite voxels of their 3x3x3 neighbourhood
// in `v` (original values; the planes around the range serve as neighbours only). A voxel
// without a finite neighbour gets the median of all finite voxels of `v`, which is that of
// the whole volume only when `v` is the whole volume: with `whole` false this returns
// false instead, changing nothing, and sets *isolated to that voxel's index in `v`.
// Throws InputError when `whole` and `v` has no finite voxel at all.
bool replace_non_finite_planes(Volume& v, int64_t z_begin, int64_t z_end, bool whole,
                               int64_t* isolated = nullptr);

}  // namespace isoprompt::core
