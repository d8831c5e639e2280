#pragma once
// bf16 matrix products through cuBLASLt, in the layout of every projection of the model:
//   y[m, n] = x[m, k] · w[n, k]ᵀ,  x and w bf16 row-major (w as nn.Linear stores it),
//   y bf16 or float32 row-major with row stride ldy, float32 accumulation.
// Row-major y is column-major yᵀ [n, m], so cuBLAS computes yᵀ = op(w) · x with op = transpose
// on the [k, n] column-major view of w: the "TN" layout, cuBLAS's fastest for these shapes.
//
// Plan-then-run: the matmul descriptor, the three layouts and the heuristic's algorithm are
// made once per shape (prepare(), or lazily at the first run of a shape: host work only, no
// device allocation) and cached; run() only enqueues cublasLtMatmul on the caller's stream
// with the preallocated workspace, so it can be captured in a CUDA graph. Not thread-safe:
// one GemmBf16 per stream.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "kernels/cuda/device.h"

namespace shardserve::kernels::cuda {

enum class GemmOut { kBf16, kFloat };

struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  int64_t ldy = 0;  // row stride of y in elements; 0 means n
  GemmOut out = GemmOut::kBf16;
};

// An owned cublasLtHandle_t.
class CublasLtHandle {
 public:
  CublasLtHandle();
  ~CublasLtHandle();
  CublasLtHandle(const CublasLtHandle&) = delete;
  CublasLtHandle& operator=(const CublasLtHandle&) = delete;
  cublasLtHandle_t get() const { return handle_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
};

class GemmBf16 {
 public:
  explicit GemmBf16(std::size_t workspace_bytes = std::size_t{32} << 20);
  ~GemmBf16();
  GemmBf16(const GemmBf16&) = delete;
  GemmBf16& operator=(const GemmBf16&) = delete;

  void prepare(const GemmShape& shape);
  // x: bf16 [m, k]; w: bf16 [n, k]; y: bf16 or float [m, ldy] (columns [0, n) written).
  void run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, const GemmShape& shape,
           cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int>;
  const Plan& plan(const GemmShape& shape);

  CublasLtHandle handle_;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace shardserve::kernels::cuda
