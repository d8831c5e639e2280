// Rotary position embedding, LLaMA's rotate-half form, in place on bf16 heads.
//
// Layout: x bf16 [tokens, row_stride]; head h of token t is x[t*row_stride + h*head_dim ...],
// dimension i paired with i + head_dim/2. inv_freq float32 [head_dim/2] is the CPU table
// (kernels::cpu::rope_inverse_frequencies, llama3 scaling included), uploaded once.
// Pipeline: one thread block per token; its threads first compute cos/sin of
// position * inv_freq[i] (float32 angle, accurate cosf/sinf as the CPU's std::cos/std::sin)
// into shared memory, then rotate every (head, pair) of the token: the transcendental work is
// done once per token, not once per head. Rotation in float32, result rounded to bf16.
#include "kernels/cuda/launchers.h"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// x: [tokens, row_stride]; positions: [tokens]; inv_freq: [head_dim/2]. grid.x = tokens;
// dynamic shared memory: head_dim floats (cos then sin).
__global__ void rope_kernel(bf16* __restrict__ x, int64_t row_stride,
                            const int32_t* __restrict__ positions, int64_t heads,
                            int64_t head_dim, const float* __restrict__ inv_freq) {
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
  for (int64_t j = threadIdx.x; j < heads * half; j += kThreads) {
    const int64_t h = j / half, i = j % half;
    bf16* v = row + h * head_dim;
    const float a = __bfloat162float(v[i]), b = __bfloat162float(v[i + half]);
    v[i] = __float2bfloat16_rn(a * cos_t[i] - b * sin_t[i]);
    v[i + half] = __float2bfloat16_rn(b * cos_t[i] + a * sin_t[i]);
  }
}

}  // namespace

namespace launch {

cudaError_t apply_rope(bf16* x, int64_t row_stride, const int32_t* positions, int64_t tokens,
                       int64_t heads, int64_t head_dim, const float* inv_freq,
                       cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  rope_kernel<<<static_cast<unsigned>(tokens), kThreads, head_dim * sizeof(float), stream>>>(
      x, row_stride, positions, heads, head_dim, inv_freq);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
