#include "isoprompt/tensor.h"

#include <cstring>

namespace isoprompt {

VolumeTensor to_tensor(const Volume& v) {
  VolumeTensor out;
  out.voxel = v.voxel_size();
  out.unit = v.unit();
  out.source_dtype = v.dtype();
  const std::vector<int64_t> sizes{v.nz(), v.ny(), v.nx()};
  auto keep = v.storage();  // the tensor's deleter keeps the buffer alive
  auto deleter = [keep](void*) mutable { keep.reset(); };
  switch (v.dtype()) {
    case DType::U8:
      out.data = at::from_blob(const_cast<void*>(v.raw()), sizes, deleter, at::kByte);
      break;
    case DType::F32:
      out.data = at::from_blob(const_cast<void*>(v.raw()), sizes, deleter, at::kFloat);
      break;
    case DType::U16: {
      out.data = at::empty(sizes, at::kInt);
      const uint16_t* src = v.data<uint16_t>();
      int32_t* dst = out.data.data_ptr<int32_t>();
      const int64_t n = v.numel();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
      break;
    }
  }
  return out;
}

at::Tensor to_float_tensor(const Volume& v) {
  if (v.dtype() == DType::F32) return to_tensor(v).data;
  return to_tensor(v.astype(DType::F32)).data;
}

Volume to_volume(const VolumeTensor& t, DType dtype) {
  if (t.data.dim() != 3) throw_error("to_volume: expected a 3D tensor, got {} dims", t.data.dim());
  at::Tensor f = t.data.to(at::kCPU, at::kFloat).contiguous();
  Volume tmp({f.size(0), f.size(1), f.size(2)}, DType::F32, t.voxel, t.unit);
  std::memcpy(tmp.raw(), f.data_ptr<float>(), tmp.size_bytes());
  if (dtype == DType::F32) return tmp;
  return tmp.astype(dtype);
}

Volume to_volume(const VolumeTensor& t) { return to_volume(t, t.source_dtype); }

}  // namespace isoprompt
