// Process-wide runtime settings: threads, Ctrl-C, BLAS sanity.
#pragma once

#include <string>

namespace isoprompt {

// Sets OpenMP and LibTorch intra-op threads. n <= 0 means all cores.
// LibTorch defaults to 1 thread on some VMs, so the CLI always calls this.
void set_threads(int n);
int hardware_threads();

// Ctrl-C: the CLI installs a handler that sets a flag; long loops call
// check_interrupted() at safe points, which throws Cancelled.
void install_interrupt_handler();
bool interrupted();
void request_interrupt();  // for tests
void clear_interrupt();
void check_interrupted();

// Path of the BLAS library mapped into this process, or "" if none.
// Returns a warning text if it is the slow netlib reference BLAS.
std::string blas_warning();

}  // namespace isoprompt
