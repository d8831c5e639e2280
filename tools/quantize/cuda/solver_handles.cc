#include "tools/quantize/cuda/solver_handles.h"

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"

namespace shardserve::quantize::cuda {
namespace {

const char* cusolver_status_name(cusolverStatus_t status) {
  switch (status) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "unknown cuSOLVER status";
  }
}

}  // namespace

void throw_cusolver_error(cusolverStatus_t status, const char* call, const char* file, int line,
                          const std::string& context) {
  fail("cuSOLVER error {} ({}) in {} [{}:{}]{}{}", cusolver_status_name(status),
       static_cast<int>(status), call, file, line, context.empty() ? "" : ": ", context);
}

CublasHandle::CublasHandle(cudaStream_t stream) {
  SHARDSERVE_CUBLAS_CHECK(cublasCreate(&handle_));
  try {
    SHARDSERVE_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    SHARDSERVE_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  } catch (...) {
    (void)cublasDestroy(handle_);
    throw;
  }
}
CublasHandle::~CublasHandle() {
  if (handle_ != nullptr) (void)cublasDestroy(handle_);
}

CusolverHandle::CusolverHandle(cudaStream_t stream) {
  SHARDSERVE_CUSOLVER_CHECK(cusolverDnCreate(&handle_));
  try {
    SHARDSERVE_CUSOLVER_CHECK(cusolverDnSetStream(handle_, stream));
  } catch (...) {
    (void)cusolverDnDestroy(handle_);
    throw;
  }
}
CusolverHandle::~CusolverHandle() {
  if (handle_ != nullptr) (void)cusolverDnDestroy(handle_);
}

}  // namespace shardserve::quantize::cuda
