#include "isoprompt/ranks.h"

#include <cstdio>
#include <cstdlib>

#include "isoprompt/log.h"

#ifdef ISOPROMPT_MPI
// The C API only: the deprecated C++ bindings would need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace isoprompt {

namespace {
int g_rank = 0, g_size = 1;
bool g_mpi = false;

// Set by mpirun / srun / hydra in every rank's environment.
bool started_by_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace

Ranks::Ranks(int* argc, char*** argv) {
#ifdef ISOPROMPT_MPI
  if (!started_by_launcher()) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  if (g_rank != 0) set_log_level(LogLevel::Warn);
#else
  (void)argc;
  (void)argv;
  if (started_by_launcher() && std::getenv("OMPI_COMM_WORLD_RANK") &&
      std::atoi(std::getenv("OMPI_COMM_WORLD_RANK")) == 0)
    log_warn("started by mpirun, but this isoprompt was built without MPI: every rank runs the whole job");
#endif
}

Ranks::~Ranks() {
#ifdef ISOPROMPT_MPI
  if (g_mpi) MPI_Finalize();
#endif
  g_mpi = false;
  g_rank = 0;
  g_size = 1;
}

int Ranks::rank() {
  return g_rank;
}

int Ranks::size() {
  return g_size;
}

bool Ranks::built_with_mpi() {
#ifdef ISOPROMPT_MPI
  return true;
#else
  return false;
#endif
}

void Ranks::barrier() {
#ifdef ISOPROMPT_MPI
  if (g_mpi) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

namespace {

#ifdef ISOPROMPT_MPI
double all_reduce(double v, MPI_Op op) {
  if (!g_mpi) return v;
  double out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, op, MPI_COMM_WORLD);
  return out;
}
#endif

}  // namespace

double Ranks::sum(double v) {
#ifdef ISOPROMPT_MPI
  return all_reduce(v, MPI_SUM);
#else
  return v;
#endif
}

double Ranks::max(double v) {
#ifdef ISOPROMPT_MPI
  return all_reduce(v, MPI_MAX);
#else
  return v;
#endif
}

void Ranks::abort(int exit_code, const char* message) {
#ifdef ISOPROMPT_MPI
  if (g_mpi && g_size > 1) {
    std::fprintf(stderr, "isoprompt: rank %d of %d: %s\n", g_rank, g_size, message);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
#endif
  (void)exit_code;
  (void)message;
}

}  // namespace isoprompt
