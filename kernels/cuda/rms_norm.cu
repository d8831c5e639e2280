// RMSNorm and the fused residual add + RMSNorm of the pre-norm residual stream.
//
// Layout: residual float32 [rows, dim]; delta (a projection's output, all-reduced over the
// tensor-parallel group) float32 or bf16 [rows, dim];
// weight float32 [dim]; out bf16 [rows, dim] (the next matrix product's input).
// Pipeline: one thread block per row. Pass 1 reads residual (+ delta), writes the updated
// residual and accumulates the sum of squares in float32; a block reduction gives the inverse
// RMS; pass 2 re-reads the row (just written by the same thread, so from L1/L2) and writes
// weight * x * inv as bf16. 8 elements per thread per step when dim % 8 == 0.
// Bytes (add form, bf16 delta): rows * dim * (4 + 2 read, 4 + 2 written) + dim * 4.
// One kernel template over the delta's type (float, bf16); the plain norm is DeltaT = float
// with a null delta.
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/vec.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }

// residual: [rows, dim]; delta: [rows, dim] or null (plain norm, residual not written);
// weight: [dim]; out: [rows, dim]. grid.x = rows.
template <typename DeltaT>
__global__ void add_rms_norm_kernel(float* __restrict__ residual,
                                    const DeltaT* __restrict__ delta,
                                    const float* __restrict__ weight, bf16* __restrict__ out,
                                    int64_t dim, float eps) {
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
  __shared__ float scratch[32];
  float* x = residual + blockIdx.x * dim;
  const DeltaT* d = delta != nullptr ? delta + blockIdx.x * dim : nullptr;
  bf16* o = out + blockIdx.x * dim;
  float sum_sq = 0.0f;
  const bool vec = dim % 8 == 0;
  if (vec) {
    for (int64_t i = threadIdx.x * 8; i < dim; i += kThreads * 8) {
      float4 a = reinterpret_cast<const float4*>(x + i)[0];
      float4 b = reinterpret_cast<const float4*>(x + i)[1];
      if (d != nullptr) {
        float dv[8];
        load8(d + i, dv);
        a.x += dv[0], a.y += dv[1], a.z += dv[2], a.w += dv[3];
        b.x += dv[4], b.y += dv[5], b.z += dv[6], b.w += dv[7];
        reinterpret_cast<float4*>(x + i)[0] = a;
        reinterpret_cast<float4*>(x + i)[1] = b;
      }
      sum_sq += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
      sum_sq += b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      float v = x[i];
      if (d != nullptr) {
        v += to_float(d[i]);
        x[i] = v;
      }
      sum_sq += v * v;
    }
  }
  const float total = block_sum(sum_sq, scratch);
  const float inv = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
  if (vec) {
    for (int64_t i = threadIdx.x * 8; i < dim; i += kThreads * 8) {
      const float4 a = reinterpret_cast<const float4*>(x + i)[0];
      const float4 b = reinterpret_cast<const float4*>(x + i)[1];
      const float4 wa = reinterpret_cast<const float4*>(weight + i)[0];
      const float4 wb = reinterpret_cast<const float4*>(weight + i)[1];
      const float r[8] = {wa.x * (a.x * inv), wa.y * (a.y * inv), wa.z * (a.z * inv),
                          wa.w * (a.w * inv), wb.x * (b.x * inv), wb.y * (b.y * inv),
                          wb.z * (b.z * inv), wb.w * (b.w * inv)};
      store8(o + i, r);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      o[i] = __float2bfloat16_rn(weight[i] * (x[i] * inv));
    }
  }
}

}  // namespace

namespace launch {

template <typename DeltaT>
cudaError_t add_rms_norm_t(float* residual, const DeltaT* delta, const float* weight, bf16* out,
                           int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launch_dependent(add_rms_norm_kernel<DeltaT>, static_cast<unsigned>(rows), kThreads, 0,
                          stream, residual, delta, weight, out, dim, eps);
}

cudaError_t add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  return add_rms_norm_t(residual, delta, weight, out, rows, dim, eps, stream);
}

cudaError_t add_rms_norm(float* residual, const float* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  return add_rms_norm_t(residual, delta, weight, out, rows, dim, eps, stream);
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
