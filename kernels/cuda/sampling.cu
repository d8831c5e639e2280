// Greedy decoding on the GPU: the argmax of each logits row, so that a greedy step copies one
// int32 per sequence to the host instead of a vocabulary-wide row.
//
// Layout: logits float32 [rows, row_stride], the first `vocab` columns valid (row_stride is the
// padded stride of a vocabulary-parallel gather); tokens int32 [rows]; max_logits float [rows].
// Pipeline: one thread block per row; each thread scans a strided slice keeping (value, id),
// then a warp-shuffle and shared-memory reduction; ties go to the lowest id, as torch.argmax
// and the CPU sampler do. NaN logits are never chosen.
//
// Full sampling (penalties, temperature, top-k/p, min-p, the seeded draw) is sample_rows in
// sampling_filter.cu, equal to kernels/cpu/sampling.cc; the worker uses it for the steps that
// are not plain greedy (worker/cuda/cuda_model_runner.h: forward_sampled).
#include <cfloat>

#include "kernels/cuda/launchers.h"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ void keep_better(float& best, int& best_id, float v, int id) {
  if (v > best || (v == best && id < best_id)) {
    best = v;
    best_id = id;
  }
}

// logits: [rows, row_stride]; tokens, max_logits: [rows]. grid.x = rows.
__global__ void argmax_kernel(const float* __restrict__ logits, int64_t vocab, int64_t row_stride,
                              int32_t* __restrict__ tokens, float* __restrict__ max_logits) {
  __shared__ float s_val[kThreads / 32];
  __shared__ int s_id[kThreads / 32];
  const float* row = logits + blockIdx.x * row_stride;
  float best = -FLT_MAX;
  int best_id = INT_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    keep_better(best, best_id, row[i], static_cast<int>(i));  // NaN compares false: skipped
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int id = __shfl_xor_sync(0xffffffffu, best_id, o);
    keep_better(best, best_id, v, id);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    s_val[warp] = best;
    s_id[warp] = best_id;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < kThreads / 32 ? s_val[lane] : -FLT_MAX;
    best_id = lane < kThreads / 32 ? s_id[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, best, o);
      const int id = __shfl_xor_sync(0xffffffffu, best_id, o);
      keep_better(best, best_id, v, id);
    }
    if (lane == 0) {
      tokens[blockIdx.x] = best_id == INT_MAX ? 0 : best_id;  // an all-NaN row gives token 0
      if (max_logits != nullptr) max_logits[blockIdx.x] = best;
    }
  }
}

}  // namespace

namespace launch {

cudaError_t argmax_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                        int32_t* tokens, float* max_logits, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  argmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, row_stride,
                                                                     tokens, max_logits);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
