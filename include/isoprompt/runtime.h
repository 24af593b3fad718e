// Process-wide runtime settings: threads, Ctrl-C, BLAS sanity.
#pragma once

#include <string>

namespace isoprompt {

// Bytes in a MiB and a GiB: memory budgets (--max-memory, in GB) and the sizes logs print.
inline constexpr double kMiB = 1024.0 * 1024.0;
inline constexpr double kGiB = 1024.0 * kMiB;

// Sets OpenMP and LibTorch intra-op threads. n <= 0 means all cores.
// LibTorch defaults to 1 thread on some VMs, so the CLI always calls this.
void set_threads(int n);
int hardware_threads();

// Keeps large tensor buffers in the heap instead of mapping and unmapping them on every
// allocation (glibc's default for blocks over 32 MB): with the ~30 MB attention buffers of
// a training step, that cut pretraining's system time about 6x. glibc only; a setting the
// user made with MALLOC_MMAP_THRESHOLD_ in the environment wins. Call once at start-up.
void configure_allocator();
// A job in bounded memory (the streamed restore) gives freed memory back to the system
// beyond `bytes`, instead of keeping up to 1 GiB for reuse as configure_allocator does.
void limit_retained_heap(double bytes);

// Ctrl-C: the CLI installs a handler that sets a flag; long loops call
// check_interrupted() at safe points, which throws Cancelled.
// install_interrupt_handler() also makes SIGTERM and SIGHUP remove unfinished temporary
// outputs before the process dies (remove_pending_temporaries).
void install_interrupt_handler();
bool interrupted();
void request_interrupt();  // for tests
void clear_interrupt();
void check_interrupted();

// Path of the BLAS library mapped into this process, or "" if none.
// Returns a warning text if it is the slow netlib reference BLAS.
std::string blas_warning();

}  // namespace isoprompt
