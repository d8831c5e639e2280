#pragma once
// Every CUDA runtime and cuBLAS(Lt) call of the backend goes through one of these macros: a
// failure becomes a shardserve::Error naming the call as written (its arguments included), the
// error's name and text, and the source line, e.g.
//   "CUDA error cudaErrorMemoryAllocation (out of memory) in cudaMalloc(&ptr_, bytes)
//    [kernels/cuda/device.cc:21]: 4.0 GiB requested"
// The optional context (SHARDSERVE_CUDA_CHECK_CTX) carries the values: shapes, sizes, ids.
//
// This header has no fmt in it on purpose: nvcc 13 cannot compile fmt 9's consteval format
// strings, so .cu files include only this; the formatting lives in cuda_check.cc.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string>

namespace shardserve::kernels::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                   int line, const std::string& context);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line, const std::string& context);

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line,
                       const std::string& context = {}) {
  if (status != cudaSuccess) throw_cuda_error(status, call, file, line, context);
}
inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line,
                         const std::string& context = {}) {
  if (status != CUBLAS_STATUS_SUCCESS) throw_cublas_error(status, call, file, line, context);
}

// True when at least one CUDA device is usable (false, not an error, when the driver or the
// device is missing: the tests skip themselves on such a machine).
bool cuda_device_available();

}  // namespace shardserve::kernels::cuda

#define SHARDSERVE_CUDA_CHECK(call) \
  ::shardserve::kernels::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define SHARDSERVE_CUDA_CHECK_CTX(call, context) \
  ::shardserve::kernels::cuda::check_cuda((call), #call, __FILE__, __LINE__, (context))
#define SHARDSERVE_CUBLAS_CHECK(call) \
  ::shardserve::kernels::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define SHARDSERVE_CUBLAS_CHECK_CTX(call, context) \
  ::shardserve::kernels::cuda::check_cublas((call), #call, __FILE__, __LINE__, (context))
