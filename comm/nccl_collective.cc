#include "comm/nccl_collective.h"

#include <thread>

#include "comm/mpi_util.h"
#include "common/error.h"

namespace shardserve::comm {
namespace {

void check_cuda(cudaError_t e, const char* call) {
  if (e != cudaSuccess) fail("{} failed: {} ({})", call, cudaGetErrorString(e), static_cast<int>(e));
}

void check_nccl(ncclResult_t r, const char* call) {
  if (r != ncclSuccess) fail("{} failed: {} ({})", call, ncclGetErrorString(r), static_cast<int>(r));
}

}  // namespace

NcclCollective::NcclCollective(MPI_Comm group, int device, std::chrono::milliseconds timeout)
    : device_(device), timeout_(timeout) {
  check_mpi(MPI_Comm_rank(group, &rank_), "MPI_Comm_rank (NCCL group)");
  check_mpi(MPI_Comm_size(group, &size_), "MPI_Comm_size (NCCL group)");
  ncclUniqueId id{};
  if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  check_mpi(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, group), "MPI_Bcast(ncclUniqueId)");
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  check_cuda(cudaMalloc(reinterpret_cast<void**>(&scratch_), sizeof(float)), "cudaMalloc(scratch)");
  // Non-blocking init so that a peer that never joins becomes a timeout, not a hang.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
  if (r != ncclSuccess && r != ncclInProgress) check_nccl(r, "ncclCommInitRankConfig");
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  do {
    check_nccl(ncclCommGetAsyncError(comm_, &r), "ncclCommGetAsyncError");
    if (r == ncclInProgress) {
      if (std::chrono::steady_clock::now() > deadline)
        abort_and_fail("ncclCommInitRankConfig", size_, "timed out waiting for the group's ranks");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  } while (r == ncclInProgress);
  if (r != ncclSuccess) abort_and_fail("ncclCommInitRankConfig", size_, ncclGetErrorString(r));
}

NcclCollective::~NcclCollective() {
  if (comm_ != nullptr) {
    if (aborted_) {
      // ncclCommAbort already released it.
    } else if (ncclCommDestroy(comm_) != ncclSuccess) {
      ncclCommAbort(comm_);
    }
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void NcclCollective::abort_and_fail(const char* op, int64_t count, const char* why) {
  if (comm_ != nullptr && !aborted_) {
    ncclCommAbort(comm_);
    aborted_ = true;
  }
  fail("NCCL {} ({} elements) on rank {} of {} (GPU {}) failed: {}; communicator aborted", op,
       count, rank_, size_, device_, why);
}

void NcclCollective::wait(const char* op, int64_t count) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (true) {
    // A non-blocking communicator may still be enqueueing (ncclInProgress): the stream is
    // complete only once the enqueue is.
    ncclResult_t async = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(comm_, &async);
    if (q != ncclSuccess) abort_and_fail(op, count, ncclGetErrorString(q));
    if (async != ncclSuccess && async != ncclInProgress)
      abort_and_fail(op, count, ncclGetErrorString(async));
    if (async == ncclSuccess) {
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) abort_and_fail(op, count, cudaGetErrorString(e));
    }
    if (std::chrono::steady_clock::now() > deadline)
      abort_and_fail(op, count, "timed out: a peer rank died or stopped calling collectives");
    std::this_thread::yield();
  }
}

void NcclCollective::all_reduce_sum(float* data, int64_t count) {
  require(!aborted_, "NCCL all_reduce_sum: the communicator was aborted after an earlier error");
  const ncclResult_t r =
      ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat32, ncclSum, comm_, stream_);
  if (r != ncclSuccess && r != ncclInProgress) abort_and_fail("ncclAllReduce", count, ncclGetErrorString(r));
  wait("ncclAllReduce", count);
}

void NcclCollective::all_gather(const float* send, float* recv, int64_t count) {
  require(!aborted_, "NCCL all_gather: the communicator was aborted after an earlier error");
  const ncclResult_t r =
      ncclAllGather(send, recv, static_cast<size_t>(count), ncclFloat32, comm_, stream_);
  if (r != ncclSuccess && r != ncclInProgress) abort_and_fail("ncclAllGather", count, ncclGetErrorString(r));
  wait("ncclAllGather", count);
}

void NcclCollective::broadcast(float* data, int64_t count, int root) {
  require(!aborted_, "NCCL broadcast: the communicator was aborted after an earlier error");
  require(root >= 0 && root < size_, "NCCL broadcast: root {} is not a rank of {}", root, size_);
  const ncclResult_t r =
      ncclBroadcast(data, data, static_cast<size_t>(count), ncclFloat32, root, comm_, stream_);
  if (r != ncclSuccess && r != ncclInProgress) abort_and_fail("ncclBroadcast", count, ncclGetErrorString(r));
  wait("ncclBroadcast", count);
}

void NcclCollective::barrier() {
  require(!aborted_, "NCCL barrier: the communicator was aborted after an earlier error");
  const ncclResult_t r = ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_);
  if (r != ncclSuccess && r != ncclInProgress) abort_and_fail("ncclAllReduce(barrier)", 1, ncclGetErrorString(r));
  wait("ncclAllReduce(barrier)", 1);
}

}  // namespace shardserve::comm
