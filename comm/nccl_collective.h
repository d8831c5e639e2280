#pragma once
// The Collective interface over NCCL, on float32 DEVICE buffers (the GPU path). The ranks of a
// tensor-parallel group agree on an ncclUniqueId over MPI (rank 0 of the group's MPI
// communicator creates it and broadcasts it), then each joins the NCCL communicator on its own
// GPU. Each operation is enqueued on the collective's stream and waited for, polling
// ncclCommGetAsyncError: an NCCL error, or no completion within the timeout (a peer died or
// hangs), aborts the communicator (ncclCommAbort) and throws a shardserve::Error naming the
// operation, so the process can report and exit rather than hang. Built only where CUDA and NCCL
// are found (target shardserve_comm_nccl).
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>

#include "comm/collective.h"

namespace shardserve::comm {

class NcclCollective final : public Collective {
 public:
  // Collective over `group` (e.g. MpiCollective::communicator()): NCCL rank = MPI rank there.
  NcclCollective(MPI_Comm group, int device,
                 std::chrono::milliseconds timeout = std::chrono::minutes(5));
  ~NcclCollective() override;
  NcclCollective(const NcclCollective&) = delete;
  NcclCollective& operator=(const NcclCollective&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Device pointers.
  void all_reduce_sum(float* data, int64_t count) override;
  void all_gather(const float* send, float* recv, int64_t count) override;
  void broadcast(float* data, int64_t count, int root) override;
  void barrier() override;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  // Waits for the stream; on an NCCL error or timeout aborts the communicator and throws.
  void wait(const char* op, int64_t count);
  [[noreturn]] void abort_and_fail(const char* op, int64_t count, const char* why);

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  float* scratch_ = nullptr;  // one float for barrier()
  int device_ = 0;
  int rank_ = 0;
  int size_ = 1;
  bool aborted_ = false;
  std::chrono::milliseconds timeout_;
};

}  // namespace shardserve::comm
