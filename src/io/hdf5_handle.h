// RAII for HDF5 identifiers (hid_t), and HDF5 errors turned into one line of text.
//
// The HDF5 library prints its error stack to stderr by default; hdf5_quiet() turns that
// off (once per process) and hdf5_error_text() reads the innermost message instead, for
// an InputError that names the file.
#pragma once

#include <hdf5.h>

#include <string>
#include <utility>

namespace isoprompt::io {

// Owns one identifier and closes it with the matching H5?close.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  ~H5Handle() { reset(); }
  H5Handle(H5Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  // Closes the identifier it replaces.
  H5Handle& operator=(H5Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;

  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  // Gives up ownership (the caller closes it).
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// Stops HDF5 from printing its error stack (idempotent, thread-safe).
void hdf5_quiet();
// The innermost message of the current HDF5 error stack ("" when empty), then clears it.
std::string hdf5_error_text();

}  // namespace isoprompt::io
