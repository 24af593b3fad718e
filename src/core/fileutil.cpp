#include "isoprompt/fileutil.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "isoprompt/error.h"
#include "isoprompt/log.h"

namespace fs = std::filesystem;

namespace isoprompt {

namespace {

// A process killed between writing its temporary file and the rename (SIGKILL, power loss)
// leaves .NAME.tmp-PID behind. The next writer of NAME removes those whose process is gone.
void remove_stale_temporaries(const fs::path& final_path) {
  const std::string prefix = "." + final_path.filename().string() + ".tmp-";
  const fs::path dir = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    std::error_code rm;
    // A temporary directory (an OME-Zarr store being built) goes with its contents.
    if (it->is_directory(rm) && !it->is_symlink(rm) ? fs::remove_all(it->path(), rm) > 0 : fs::remove(it->path(), rm))
      log_warn("removed {}, a temporary file left by process {} that no longer runs", it->path().string(), pid);
  }
}

// The temporary files being written now, for the SIGTERM handler (which may only read
// these slots and call unlink).
constexpr int kPendingSlots = 32;
std::atomic<const char*> g_pending[kPendingSlots];

void register_pending(const char* path) {
  for (auto& slot : g_pending) {
    const char* empty = nullptr;
    if (slot.compare_exchange_strong(empty, path)) return;
  }  // all slots taken: the file is still removed by the destructor or the next run
}

void unregister_pending(const char* path) {
  for (auto& slot : g_pending) {
    const char* p = path;
    if (slot.compare_exchange_strong(p, nullptr)) return;
  }
}

}  // namespace

void remove_pending_temporaries() {
  for (auto& slot : g_pending)
    if (const char* p = slot.load()) ::unlink(p);
}

AtomicOutput::AtomicOutput(std::string final_path, Kind kind) : final_(std::move(final_path)), kind_(kind) {
  while (kind_ == Directory && final_.size() > 1 && final_.back() == '/') final_.pop_back();
  const fs::path p(final_);
  remove_stale_temporaries(p);
  // Hidden sibling in the same directory, so rename() is atomic (same filesystem).
  temp_ = (p.parent_path() / fmt::format(".{}.tmp-{}", p.filename().string(), ::getpid())).string();
  register_pending(temp_.c_str());
}

AtomicOutput::AtomicOutput(std::string final_path, Kind kind, std::string kept_temp)
    : final_(std::move(final_path)), temp_(std::move(kept_temp)), kind_(kind), keep_(true) {
  while (kind_ == Directory && final_.size() > 1 && final_.back() == '/') final_.pop_back();
}

AtomicOutput::~AtomicOutput() {
  if (keep_) return;
  unregister_pending(temp_.c_str());
  if (committed_) return;
  if (kind_ == Directory) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  } else {
    std::remove(temp_.c_str());
  }
}

void AtomicOutput::commit() {
  std::error_code ec;
  if (kind_ == Directory && fs::exists(fs::symlink_status(final_, ec))) {
    // rename() cannot replace a non-empty directory: swap the two in one step, then
    // remove the old one (now at the temporary path). Filesystems without
    // RENAME_EXCHANGE get two renames, with the old store put back if the second fails.
    if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS)
        throw_error("cannot move {} into place as {}: {}", temp_, final_, std::strerror(errno));
      const std::string old = temp_ + ".old";
      if (std::rename(final_.c_str(), old.c_str()) != 0)
        throw_error("cannot move {} aside to replace it: {}", final_, std::strerror(errno));
      if (std::rename(temp_.c_str(), final_.c_str()) != 0) {
        const int err = errno;
        std::rename(old.c_str(), final_.c_str());
        throw_error("cannot move {} into place as {}: {}", temp_, final_, std::strerror(err));
      }
      std::rename(old.c_str(), temp_.c_str());
    }
    committed_ = true;
    unregister_pending(temp_.c_str());
    if (fs::remove_all(temp_, ec) == static_cast<std::uintmax_t>(-1) || ec)
      log_warn("could not remove the replaced {} (now {}): {}", final_, temp_, ec.message());
    return;
  }
  if (std::rename(temp_.c_str(), final_.c_str()) != 0)
    throw_error("cannot move {} into place as {}: {}", temp_, final_, std::strerror(errno));
  committed_ = true;
  unregister_pending(temp_.c_str());
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

