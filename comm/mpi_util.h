#pragma once
// MPI plumbing shared by the collectives, the control channel and the two executables:
// checked calls (every failure becomes a shardserve::Error naming the call and MPI's own
// text), an RAII environment (MPI_Init_thread / MPI_Finalize) and the process's place in the
// job (world rank and size, ranks on this host).
#include <mpi.h>

#include <string>

namespace shardserve::comm {

// Throws Error("<call> failed: <MPI_Error_string(code)>") when code != MPI_SUCCESS. Calls made
// on a communicator whose error handler is MPI_ERRORS_RETURN report through this; with the
// default MPI_ERRORS_ARE_FATAL MPI aborts the job itself.
void check_mpi(int code, const char* call);

// MPI's text for an error code.
std::string mpi_error_string(int code);

// Initialises MPI (thread level MPI_THREAD_FUNNELED: only the thread that constructed it calls
// MPI) and finalises it on destruction. MPI_COMM_WORLD gets MPI_ERRORS_RETURN so failures become
// Errors with context; a dead peer still ends the whole job through mpirun.
class MpiEnvironment {
 public:
  MpiEnvironment(int* argc, char*** argv);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // Ranks of the job that share this host (MPI_COMM_TYPE_SHARED); collective over the world.
  int local_size() const { return local_size_; }
  // This rank's index among the ranks on its host (ordered by world rank).
  int local_rank() const { return local_rank_; }
  std::string host() const;

  // Ends every process of the job (MPI_Abort on MPI_COMM_WORLD). For failures after which a
  // clean shutdown is impossible (a rank died or stopped answering, a worker failed mid-step).
  [[noreturn]] static void abort_job(int exit_code);

 private:
  int world_rank_ = 0;
  int world_size_ = 1;
  int local_size_ = 1;
  int local_rank_ = 0;
  bool finalize_ = false;
};

}  // namespace shardserve::comm
