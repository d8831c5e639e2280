#pragma once
// The Collective interface on float32 DEVICE buffers, carried by a collective on HOST buffers
// (comm::MpiCollective): each operation copies its operand from the device into pinned host
// memory, runs the host collective there, and copies the result back to the device.
//
// Why it exists: NCCL refuses a communicator two of whose ranks use the same GPU, and the
// single-GPU machines must still run TP = 2 to show that the sharded GPU path gives TP = 1's
// tokens (issue 16); an MPI that is not CUDA-aware cannot take device pointers either. Each
// operation costs two PCIe copies of its data plus the host collective: a way to test the
// sharded path on one GPU, not a fast path (with one GPU per rank the worker picks
// comm::NcclCollective).
//
// The copies are synchronous (cudaMemcpy on the legacy stream, which waits for the device):
// the runner has already synchronised its own stream before it calls a collective
// (worker/cuda/cuda_model_runner.h), and the host collective needs the data at once anyway.
#include <cstdint>
#include <memory>

#include "comm/collective.h"
#include "kernels/cuda/device.h"

namespace shardserve::worker::cuda {

class HostStagedCollective final : public comm::Collective {
 public:
  // `host`: the group's collective on host buffers; `device`: the GPU the buffers live on.
  HostStagedCollective(std::unique_ptr<comm::Collective> host, int device);

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  // data: [count] device floats.
  void all_reduce_sum(float* data, int64_t count) override;
  // send: [count] device floats; recv: [size() * count] device floats.
  void all_gather(const float* send, float* recv, int64_t count) override;
  // data: [count] device floats.
  void broadcast(float* data, int64_t count, int root) override;
  void barrier() override { host_->barrier(); }

 private:
  // Pinned host memory for at least `count` floats (grown, never shrunk: the largest operation
  // of a step recurs every step).
  float* staging(int64_t count);
  // count floats between the device and pinned host memory, synchronously.
  void copy(void* dst, const void* src, int64_t count, bool to_device, const char* op);

  std::unique_ptr<comm::Collective> host_;
  int device_;
  kernels::cuda::PinnedBuffer buffer_;
};

}  // namespace shardserve::worker::cuda