VolumePath parse_volume_path(const std::string& path) {
  VolumePath vp;
  vp.file = path;
  std::string low = path;
  std::transform(low.begin(), low.end(), low.begin(), [](unsigned char c) { return std::tolower(c); });
  auto ends_with = [&](const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() > n && s.compare(s.size() - n, n, suffix) == 0;
  };
  // HDF5 first: its dataset part may contain slashes and dots ("f.h5:/a/b.c").
  for (const char* ext : {".h5:", ".hdf5:"}) {
    const auto at = low.find(ext);
    if (at == std::string::npos) continue;
    const size_t colon = at + std::strlen(ext) - 1;
    vp.format = VolumeFormat::Hdf5;
    vp.file = path.substr(0, colon);
    vp.inner = path.substr(colon + 1);
    return vp;
  }
  if (ends_with(low, ".h5") || ends_with(low, ".hdf5")) {
    vp.format = VolumeFormat::Hdf5;
    return vp;
  }
  std::string trimmed = low;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  if (ends_with(trimmed, ".zarr")) {
    vp.format = VolumeFormat::Zarr;
    vp.file = path.substr(0, trimmed.size());
    return vp;
  }
  // A file name with its own extension keeps it (a TIFF inside a folder named x.zarr).
  const std::string last = fs::path(trimmed).filename().string();
  if (last.find('.') != std::string::npos) return vp;
  // store.zarr/0: the first path component ending in .zarr is the store.
  size_t start = 0;
  while (start < trimmed.size()) {
    const size_t end = std::min(trimmed.find('/', start), trimmed.size());
    if (end > start && ends_with(trimmed.substr(0, end), ".zarr") && end < trimmed.size()) {
      vp.format = VolumeFormat::Zarr;
      vp.file = path.substr(0, end);
      vp.inner = path.substr(end + 1, trimmed.size() - end - 1);
      return vp;
    }
    start = end + 1;
  }
  return vp;
}

namespace {

bool looks_like_zarr_store(const fs::path& p) {
  std::error_code ec;
  return fs::is_empty(p, ec) || fs::exists(p / ".zgroup", ec) || fs::exists(p / ".zarray", ec) ||
         fs::exists(p / ".zattrs", ec);
}

}  // namespace

void check_output_path(const std::string& out_path, const std::vector<std::string>& inputs) {
  if (out_path.empty()) throw_input("output path is empty");
  const VolumePath vp = parse_volume_path(out_path);
  if (vp.format == VolumeFormat::Zarr && !vp.inner.empty())
    throw_input("cannot write into an array of a Zarr store ({}): write the whole store, {}", out_path, vp.file);
  std::string out = vp.file;
  while (vp.format == VolumeFormat::Zarr && out.size() > 1 && out.back() == '/') out.pop_back();
  const fs::path p(out);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw_input("output directory does not exist: {} (for {})", dir.string(), out);
  if (fs::is_directory(p, ec) && vp.format != VolumeFormat::Zarr) throw_input("output path is a directory: {}", out);
  if (fs::is_directory(p, ec) && !looks_like_zarr_store(p))
    throw_input("output path {} is a directory that is not a Zarr store (it would be replaced)", out);
  if (vp.format == VolumeFormat::Zarr && fs::exists(p, ec) && !fs::is_directory(p, ec))
    throw_input("output path {} exists and is not a Zarr store (a directory)", out);
  if (::access(dir.c_str(), W_OK) != 0) throw_input("output directory is not writable: {}", dir.string());
  for (const auto& in_path : inputs) {
    if (in_path.empty()) continue;
    const fs::path in(parse_volume_path(in_path).file);
    if (fs::exists(p, ec) && fs::equivalent(p, in, ec))
      throw_input("output path is the same file as the input: {}", out_path);
    if (fs::weakly_canonical(p, ec) == fs::weakly_canonical(in, ec))
      throw_input("output path is the same file as the input: {}", out_path);
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
