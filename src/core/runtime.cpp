#include "isoprompt/runtime.h"

#include <algorithm>
#include <ATen/Parallel.h>
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <csignal>
#include <fstream>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"

namespace isoprompt {

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) {
  // A second Ctrl-C kills the process the usual way.
  if (g_interrupted.exchange(true)) {
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
}
// SIGTERM / SIGHUP: no half-written temporary file is left behind; then the usual death.
extern "C" void on_terminate(int sig) {
  remove_pending_temporaries();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}
}  // namespace

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

void set_threads(int n) {
  if (n <= 0) n = hardware_threads();
  omp_set_num_threads(n);
  at::set_num_threads(n);
}

void configure_allocator() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr) return;
  mallopt(M_MMAP_THRESHOLD, 512 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 256 << 20);
#endif
}

void limit_retained_heap(double bytes) {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr) return;
  const int b = static_cast<int>(std::clamp(bytes, double(1 << 20), double(1 << 30)));
  mallopt(M_MMAP_THRESHOLD, std::min(b, 32 << 20));
  mallopt(M_TRIM_THRESHOLD, b);
  mallopt(M_TOP_PAD, std::min(b, 16 << 20));
  malloc_trim(0);
#else
  (void)bytes;
#endif
}

void install_interrupt_handler() {
  std::signal(SIGINT, on_sigint);
  std::signal(SIGTERM, on_terminate);
  std::signal(SIGHUP, on_terminate);
}
bool interrupted() { return g_interrupted.load(std::memory_order_relaxed); }
void request_interrupt() { g_interrupted = true; }
void clear_interrupt() { g_interrupted = false; }
void check_interrupted() {
  if (interrupted()) throw Cancelled();
}

std::string blas_warning() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libblas.so") == std::string::npos && line.find("libopenblas") == std::string::npos)
      continue;
    if (line.find("openblas") != std::string::npos) return "";
    if (line.find("/blas/libblas.so") != std::string::npos)
      return "the netlib reference BLAS is loaded (8-40x slower); run `make setup` or "
             "`update-alternatives --set libblas.so.3-x86_64-linux-gnu "
             "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3`";
  }
  return "";
}

}  // namespace isoprompt
