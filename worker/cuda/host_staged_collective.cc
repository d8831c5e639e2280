#include "worker/cuda/host_staged_collective.h"

#include <fmt/format.h>

#include <utility>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"

namespace shardserve::worker::cuda {

HostStagedCollective::HostStagedCollective(std::unique_ptr<comm::Collective> host, int device)
    : host_(std::move(host)), device_(device) {
  require(host_ != nullptr, "host-staged collective: no host collective");
}

float* HostStagedCollective::staging(int64_t count) {
  require(count >= 0, "host-staged collective: negative count {}", count);
  const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(float);
  if (buffer_.bytes() < bytes)
    buffer_ = kernels::cuda::PinnedBuffer(bytes, "host-staged collective buffer");
  return buffer_.as<float>();
}

void HostStagedCollective::copy(void* dst, const void* src, int64_t count, bool to_device,
                                const char* op) {
  // The current device is per thread: the copy does not rely on its caller's.
  SHARDSERVE_CUDA_CHECK_CTX(cudaSetDevice(device_), fmt::format("{}: device {}", op, device_));
  SHARDSERVE_CUDA_CHECK_CTX(
      cudaMemcpy(dst, src, static_cast<std::size_t>(count) * sizeof(float),
                 to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost),
      fmt::format("{}: {} floats {} device {}, rank {} of {}", op, count,
                  to_device ? "to" : "from", device_, rank(), size()));
}

void HostStagedCollective::all_reduce_sum(float* data, int64_t count) {
  float* host = staging(count);
  copy(host, data, count, false, "all_reduce_sum");
  host_->all_reduce_sum(host, count);
  copy(data, host, count, true, "all_reduce_sum");
}

void HostStagedCollective::all_gather(const float* send, float* recv, int64_t count) {
  // [count] this rank's part, then [size() * count] everyone's.
  float* host = staging(count * (size() + 1));
  copy(host, send, count, false, "all_gather");
  host_->all_gather(host, host + count, count);
  copy(recv, host + count, count * size(), true, "all_gather");
}

void HostStagedCollective::broadcast(float* data, int64_t count, int root) {
  float* host = staging(count);
  if (rank() == root) copy(host, data, count, false, "broadcast");
  host_->broadcast(host, count, root);
  if (rank() != root) copy(data, host, count, true, "broadcast");
}

}  // namespace shardserve::worker::cuda
