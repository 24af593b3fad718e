#include "io/tiff_handle.h"

#include <cstdarg>
#include <cstdio>

#include "isoprompt/log.h"

namespace isoprompt::io {

namespace {

std::string vformat(const char* module, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string msg = buf;
  if (module && *module) msg = std::string(module) + ": " + msg;
  // One line: libtiff messages occasionally contain newlines.
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  return msg;
}

int on_error(TIFF*, void* user, const char* module, const char* fmt, va_list ap) {
  auto* m = static_cast<TiffMessages*>(user);
  m->last_error = vformat(module, fmt, ap);
  if (m->n_errors++ == 0) m->first_error = m->last_error;
  return 1;  // handled: do not call the global (printing) handler
}

int on_warning(TIFF*, void* user, const char* module, const char* fmt, va_list ap) {
  auto* m = static_cast<TiffMessages*>(user);
  const std::string msg = vformat(module, fmt, ap);
  if (m->warnings.size() < 4096) m->warnings += (m->warnings.empty() ? "" : "; ") + msg;
  return 1;
}

struct OptionsDeleter {
  void operator()(TIFFOpenOptions* o) const { TIFFOpenOptionsFree(o); }
};

}  // namespace

TiffFile TiffFile::open(const std::string& path, const char* mode) {
  TiffFile f;
  std::unique_ptr<TIFFOpenOptions, OptionsDeleter> opts(TIFFOpenOptionsAlloc());
  TIFFOpenOptionsSetErrorHandlerExtR(opts.get(), on_error, f.msgs_.get());
  TIFFOpenOptionsSetWarningHandlerExtR(opts.get(), on_warning, f.msgs_.get());
  f.tif_.reset(TIFFOpenExt(path.c_str(), mode, opts.get()));
  return f;
}

bool TiffFile::close_checked() {
  if (!tif_) return true;
  const int before = msgs_->n_errors;
  TIFF* t = tif_.release();
  const int flushed = TIFFFlush(t);
  TIFFClose(t);
  return flushed == 1 && msgs_->n_errors == before;
}

std::string TiffFile::error_text(const std::string& fallback) const {
  return msgs_->first_error.empty() ? fallback : msgs_->first_error;
}

}  // namespace isoprompt::io
