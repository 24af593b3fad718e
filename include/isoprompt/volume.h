// Volume: a 3D image (z, y, x) with its dtype and physical voxel size.
//
// Ownership: copying a Volume is shallow (the voxel buffer is reference counted);
// clone() makes a deep copy. Indexing is 64-bit throughout: volumes over 2^31 voxels
// are normal in microscopy. Voxels are stored contiguously, x fastest.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "isoprompt/error.h"

namespace isoprompt {

enum class DType : uint8_t { U8, U16, F32 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);           // "uint8", "uint16", "float32"
DType parse_dtype(const std::string& s);   // accepts the names above; throws InputError

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <>
constexpr DType dtype_of<uint16_t>() { return DType::U16; }
template <>
constexpr DType dtype_of<float>() { return DType::F32; }

// Physical size of one voxel, in `unit` (micrometres unless the file says otherwise).
struct VoxelSize {
  double z = 1.0;
  double y = 1.0;
  double x = 1.0;
  // z-step over lateral pixel size: how many times coarser z is sampled than x.
  double anisotropy() const { return z / x; }
  bool operator==(const VoxelSize& o) const { return z == o.z && y == o.y && x == o.x; }
  bool operator!=(const VoxelSize& o) const { return !(*this == o); }
};

struct Shape3 {
  int64_t z = 0, y = 0, x = 0;
  int64_t numel() const { return z * y * x; }
  bool operator==(const Shape3& o) const { return z == o.z && y == o.y && x == o.x; }
  bool operator!=(const Shape3& o) const { return !(*this == o); }
};
std::string to_string(const Shape3& s);  // "ZxYxX"

// A strided 2D window onto a volume's voxels: no copy, valid while the Volume lives.
// rows/cols name the plane's own axes: XY (rows y, cols x), XZ (rows z, cols x),
// YZ (rows z, cols y). z always runs along rows, so the degraded axis is axis 0.
template <typename T>
struct PlaneView {
  T* data = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t row_stride = 0, col_stride = 0;  // in elements
  T& operator()(int64_t r, int64_t c) const { return data[r * row_stride + c * col_stride]; }
};

enum class Plane : uint8_t { XY, XZ, YZ };
const char* plane_name(Plane p);
Plane parse_plane(const std::string& s);  // "xy", "xz", "yz"

class Volume {
 public:
  Volume() = default;
  // Allocates a zero-filled volume.
  Volume(Shape3 shape, DType dtype, VoxelSize voxel = {}, std::string unit = "micron");

  const Shape3& shape() const { return shape_; }
  int64_t nz() const { return shape_.z; }
  int64_t ny() const { return shape_.y; }
  int64_t nx() const { return shape_.x; }
  int64_t numel() const { return shape_.numel(); }
  size_t size_bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool empty() const { return numel() == 0; }

  DType dtype() const { return dtype_; }
  const VoxelSize& voxel_size() const { return voxel_; }
  void set_voxel_size(const VoxelSize& v) { voxel_ = v; }
  const std::string& unit() const { return unit_; }
  void set_unit(std::string u) { unit_ = std::move(u); }

  void* raw() { return storage_.get(); }
  const void* raw() const { return storage_.get(); }
  // Shared owner of the buffer, so views (e.g. torch tensors) can keep it alive.
  const std::shared_ptr<void>& storage() const { return storage_; }

  template <typename T>
  T* data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(storage_.get());
  }
  template <typename T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(storage_.get());
  }
  template <typename T>
  T& at(int64_t z, int64_t y, int64_t x) {
    return data<T>()[(z * shape_.y + y) * shape_.x + x];
  }
  template <typename T>
  const T& at(int64_t z, int64_t y, int64_t x) const {
    return data<T>()[(z * shape_.y + y) * shape_.x + x];
  }

  // Plane views; `index` is the position along the plane's normal axis.
  template <typename T>
  PlaneView<T> plane(Plane p, int64_t index) const {
    T* base = const_cast<T*>(data<T>());
    const int64_t sy = shape_.x, sz = shape_.y * shape_.x;
    switch (p) {
      case Plane::XY: return {base + index * sz, shape_.y, shape_.x, sy, 1};
      case Plane::XZ: return {base + index * sy, shape_.z, shape_.x, sz, 1};
      case Plane::YZ: return {base + index, shape_.z, shape_.y, sz, sy};
    }
    return {};
  }
  template <typename T>
  PlaneView<T> xy(int64_t z) const { return plane<T>(Plane::XY, z); }
  template <typename T>
  PlaneView<T> xz(int64_t y) const { return plane<T>(Plane::XZ, y); }
  template <typename T>
  PlaneView<T> yz(int64_t x) const { return plane<T>(Plane::YZ, x); }
  // Number of planes of orientation p.
  int64_t plane_count(Plane p) const {
    return p == Plane::XY ? shape_.z : p == Plane::XZ ? shape_.y : shape_.x;
  }

  Volume clone() const;
  // Converts to another dtype. Integer targets round to nearest and saturate.
  Volume astype(DType t) const;
  // Copy of the same shape/metadata with another dtype, zero-filled.
  Volume like(DType t) const;

 private:
  void check_dtype(DType want) const;

  std::shared_ptr<void> storage_;
  Shape3 shape_{};
  DType dtype_ = DType::F32;
  VoxelSize voxel_{};
  std::string unit_ = "micron";
};

// Reads voxel i of any dtype as float (slow path helpers for generic code).
float voxel_as_float(const Volume& v, int64_t linear_index);

// Calls f(ptr) with ptr typed as the volume's element type.
template <typename F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::U8: return f(static_cast<uint8_t*>(nullptr));
    case DType::U16: return f(static_cast<uint16_t*>(nullptr));
    case DType::F32: break;
  }
  return f(static_cast<float*>(nullptr));
}

}  // namespace isoprompt
