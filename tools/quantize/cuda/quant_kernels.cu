// Kernels of the GPU quantizer; interface and contracts in quant_kernels.h. The arithmetic
// that decides codes (group parameters, rounding, the error of a column) is written to give
// the bits the CPU reference (model/quant/quantizer.cc) gives on the same inputs: float where
// it uses float, IEEE division, and products kept apart from the sums that follow them
// (__dmul_rn / __dsub_rn), because nvcc would otherwise fuse them into FMAs that the CPU build
// (x86-64 without FMA, -ffp-contract=off under -std=c++20) does not use.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "tools/quantize/cuda/quant_kernels.h"

namespace shardserve::quantize::cuda {
namespace {

constexpr float kMinScale = 6.0e-8f;  // quantizer.cc's: the smallest fp16 subnormal

// quantizer.cc's fp16_scale: the fp16 value at or above s (never 0).
__device__ float fp16_scale(float s) {
  const float v = s < kMinScale ? kMinScale : s;
  unsigned short h = __half_as_ushort(__float2half_rn(v));
  if (__half2float(__ushort_as_half(h)) < s) ++h;  // positive: the next fp16 up
  return __half2float(__ushort_as_half(h));
}

struct Params {
  float scale;
  int32_t zero;
};

__device__ int32_t clamp_int(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// quant::find_group_params from the group's minimum and maximum.
__device__ Params group_params(float lo, float hi, const KernelGrid& g) {
  const int32_t maxq = (1 << g.bits) - 1;
  Params p;
  if (g.awq) {
    const float range = hi - lo;
    p.scale = fp16_scale((range < 1e-5f ? 1e-5f : range) / static_cast<float>(maxq));
    p.zero = clamp_int(static_cast<int32_t>(-rintf(lo / p.scale)), 0, maxq);
    return p;
  }
  lo = 0.0f < lo ? 0.0f : lo;  // the range always contains 0
  hi = hi < 0.0f ? 0.0f : hi;
  if (g.sym) {
    hi = hi < -lo ? -lo : hi;
    lo = -hi;
  }
  if (lo == 0 && hi == 0) {
    lo = -1;
    hi = 1;
  }
  if (g.sym) {
    p.scale = fp16_scale((hi - lo) / static_cast<float>(maxq));
    p.zero = (maxq + 1) / 2;
    return p;
  }
  float scale = (hi - lo) / static_cast<float>(maxq);
  int32_t zero = static_cast<int32_t>(rintf(-lo / scale));
  if (zero < g.min_zero) {
    zero = g.min_zero;
    const float a = hi / static_cast<float>(maxq - zero), b = -lo / static_cast<float>(zero);
    scale = a < b ? b : a;
  }
  p.scale = fp16_scale(scale);
  p.zero = clamp_int(zero, 0, maxq);
  return p;
}

// quant::quantize_value.
__device__ int32_t quantize_value(float w, const Params& p, int bits) {
  const float v = rintf(w / p.scale) + static_cast<float>(p.zero);
  const float maxq = static_cast<float>((1 << bits) - 1);
  return static_cast<int32_t>(v < 0 ? 0 : (v > maxq ? maxq : v));
}

__global__ void convert_to_double_kernel(const float* src, double* dst, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n;
       k += int64_t{gridDim.x} * blockDim.x)
    dst[k] = static_cast<double>(src[k]);
}

// Thread (x, y) copies column-major (x, y), x > y, to (y, x): reads coalesced along x.
__global__ void mirror_lower_kernel(double* a, int64_t n) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  for (int64_t j = blockIdx.y * int64_t{blockDim.y} + threadIdx.y; j < n;
       j += int64_t{gridDim.y} * blockDim.y)
    if (i < n && i > j) a[i * n + j] = a[j * n + i];
}

__global__ void gather_symmetric_kernel(const double* h, const int32_t* perm, double* out,
                                        int64_t n) {
  const int64_t q = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (q >= n) return;
  const int64_t col = perm[q];
  for (int64_t p = blockIdx.y * int64_t{blockDim.y} + threadIdx.y; p < n;
       p += int64_t{gridDim.y} * blockDim.y)
    out[p * n + q] = h[static_cast<int64_t>(perm[p]) * n + col];
}

// rows_per_cta rows, one thread each; shared-memory column stride rows + 1 (the load phase
// writes consecutive columns of one row, which the padding spreads over the banks).
__global__ void gptq_block_kernel(GptqBlock b, KernelGrid g, int rows_per_cta) {
  extern __shared__ double s[];
  const int stride = rows_per_cta + 1;
  const int64_t row0 = blockIdx.x * int64_t{rows_per_cta};
  const int64_t rows = min(int64_t{rows_per_cta}, b.out - row0);
  const int64_t width = b.width;
  // Cooperative, coalesced load of the block slice: s[k * stride + r] = w[row0 + r][i1 + k].
  for (int64_t idx = threadIdx.x; idx < rows * width; idx += blockDim.x) {
    const int64_t r = idx / width, k = idx % width;
    s[k * stride + r] = b.w[(row0 + r) * b.in + b.i1 + k];
  }
  __syncthreads();
  const int t = threadIdx.x;
  if (t >= rows) return;  // no barrier below: every row is independent
  const int64_t o = row0 + t;
  Params p{1.0f, 0};
  if (b.per_row) p = Params{b.scales[o], b.zeros[o]};
  double loss = 0;
  for (int64_t jj = 0; jj < width; ++jj) {
    const int64_t col = b.i1 + jj;
    if (!b.per_row && col % g.group_size == 0) {
      // The group's first column: its parameters from the block as updated so far (the CPU
      // converts each weight to float first, then takes min and max).
      float lo = INFINITY, hi = -INFINITY;
      for (int64_t k = 0; k < g.group_size; ++k) {
        const float v = static_cast<float>(s[(jj + k) * stride + t]);
        lo = v < lo ? v : lo;
        hi = hi < v ? v : hi;
      }
      p = group_params(lo, hi, g);
      const int64_t gi = col / g.group_size;
      b.scales[gi * b.out + o] = p.scale;
      b.zeros[gi * b.out + o] = p.zero;
    }
    const double* urow = b.u + col * b.in;
    const double d = __ldg(urow + col);
    const double wj = s[jj * stride + t];
    const int32_t qv = quantize_value(static_cast<float>(wj), p, g.bits);
    b.q[o * b.in + col] = static_cast<uint8_t>(qv);
    const double deq = __dmul_rn(static_cast<double>(p.scale), static_cast<double>(qv - p.zero));
    const double diff = __dsub_rn(wj, deq);
    const double e = diff / d;
    loss += __dmul_rn(diff, diff) / __dmul_rn(d, d) / 2;
    for (int64_t k = jj + 1; k < width; ++k) {
      double& v = s[k * stride + t];
      v = __dsub_rn(v, __dmul_rn(e, __ldg(urow + b.i1 + k)));
    }
    b.err[o * b.err_ld + jj] = e;
  }
  b.loss[o] += loss;
}

// One warp per (row, group): lane-strided loads, min / max by shuffles.
__global__ void awq_candidate_kernel(const float* w, const float* s, int64_t out, int64_t in,
                                     KernelGrid g, float* wq) {
  const int64_t groups = in / g.group_size;
  const int64_t warp = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= out * groups) return;  // whole warps leave together: the shuffles stay full
  const int64_t o = warp / groups, base = (warp % groups) * g.group_size;
  const float* row = w + o * in + base;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t k = lane; k < g.group_size; k += 32) {
    const float v = row[k] * s[base + k];
    lo = v < lo ? v : lo;
    hi = hi < v ? v : hi;
  }
  for (int off = 16; off > 0; off /= 2) {
    const float l2 = __shfl_xor_sync(0xffffffffu, lo, off);
    const float h2 = __shfl_xor_sync(0xffffffffu, hi, off);
    lo = l2 < lo ? l2 : lo;
    hi = hi < h2 ? h2 : hi;
  }
  const Params p = group_params(lo, hi, g);
  for (int64_t k = lane; k < g.group_size; k += 32) {
    const float v = row[k] * s[base + k];
    const int32_t qv = quantize_value(v, p, g.bits);
    // QuantizedLinear::weight: float(scale) * float(q - zero), then / s as the search does.
    wq[o * in + base + k] = p.scale * static_cast<float>(qv - p.zero) / s[base + k];
  }
}

