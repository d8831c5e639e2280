// SwiGLU's elementwise half on the fused gate/up projection output.
//
// Layout: gate_up bf16 [rows, 2 * width] (gate in the first width columns, up in the second);
// out bf16 [rows, width].
// Pipeline: a grid-stride loop over 8-element vectors (16-byte loads of gate and up, one
// 16-byte store) when width % 8 == 0, else over single elements; silu(g) * u in float32
// (g / (1 + exp(-g)) * u, the CPU's formula). Bytes: rows * width * (4 read + 2 written).
#include <algorithm>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/vec.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// gate_up: [rows, 2*width]; out: [rows, width]; grid-stride over rows * width / VEC items.
template <int VEC>
__global__ void silu_mul_kernel(const bf16* __restrict__ gate_up, bf16* __restrict__ out,
                                int64_t rows, int64_t width) {
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
  const int64_t per_row = width / VEC;
  for (int64_t item = blockIdx.x * int64_t{kThreads} + threadIdx.x; item < rows * per_row;
       item += int64_t{gridDim.x} * kThreads) {
    const int64_t r = item / per_row, c = (item % per_row) * VEC;
    const bf16* g = gate_up + r * 2 * width + c;
    if constexpr (VEC == 8) {
      float gv[8], uv[8], o[8];
      load8(g, gv);
      load8(g + width, uv);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = silu_times(gv[j], uv[j]);
      store8(out + r * width + c, o);
    } else {
      out[r * width + c] = __float2bfloat16_rn(silu_times(__bfloat162float(g[0]),
                                                          __bfloat162float(g[width])));
    }
  }
}

}  // namespace

namespace launch {

cudaError_t silu_mul(const bf16* gate_up, bf16* out, int64_t rows, int64_t width,
                     cudaStream_t stream) {
  if (rows == 0 || width == 0) return cudaSuccess;
  const bool vec = width % 8 == 0;
  const int64_t items = rows * width / (vec ? 8 : 1);
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((items + kThreads - 1) / kThreads, 132 * 16));
  if (vec) {
    return launch_dependent(silu_mul_kernel<8>, blocks, kThreads, 0, stream, gate_up, out, rows,
                            width);
  }
  return launch_dependent(silu_mul_kernel<1>, blocks, kThreads, 0, stream, gate_up, out, rows,
                          width);
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
