#include "comm/mpi_collective.h"

#include <algorithm>
#include <climits>

#include "comm/mpi_util.h"
#include "common/error.h"

namespace shardserve::comm {
namespace {
// MPI counts are int: larger buffers go in chunks of this many elements (all-reduce, broadcast).
constexpr int64_t kMaxChunk = INT_MAX / 2;
}  // namespace

MpiCollective::MpiCollective(MPI_Comm parent, int color, int key) : color_(color) {
  require(color >= 0, "MpiCollective: color {} must be non-negative", color);
  check_mpi(MPI_Comm_split(parent, color, key, &comm_), "MPI_Comm_split");
  check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

void MpiCollective::skip_split(MPI_Comm parent) {
  MPI_Comm none = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(parent, MPI_UNDEFINED, 0, &none), "MPI_Comm_split(MPI_UNDEFINED)");
  if (none != MPI_COMM_NULL) MPI_Comm_free(&none);
}

MpiCollective::~MpiCollective() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::string MpiCollective::describe() const {
  return fmt::format("group {} (rank {} of {})", color_, rank_, size_);
}

void MpiCollective::all_reduce_sum(float* data, int64_t count) {
  require(count >= 0, "MpiCollective::all_reduce_sum on {}: negative count {}", describe(), count);
  for (int64_t done = 0; done < count; done += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - done));
    const int rc = MPI_Allreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT, MPI_SUM, comm_);
    if (rc != MPI_SUCCESS)
      fail("MPI_Allreduce(sum, {} floats) on {} failed: {}", count, describe(), mpi_error_string(rc));
  }
}

void MpiCollective::all_gather(const float* send, float* recv, int64_t count) {
  require(count >= 0 && count * size_ <= INT_MAX,
          "MpiCollective::all_gather on {}: count {} x {} ranks exceeds MPI's int count", describe(),
          count, size_);
  const int rc = MPI_Allgather(send, static_cast<int>(count), MPI_FLOAT, recv,
                               static_cast<int>(count), MPI_FLOAT, comm_);
  if (rc != MPI_SUCCESS)
    fail("MPI_Allgather({} floats per rank) on {} failed: {}", count, describe(), mpi_error_string(rc));
}

void MpiCollective::broadcast(float* data, int64_t count, int root) {
  require(root >= 0 && root < size_, "MpiCollective::broadcast on {}: root {} is not a rank",
          describe(), root);
  require(count >= 0, "MpiCollective::broadcast on {}: negative count {}", describe(), count);
  for (int64_t done = 0; done < count; done += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - done));
    const int rc = MPI_Bcast(data + done, n, MPI_FLOAT, root, comm_);
    if (rc != MPI_SUCCESS)
      fail("MPI_Bcast({} floats from root {}) on {} failed: {}", count, root, describe(),
           mpi_error_string(rc));
  }
}

void MpiCollective::barrier() {
  const int rc = MPI_Barrier(comm_);
  if (rc != MPI_SUCCESS) fail("MPI_Barrier on {} failed: {}", describe(), mpi_error_string(rc));
}

}  // namespace shardserve::comm