constexpr int kReduceThreads = 256;

__global__ void squared_error_kernel(const float* y, const float* ref, int64_t n,
                                     double* partials) {
  __shared__ double part[kReduceThreads];
  double acc = 0;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n;
       k += int64_t{gridDim.x} * blockDim.x) {
    const double d = static_cast<double>(y[k] - ref[k]);
    acc += d * d;
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = part[0];
}

unsigned blocks_for(int64_t n, int threads, int64_t cap = 65536) {
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, cap);
  return static_cast<unsigned>(std::max<int64_t>(1, blocks));
}

void check_launch() { SHARDSERVE_CUDA_CHECK(cudaGetLastError()); }

// Rows per CTA of gptq_block: the largest power of two up to a warp whose block slice fits the
// 48 KiB of shared memory every launch gets without opting in.
int gptq_rows_per_cta(int64_t width) {
  int rows = 32;
  while (rows > 1 && static_cast<int64_t>(rows + 1) * width * 8 > (48 << 10)) rows /= 2;
  return rows;
}

}  // namespace

void convert_to_double(const float* src, double* dst, int64_t n, cudaStream_t stream) {
  convert_to_double_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(src, dst, n);
  check_launch();
}

void mirror_lower(double* a, int64_t n, cudaStream_t stream) {
  const dim3 threads(32, 8);
  const dim3 blocks(blocks_for(n, 32, 1u << 30), blocks_for(n, 8, 65535));
  mirror_lower_kernel<<<blocks, threads, 0, stream>>>(a, n);
  check_launch();
}

