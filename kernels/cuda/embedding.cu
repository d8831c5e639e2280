// Row copies: the vocabulary-parallel embedding lookup (bf16 table -> float32 residual stream),
// gathering rows for the LM head, and float32 -> bf16 conversion.
//
// Layout: table bf16 [shard_rows, dim] row-major, one token's embedding a contiguous row.
// Pipeline: one thread block per output row; each thread moves 8 elements per step (a 16-byte
// load of bf16) when dim is a multiple of 8, else one. Pure bandwidth: bytes = tokens * dim *
// (2 read + 4 written).
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/vec.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// table: [shard_rows, dim]; ids: [tokens]; out: [tokens, dim]. grid.x = tokens.
__global__ void embedding_kernel(const bf16* __restrict__ table, int64_t vocab_begin,
                                 int64_t shard_rows, int64_t dim, const int32_t* __restrict__ ids,
                                 float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(ids[t]) - vocab_begin;
  float* o = out + t * dim;
  const bool inside = row >= 0 && row < shard_rows;
  const bf16* src = table + (inside ? row : 0) * dim;
  if (dim % 8 == 0) {
    for (int64_t i = threadIdx.x * 8; i < dim; i += kThreads * 8) {
      float v[8];
      if (inside) {
        load8(src + i, v);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = 0.0f;
      }
      reinterpret_cast<float4*>(o + i)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(o + i)[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      o[i] = inside ? __bfloat162float(src[i]) : 0.0f;
    }
  }
}

// src: [*, dim]; indices: [rows]; dst: [rows, dim]. grid.x = rows.
__global__ void gather_rows_kernel(const bf16* __restrict__ src, int64_t dim,
                                   const int32_t* __restrict__ indices, bf16* __restrict__ dst) {
  const int64_t r = blockIdx.x;
  const bf16* s = src + static_cast<int64_t>(indices[r]) * dim;
  bf16* d = dst + r * dim;
  if (dim % 8 == 0) {
    for (int64_t i = threadIdx.x * 8; i < dim; i += kThreads * 8) {
      *reinterpret_cast<Bf16x8*>(d + i) = *reinterpret_cast<const Bf16x8*>(s + i);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) d[i] = s[i];
  }
}

// src, dst: [count]; grid-stride.
__global__ void float_to_bf16_kernel(const float* __restrict__ src, bf16* __restrict__ dst,
                                     int64_t count) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * kThreads) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}

}  // namespace

namespace launch {

cudaError_t embedding_lookup(const bf16* table, int64_t vocab_begin, int64_t shard_rows,
                             int64_t dim, const int32_t* ids, int64_t tokens, float* out,
                             cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  embedding_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(
      table, vocab_begin, shard_rows, dim, ids, out);
  return cudaGetLastError();
}

cudaError_t gather_rows(const bf16* src, int64_t dim, const int32_t* indices, int64_t rows,
                        bf16* dst, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  gather_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(src, dim, indices, dst);
  return cudaGetLastError();
}

cudaError_t convert_to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((count + kThreads - 1) / kThreads, 65536);
  float_to_bf16_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(src, dst, count);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
