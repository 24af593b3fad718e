// The ranks of an MPI job: `mpirun -np N isoprompt restore IN -o OUT …` splits the streamed
// restore's slabs over N processes (docs/streaming.md#mpi). The same binary runs alone
// without mpirun: then there is one rank and every call here is free.
//
//   int main(int argc, char** argv) {
//     isoprompt::Ranks mpi(&argc, &argv);   // MPI_Init only when started by mpirun
//     ...
//   }
#pragma once

namespace isoprompt {

class Ranks {
 public:
  // Initialises MPI when the process was started by an MPI launcher (its environment says
  // so) and this build has MPI; otherwise a job of one rank. Ranks other than 0 log only
  // warnings and errors, so progress and results come from rank 0.
  Ranks(int* argc, char*** argv);
  ~Ranks();  // MPI_Finalize
  Ranks(const Ranks&) = delete;
  Ranks& operator=(const Ranks&) = delete;

  static int rank();   // 0 without MPI
  static int size();   // 1 without MPI
  static bool built_with_mpi();
  static void barrier();
  static double sum(double v);  // over all ranks
  static double max(double v);
  // Ends the whole job from one failed rank (MPI_Abort) after printing its message;
  // without MPI it returns and the caller exits as usual.
  static void abort(int exit_code, const char* message);
};

}  // namespace isoprompt