void gather_symmetric(const double* h, const int32_t* perm, double* out, int64_t n,
                      cudaStream_t stream) {
  const dim3 threads(32, 8);
  const dim3 blocks(blocks_for(n, 32, 1u << 30), blocks_for(n, 8, 65535));
  gather_symmetric_kernel<<<blocks, threads, 0, stream>>>(h, perm, out, n);
  check_launch();
}

void gptq_block(const GptqBlock& b, const KernelGrid& g, cudaStream_t stream) {
  const int rows = gptq_rows_per_cta(b.width);
  const std::size_t smem = static_cast<std::size_t>(rows + 1) * b.width * sizeof(double);
  const unsigned ctas = static_cast<unsigned>((b.out + rows - 1) / rows);
  gptq_block_kernel<<<ctas, rows, smem, stream>>>(b, g, rows);
  check_launch();
}

void awq_candidate(const float* w, const float* s, int64_t out, int64_t in, const KernelGrid& g,
                   float* wq, cudaStream_t stream) {
  const int64_t warps = out * (in / g.group_size);
  constexpr int kThreads = 256;
  const auto ctas = static_cast<unsigned>((warps * 32 + kThreads - 1) / kThreads);
  awq_candidate_kernel<<<ctas, kThreads, 0, stream>>>(w, s, out, in, g, wq);
  check_launch();
}

void squared_error_partials(const float* y, const float* ref, int64_t n, double* partials,
                            cudaStream_t stream) {
  squared_error_kernel<<<kSquaredErrorBlocks, kReduceThreads, 0, stream>>>(y, ref, n, partials);
  check_launch();
}

}  // namespace shardserve::quantize::cuda
