// Conversion between Volume and torch tensors, keeping the metadata alongside.
#pragma once

#include <ATen/ATen.h>

#include "isoprompt/volume.h"

namespace isoprompt {

// A tensor with the physical metadata of the volume it came from.
struct VolumeTensor {
  at::Tensor data;              // (z, y, x)
  VoxelSize voxel;
  std::string unit = "micron";
  DType source_dtype = DType::F32;
};

// uint8 and float32 volumes are shared without a copy (the tensor keeps the buffer
// alive). uint16 becomes int32 (LibTorch 1.13 has no uint16), which copies.
VolumeTensor to_tensor(const Volume& v);
// Float32 view of any volume (copies unless it is already float32).
at::Tensor to_float_tensor(const Volume& v);
// Builds a Volume from a 3D tensor (any device/dtype); values convert to `dtype`
// with rounding and saturation for integer targets.
Volume to_volume(const VolumeTensor& t, DType dtype);
Volume to_volume(const VolumeTensor& t);  // keeps t.source_dtype

}  // namespace isoprompt
