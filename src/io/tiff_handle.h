// RAII for libtiff handles, with per-handle error capture.
//
// libtiff reports problems through callbacks that by default print to stderr. A
// TiffFile installs its own handlers (TIFFOpenExt, libtiff >= 4.5) that store the
// message in the object instead, so the caller can put it into one InputError line.
// The handlers are per handle, so concurrent TiffFiles in different threads are safe.
#pragma once

#include <tiffio.h>

#include <memory>
#include <string>

namespace isoprompt::io {

struct TiffCloser {
  void operator()(TIFF* t) const {
    if (t) TIFFClose(t);
  }
};
using TiffPtr = std::unique_ptr<TIFF, TiffCloser>;

// Messages libtiff produced for one handle.
struct TiffMessages {
  std::string first_error;  // the first error is usually the root cause
  std::string last_error;
  std::string warnings;     // joined with "; "
  int n_errors = 0;
  void clear() { *this = TiffMessages{}; }
};

class TiffFile {
 public:
  TiffFile() = default;
  // mode as for TIFFOpen ("r", "w", "w8"). Returns an empty TiffFile on failure; the
  // reason is then in messages().
  static TiffFile open(const std::string& path, const char* mode);

  TiffFile(TiffFile&&) noexcept = default;
  // Closes the handle it replaces (before dropping that handle's message sink).
  TiffFile& operator=(TiffFile&& o) noexcept {
    if (this != &o) {
      tif_.reset();
      msgs_ = std::move(o.msgs_);
      tif_ = std::move(o.tif_);
    }
    return *this;
  }
  ~TiffFile() { tif_.reset(); }

  TIFF* get() const { return tif_.get(); }
  explicit operator bool() const { return tif_ != nullptr; }
  void close() { tif_.reset(); }
  // Closes the handle and reports whether libtiff flushed it without error (writing).
  bool close_checked();

  TiffMessages& messages() { return *msgs_; }
  // The most useful error text for a message: libtiff's first error, or `fallback`.
  std::string error_text(const std::string& fallback) const;

 private:
  // Declared before tif_ so it outlives the handle (TIFFClose may still report errors).
  std::unique_ptr<TiffMessages> msgs_ = std::make_unique<TiffMessages>();
  TiffPtr tif_;
};

}  // namespace isoprompt::io
