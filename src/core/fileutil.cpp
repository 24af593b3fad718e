#include "isoprompt/fileutil.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
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
    if (fs::remove(it->path(), rm))
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

AtomicOutput::AtomicOutput(std::string final_path) : final_(std::move(final_path)) {
  const fs::path p(final_);
  remove_stale_temporaries(p);
  // Hidden sibling in the same directory, so rename() is atomic (same filesystem).
  temp_ = (p.parent_path() / fmt::format(".{}.tmp-{}", p.filename().string(), ::getpid())).string();
  register_pending(temp_.c_str());
}

AtomicOutput::~AtomicOutput() {
  unregister_pending(temp_.c_str());
  if (!committed_) std::remove(temp_.c_str());
}

void AtomicOutput::commit() {
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
