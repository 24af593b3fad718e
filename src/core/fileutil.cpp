#include "isoprompt/fileutil.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "isoprompt/error.h"

namespace fs = std::filesystem;

namespace isoprompt {

AtomicOutput::AtomicOutput(std::string final_path) : final_(std::move(final_path)) {
  const fs::path p(final_);
  // Hidden sibling in the same directory, so rename() is atomic (same filesystem).
  temp_ = (p.parent_path() / fmt::format(".{}.tmp-{}", p.filename().string(), ::getpid())).string();
}

AtomicOutput::~AtomicOutput() {
  if (!committed_) std::remove(temp_.c_str());
}

void AtomicOutput::commit() {
  if (std::rename(temp_.c_str(), final_.c_str()) != 0)
    throw_error("cannot move {} into place as {}: {}", temp_, final_, std::strerror(errno));
  committed_ = true;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void check_input_file(const std::string& path, const std::string& what) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw_input("{} not found: {}", what, path);
  if (!S_ISREG(st.st_mode)) throw_input("{} is not a regular file: {}", what, path);
}

void check_output_path(const std::string& out, const std::vector<std::string>& inputs) {
  if (out.empty()) throw_input("output path is empty");
  const fs::path p(out);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw_input("output directory does not exist: {} (for {})", dir.string(), out);
  if (fs::is_directory(p, ec)) throw_input("output path is a directory: {}", out);
  if (::access(dir.c_str(), W_OK) != 0) throw_input("output directory is not writable: {}", dir.string());
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    if (fs::exists(p, ec) && fs::equivalent(p, fs::path(in), ec))
      throw_input("output path is the same file as the input: {}", out);
    if (fs::weakly_canonical(p, ec) == fs::weakly_canonical(fs::path(in), ec))
      throw_input("output path is the same file as the input: {}", out);
  }
}

std::string lowercase_extension(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* ext : {".ome.tiff", ".ome.tif"})
    if (name.size() > std::strlen(ext) && name.compare(name.size() - std::strlen(ext), std::string::npos, ext) == 0)
      return ext;
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? "" : name.substr(dot);
}

}  // namespace isoprompt
