#pragma once
// Owned cuBLAS and cuSOLVER (dense) handles for the GPU quantizer, bound to one stream, and
// the cuSOLVER counterpart of kernels/cuda/cuda_check.h's macros: a failed call becomes a
// shardserve::Error naming the call, the status and the source line. (cuBLAS statuses go
// through SHARDSERVE_CUBLAS_CHECK: the same cublasStatus_t as cuBLASLt's.)
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <string>

namespace shardserve::quantize::cuda {

[[noreturn]] void throw_cusolver_error(cusolverStatus_t status, const char* call,
                                       const char* file, int line, const std::string& context);
inline void check_cusolver(cusolverStatus_t status, const char* call, const char* file, int line,
                           const std::string& context = {}) {
  if (status != CUSOLVER_STATUS_SUCCESS) throw_cusolver_error(status, call, file, line, context);
}

// cuBLAS in its default math mode (no TF32: float GEMMs stay float32 end to end).
class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream);
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

class CusolverHandle {
 public:
  explicit CusolverHandle(cudaStream_t stream);
  ~CusolverHandle();
  CusolverHandle(const CusolverHandle&) = delete;
  CusolverHandle& operator=(const CusolverHandle&) = delete;
  cusolverDnHandle_t get() const { return handle_; }

 private:
  cusolverDnHandle_t handle_ = nullptr;
};

}  // namespace shardserve::quantize::cuda

#define SHARDSERVE_CUSOLVER_CHECK(call) \
  ::shardserve::quantize::cuda::check_cusolver((call), #call, __FILE__, __LINE__)
