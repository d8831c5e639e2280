#include "comm/mpi_util.h"

#include <unistd.h>

#include <cstdlib>

#include "common/error.h"

namespace shardserve::comm {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text, length);
}

void check_mpi(int code, const char* call) {
  if (code != MPI_SUCCESS) fail("{} failed: {} (MPI error {})", call, mpi_error_string(code), code);
}

MpiEnvironment::MpiEnvironment(int* argc, char*** argv) {
  int initialized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  if (!initialized) {
    int provided = 0;
    check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    finalize_ = true;
    require(provided >= MPI_THREAD_FUNNELED,
            "MPI_Init_thread: the MPI library provides thread level {} but MPI_THREAD_FUNNELED ({}) "
            "is needed",
            provided, static_cast<int>(MPI_THREAD_FUNNELED));
  }
  check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_), "MPI_Comm_rank(MPI_COMM_WORLD)");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "MPI_Comm_size(MPI_COMM_WORLD)");
  MPI_Comm local = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank_, MPI_INFO_NULL,
                                &local),
            "MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED)");
  check_mpi(MPI_Comm_size(local, &local_size_), "MPI_Comm_size(node-local communicator)");
  check_mpi(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank(node-local communicator)");
  check_mpi(MPI_Comm_free(&local), "MPI_Comm_free(node-local communicator)");
}

MpiEnvironment::~MpiEnvironment() {
  if (finalize_) MPI_Finalize();
}

std::string MpiEnvironment::host() const {
  char name[MPI_MAX_PROCESSOR_NAME];
  int length = 0;
  if (MPI_Get_processor_name(name, &length) != MPI_SUCCESS) return "?";
  return std::string(name, length);
}

void MpiEnvironment::abort_job(int exit_code) {
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this is for a broken MPI only
}

}  // namespace shardserve::comm
