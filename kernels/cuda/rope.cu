// Rotary position embedding, LLaMA's rotate-half form, in place on bf16 heads.
//
// Layout: x bf16 [tokens, row_stride]; head h of token t is x[t*row_stride + h*head_dim ...],
// dimension i paired with i + head_dim/2. inv_freq float32 [head_dim/2] is the CPU table
// (kernels::cpu::rope_inverse_frequencies, llama3 scaling included), uploaded once.
// Pipeline: one thread block per token; its threads first compute cos/sin of
// position * inv_freq[i] (float32 angle, accurate cosf/sinf as the CPU's std::cos/std::sin)
// into shared memory, then rotate every (head, pair) of the token: the transcendental work is
// done once per token, not once per head; then 8 pairs per thread with 16-byte loads where
// head_dim / 2 is a multiple of 8. Rotation in float32, result rounded to bf16.
#include <cstdint>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/vec.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// x: [tokens, row_stride]; positions: [tokens]; inv_freq: [head_dim/2]. grid.x = tokens;
// dynamic shared memory: head_dim floats (cos then sin). VEC = 8: each thread rotates 8
// consecutive pairs with 16-byte loads (needs half % 8 == 0 and 16-byte aligned rows); VEC = 1:
// one pair.
template <int VEC>
__global__ void rope_kernel(bf16* __restrict__ x, int64_t row_stride,
                            const int32_t* __restrict__ positions, int64_t heads,
                            int64_t head_dim, const float* __restrict__ inv_freq) {
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
  extern __shared__ float table[];
  const int64_t half = head_dim / 2;
  float* cos_t = table;
  float* sin_t = table + half;
  const float pos = static_cast<float>(positions[blockIdx.x]);
  for (int64_t i = threadIdx.x; i < half; i += kThreads) {
    const float angle = pos * inv_freq[i];
    cos_t[i] = cosf(angle);
    sin_t[i] = sinf(angle);
  }
  __syncthreads();
  bf16* row = x + blockIdx.x * row_stride;
  const int64_t per_head = half / VEC;
  for (int64_t j = threadIdx.x; j < heads * per_head; j += kThreads) {
    const int64_t h = j / per_head, i = (j % per_head) * VEC;
    bf16* v = row + h * head_dim;
    if constexpr (VEC == 8) {
      float a[8], b[8], ra[8], rb[8];
      load8(v + i, a);
      load8(v + i + half, b);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        ra[e] = a[e] * cos_t[i + e] - b[e] * sin_t[i + e];
        rb[e] = b[e] * cos_t[i + e] + a[e] * sin_t[i + e];
      }
      store8(v + i, ra);
      store8(v + i + half, rb);
    } else {
      const float a = __bfloat162float(v[i]), b = __bfloat162float(v[i + half]);
      v[i] = __float2bfloat16_rn(a * cos_t[i] - b * sin_t[i]);
      v[i + half] = __float2bfloat16_rn(b * cos_t[i] + a * sin_t[i]);
    }
  }
}

}  // namespace

namespace launch {

cudaError_t apply_rope(bf16* x, int64_t row_stride, const int32_t* positions, int64_t tokens,
                       int64_t heads, int64_t head_dim, const float* inv_freq,
                       cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  const std::size_t smem = head_dim * sizeof(float);
  const bool vec = (head_dim / 2) % 8 == 0 && row_stride % 8 == 0 &&
                   reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
  if (vec) {
    return launch_dependent(rope_kernel<8>, static_cast<unsigned>(tokens), kThreads, smem, stream,
                            x, row_stride, positions, heads, head_dim, inv_freq);
  }
  return launch_dependent(rope_kernel<1>, static_cast<unsigned>(tokens), kThreads, smem, stream, x,
                          row_stride, positions, heads, head_dim, inv_freq);
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
