// The log-softmax normaliser of each logits row, log(sum_v exp(logits[v])), so that a token's
// log-probability (what the service reports with every token) is logits[token] - lse without
// copying the vocabulary-wide row to the host: with argmax_rows it samples a greedy step on the
// GPU (worker/cuda/cuda_model_runner.h: forward_greedy).
//
// Layout: logits float32 [rows, row_stride], the first `vocab` columns valid (row_stride is the
// padded stride of a vocabulary-parallel gather); lse float32 [rows].
// Pipeline: one thread block per row; each thread keeps an online (max, sum of exp(x - max))
// over a strided slice, then the pairs are merged by warp shuffles and one shared-memory pass.
// float32 throughout (the CPU reference accumulates in double: they agree to ~1e-6 relative).
// NaN entries are skipped, as argmax_rows skips them; -inf entries add nothing.
#include <cfloat>

#include "kernels/cuda/launchers.h"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;

// Merges (m2, s2) into (m, s): s = sum exp(x - m) over both halves.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 == -FLT_MAX) return;
  if (m == -FLT_MAX) {
    m = m2;
    s = s2;
    return;
  }
  const float hi = fmaxf(m, m2);
  s = s * __expf(m - hi) + s2 * __expf(m2 - hi);
  m = hi;
}

// logits: [rows, row_stride]; lse: [rows]. grid.x = rows.
__global__ void logsumexp_kernel(const float* __restrict__ logits, int64_t vocab,
                                 int64_t row_stride, float* __restrict__ lse) {
  __shared__ float s_m[kThreads / 32];
  __shared__ float s_s[kThreads / 32];
  const float* row = logits + blockIdx.x * row_stride;
  float m = -FLT_MAX, s = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = row[i];
    if (!(x > -FLT_MAX)) continue;  // NaN and -inf
    if (x > m) {
      s = s * __expf(m - x) + 1.0f;
      m = x;
    } else {
      s += __expf(x - m);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge(m, s, m2, s2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    s_m[warp] = m;
    s_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < kThreads / 32 ? s_m[lane] : -FLT_MAX;
    s = lane < kThreads / 32 ? s_s[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
      merge(m, s, m2, s2);
    }
    if (lane == 0) lse[blockIdx.x] = m == -FLT_MAX ? -INFINITY : m + logf(s);
  }
}

}  // namespace

namespace launch {

cudaError_t logsumexp_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                           float* lse, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  logsumexp_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab,
                                                                         row_stride, lse);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
