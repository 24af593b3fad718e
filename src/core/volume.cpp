#include "isoprompt/volume.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace isoprompt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::U8: return 1;
    case DType::U16: return 2;
    case DType::F32: return 4;
  }
  return 4;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::U8: return "uint8";
    case DType::U16: return "uint16";
    case DType::F32: return "float32";
  }
  return "?";
}

DType parse_dtype(const std::string& s) {
  if (s == "uint8" || s == "u8") return DType::U8;
  if (s == "uint16" || s == "u16") return DType::U16;
  if (s == "float32" || s == "f32" || s == "float") return DType::F32;
  throw_input("unknown dtype '{}' (expected uint8, uint16 or float32)", s);
}

const char* plane_name(Plane p) {
  switch (p) {
    case Plane::XY: return "xy";
    case Plane::XZ: return "xz";
    case Plane::YZ: return "yz";
  }
  return "?";
}

Plane parse_plane(const std::string& s) {
  if (s == "xy") return Plane::XY;
  if (s == "xz") return Plane::XZ;
  if (s == "yz") return Plane::YZ;
  throw_input("unknown plane '{}' (expected xy, xz or yz)", s);
}

std::string to_string(const Shape3& s) { return fmt::format("{}x{}x{}", s.z, s.y, s.x); }

Volume::Volume(Shape3 shape, DType dtype, VoxelSize voxel, std::string unit)
    : shape_(shape), dtype_(dtype), voxel_(voxel), unit_(std::move(unit)) {
  if (shape.z < 0 || shape.y < 0 || shape.x < 0)
    throw_error("negative volume shape {}", to_string(shape));
  const size_t bytes = size_bytes();
  // Aligned for SIMD; zero-filled so a fresh volume is well defined.
  void* p = bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr;
  if (bytes && !p) throw_error("out of memory allocating {} bytes for a {} {} volume", bytes, to_string(shape), dtype_name(dtype));
  if (p) std::memset(p, 0, bytes);
  storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

void Volume::check_dtype(DType want) const {
  if (want != dtype_)
    throw_error("volume holds {} but was accessed as {}", dtype_name(dtype_), dtype_name(want));
}

Volume Volume::clone() const {
  Volume out(shape_, dtype_, voxel_, unit_);
  if (size_bytes()) std::memcpy(out.raw(), raw(), size_bytes());
  return out;
}

Volume Volume::like(DType t) const { return Volume(shape_, t, voxel_, unit_); }

namespace {
template <typename D>
D saturate(float v) {
  if constexpr (std::is_same_v<D, float>) {
    return v;
  } else {
    if (!(v == v)) return 0;  // NaN
    const float lo = float(std::numeric_limits<D>::min()), hi = float(std::numeric_limits<D>::max());
    return static_cast<D>(std::nearbyint(v < lo ? lo : v > hi ? hi : v));
  }
}
}  // namespace

Volume Volume::astype(DType t) const {
  if (t == dtype_) return clone();
  Volume out = like(t);
  const int64_t n = numel();
  visit_dtype(dtype_, [&](auto* src_tag) {
    using S = std::remove_pointer_t<decltype(src_tag)>;
    const S* src = static_cast<const S*>(raw());
    visit_dtype(t, [&](auto* dst_tag) {
      using D = std::remove_pointer_t<decltype(dst_tag)>;
      D* dst = static_cast<D*>(out.raw());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) dst[i] = saturate<D>(static_cast<float>(src[i]));
    });
  });
  return out;
}

float voxel_as_float(const Volume& v, int64_t i) {
  switch (v.dtype()) {
    case DType::U8: return static_cast<const uint8_t*>(v.raw())[i];
    case DType::U16: return static_cast<const uint16_t*>(v.raw())[i];
    case DType::F32: return static_cast<const float*>(v.raw())[i];
  }
  return 0.f;
}

}  // namespace isoprompt
