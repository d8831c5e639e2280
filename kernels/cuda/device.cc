#include "kernels/cuda/device.h"

#include <fmt/format.h>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"

namespace shardserve::kernels::cuda {

DeviceMemoryInfo device_memory_info() {
  DeviceMemoryInfo info;
  SHARDSERVE_CUDA_CHECK(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
  return info;
}

std::string format_bytes(std::size_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= double(1ull << 30)) return fmt::format("{:.2f} GiB", b / double(1ull << 30));
  if (b >= double(1ull << 20)) return fmt::format("{:.2f} MiB", b / double(1ull << 20));
  if (b >= 1024.0) return fmt::format("{:.2f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

DeviceBuffer::DeviceBuffer(std::size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t status = cudaMalloc(&ptr_, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    std::size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    int device = 0;
    (void)cudaGetDevice(&device);
    fail("out of device memory: {} needs {} ({} bytes) but only {} of {} is free on GPU {}", what,
         format_bytes(bytes), bytes, format_bytes(free_bytes), format_bytes(total_bytes), device);
  }
  SHARDSERVE_CUDA_CHECK_CTX(status, fmt::format("{}: {} bytes", what, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) (void)cudaFree(ptr_);  // destructors never throw
}

PinnedBuffer::PinnedBuffer(std::size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  SHARDSERVE_CUDA_CHECK_CTX(cudaMallocHost(&ptr_, bytes),
                            fmt::format("{}: {} of pinned host memory", what, format_bytes(bytes)));
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
}

Stream::Stream() { SHARDSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}
void Stream::synchronize() const { SHARDSERVE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

Event::Event() { SHARDSERVE_CUDA_CHECK(cudaEventCreate(&event_)); }
Event::~Event() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}
void Event::record(cudaStream_t stream) const { SHARDSERVE_CUDA_CHECK(cudaEventRecord(event_, stream)); }
void Event::synchronize() const { SHARDSERVE_CUDA_CHECK(cudaEventSynchronize(event_)); }
float Event::elapsed_ms(const Event& start, const Event& end) {
  float ms = 0;
  SHARDSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, end.event_));
  return ms;
}

CudaGraph::~CudaGraph() {
  if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
}
void CudaGraph::begin(cudaStream_t stream) {
  SHARDSERVE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
}
void CudaGraph::end(cudaStream_t stream) {
  SHARDSERVE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph_));
  SHARDSERVE_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
}
void CudaGraph::abort(cudaStream_t stream) noexcept {
  cudaGraph_t partial = nullptr;
  (void)cudaStreamEndCapture(stream, &partial);
  if (partial != nullptr) (void)cudaGraphDestroy(partial);
  (void)cudaGetLastError();
}
void CudaGraph::launch(cudaStream_t stream) const {
  SHARDSERVE_CUDA_CHECK(cudaGraphLaunch(exec_, stream));
}

void copy_to_device(void* dst, const void* src, std::size_t bytes) {
  SHARDSERVE_CUDA_CHECK_CTX(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice),
                            fmt::format("{} bytes", bytes));
  // From pageable memory cudaMemcpy may return before its DMA lands, and it is ordered only on
  // the legacy stream, not on our non-blocking streams: a kernel enqueued next could read the
  // old bytes (seen: CudaKernels.RmsNormAndAddRmsNormMatchCpu failing 2 runs in 6, 2026-12-02).
  SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());
}
void copy_to_host(void* dst, const void* src, std::size_t bytes) {
  SHARDSERVE_CUDA_CHECK_CTX(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost),
                            fmt::format("{} bytes", bytes));
}

}  // namespace shardserve::kernels::cuda
