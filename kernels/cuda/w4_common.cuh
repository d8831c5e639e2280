#pragma once
// Internal to the two W4A16 kernel files (quant_gemm.cu: the decode kernel, the dequantize
// kernel; quant_gemm_tc.cu: the tiled tensor-core GEMM): the device helpers both use to turn
// packed codes into tensor-core operands, and the two small host-side passes around them.
//
// The arithmetic both kernels share: A operand register p of a k16 step is the bf16 pair
// {code - zero} of two weights, made exactly (|code - zero| <= 15) by or-ing each nibble into
// the bf16 bit pattern of 128 (128 + code, 128..143 exact) and subtracting {128 + zero}; the
// mma (mma.cuh) sums Σ (code - zero) · x in float32 per group, and the group's fp16 scale multiplies that
// sum once (acc += scale · d), so no weight is ever rounded to bf16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/quant_gemm.h"
#include "kernels/cuda/quant_layout.h"

namespace shardserve::kernels::cuda::w4 {

using bf16 = __nv_bfloat16;

template <typename Out>
__device__ __forceinline__ Out to_out(float v);
template <>
__device__ __forceinline__ float to_out<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 to_out<bf16>(float v) { return __float2bfloat16_rn(v); }

// meta word = {fp16 scale (low half), bf16 of 128 + zero (high half, 0x4300 | zero: the zero is an
// integer 0..15)}: the high half is the subtrahend of codes_to_operand as it stands.
__device__ __forceinline__ float meta_scale(uint32_t m) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(m & 0xFFFFu)));
}
// {128 + zero, 128 + zero} as a bf16 pair: the high half twice (one PRMT).
__device__ __forceinline__ uint32_t meta_zero_pair(uint32_t m) { return __byte_perm(m, 0, 0x3232); }
// The zero as a float (0..15).
__device__ __forceinline__ float meta_zero(uint32_t m) { return static_cast<float>((m >> 16) & 0xFu); }

__device__ __forceinline__ uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
  __nv_bfloat162 x = *reinterpret_cast<__nv_bfloat162*>(&a);
  const __nv_bfloat162 y = *reinterpret_cast<__nv_bfloat162*>(&b);
  x = __hsub2(x, y);
  return *reinterpret_cast<uint32_t*>(&x);
}
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  __nv_bfloat162 x = *reinterpret_cast<__nv_bfloat162*>(&a);
  const __nv_bfloat162 y = *reinterpret_cast<__nv_bfloat162*>(&b);
  x = __hmul2(x, y);
  return *reinterpret_cast<uint32_t*>(&x);
}

// The A operand of one k16 step from one 32-bit code word (quant_layout.h's nibble order):
// registers 0, 2 hold row g (zero pair z_lo), registers 1, 3 row g + 8 (z_hi).
// (w & 0x000F000F) | 0x43004300 is one LOP3 (the compiler emits an AND and an OR for it, and
// this conversion is most of the decode kernel's instructions).
__device__ __forceinline__ uint32_t nibbles_to_bf16_pair(uint32_t w) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(w), "n"(0x000F000F), "r"(0x43004300));
  return r;
}

__device__ __forceinline__ void codes_to_operand(uint32_t word, uint32_t z_lo, uint32_t z_hi,
                                                 uint32_t (&a)[4]) {
#pragma unroll
  for (int p = 0; p < 4; ++p) a[p] = nibbles_to_bf16_pair(word >> (4 * p));
  a[0] = bf16x2_sub(a[0], z_lo);
  a[1] = bf16x2_sub(a[1], z_hi);
  a[2] = bf16x2_sub(a[2], z_lo);
  a[3] = bf16x2_sub(a[3], z_hi);
}

// The rounded-weights arithmetic (the tiled kernel's W4TcArithmetic::kBf16Weights, the dense
// path's numbers up to the scale's own rounding to bf16): codes_to_operand's exact code - zero
// times the rows' bf16 scale pairs {bf16(scale), bf16(scale)} (pack_bf16), rounded once to bf16.
__device__ __forceinline__ void scale_operand(uint32_t s_lo, uint32_t s_hi, uint32_t (&a)[4]) {
  a[0] = bf16x2_mul(a[0], s_lo);
  a[1] = bf16x2_mul(a[1], s_hi);
  a[2] = bf16x2_mul(a[2], s_lo);
  a[3] = bf16x2_mul(a[3], s_hi);
}

// The cp.async copies that bring one 64-column k tile into a shared-memory stage for the tiled
// kernels (quant_gemm_tc.cu, quant_gemm_wgmma.cu), each thread's slots fixed before the main
// loop, so a tile costs an add and a cp.async per slot (rebuilt per tile they were ~70 of 163
// instructions per code tile, run 27):
//   codes: the CTA's kRowTiles code tiles of the k tile, 512 bytes each as laid out (chunk c =
//     tid + i * kThreads at stage offset c * 16; zeros past the last row tile);
//   x: kBatch rows x 128 bytes from row batch0, 16-byte chunk q of row r at stage offset x_offset
//     + r * 128 + ((q ^ (r & 7)) << 4) (the swizzle both kernels read: the 8 rows of an ldmatrix
//     phase in distinct banks, and wgmma's 128-byte swizzle); zeros past row m. kThreads is a
//     multiple of 64, so a slot's chunk and swizzle do not depend on i; below kThreads / 8 rows
//     the threads past them copy no x.
template <int kThreads, int kRowTiles, int kBatch>
struct TileCopies {
  static_assert(kThreads % 64 == 0 && kRowTiles * 32 % kThreads == 0);
  static constexpr int kCode = kRowTiles * 32 / kThreads;
  static constexpr int kX = (kBatch * 8 + kThreads - 1) / kThreads;
  static_assert(kBatch * 8 < kThreads || kX * kThreads == kBatch * 8);
  const uint4* code_src[kCode];
  int code_bytes[kCode];
  const bf16* x_src[kX];
  int x_bytes[kX];
  uint32_t code_dst0, x_dst0;
  bool x_copier;

  // codes: the weight's tiles; rt_block, row_tiles: the CTA's first row tile and the weight's
  // count; KT: k tiles per row tile; x: bf16 [m, k]; x_offset: where a stage's x tile begins.
  __device__ __forceinline__ TileCopies(int tid, const uint4* codes, int rt_block, int row_tiles,
                                        int KT, const bf16* x, int batch0, int m, int k,
                                        uint32_t x_offset) {
#pragma unroll
    for (int i = 0; i < kCode; ++i) {
      const int c = tid + i * kThreads, rt = rt_block + c / 32;
      code_bytes[i] = rt < row_tiles ? 16 : 0;
      code_src[i] = codes + int64_t{rt < row_tiles ? rt : 0} * KT * 32 + c % 32;
    }
#pragma unroll
    for (int i = 0; i < kX; ++i) {
      const int b = batch0 + (tid + i * kThreads) / 8;
      x_bytes[i] = b < m ? 16 : 0;
      x_src[i] = x + int64_t{b < m ? b : 0} * k + (tid % 8) * 8;
    }
    code_dst0 = tid * 16;
    x_dst0 = x_offset + (tid / 8) * 128 + (((tid % 8) ^ ((tid / 8) % 8)) << 4);
    x_copier = kBatch * 8 >= kThreads || tid < kBatch * 8;
  }
  // Tile kt into the stage at shared address `stage`.
  __device__ __forceinline__ void load(uint32_t stage, int kt) const {
#pragma unroll
    for (int i = 0; i < kCode; ++i) {
      ptx::cp_async16(stage + code_dst0 + i * kThreads * 16, code_src[i] + kt * 32,
                      code_bytes[i]);
    }
    if (!x_copier) return;
#pragma unroll
    for (int i = 0; i < kX; ++i) {
      ptx::cp_async16(stage + x_dst0 + i * (kThreads / 8) * 128, x_src[i] + kt * 64, x_bytes[i]);
    }
  }
};

// Host side, defined in quant_gemm.cu.
// y[b * ldy + j] = Σ_s partial[s][b][j] in split order (deterministic).
// partial: float [splits, m, n]; y: Out [m, ldy]. Out = float or bf16.
template <typename Out>
cudaError_t reduce_splits(const float* partial, int splits, int m, int64_t n, Out* y,
                          int64_t ldy, cudaStream_t stream);

// Launches one of the tiled kernels (quant_gemm_tc.cu, quant_gemm_wgmma.cu: the same
// parameters) on grid (row blocks, batch blocks, K splits) with smem_bytes of dynamic shared
// memory, then, over several splits, the split sums. Above 48 KB a kernel's dynamic shared
// memory must be allowed explicitly (not a stream operation: legal while a graph is being
// captured).
template <typename Out, typename Kernel>
cudaError_t launch_tiled(Kernel* kernel, dim3 grid, int threads, int smem_bytes, int kt_per_split,
                         const bf16* x, int64_t m, const W4Weights& w, Out* y, int64_t ldy,
                         float* partial, cudaStream_t stream) {
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (err != cudaSuccess) return err;
  kernel<<<grid, threads, smem_bytes, stream>>>(
      x, static_cast<int>(m), reinterpret_cast<const uint4*>(w.codes), w.meta,
      static_cast<int>(w.n), static_cast<int>(w.k), static_cast<int>(w.group_size),
      static_cast<int>(w.groups()), static_cast<int>(w4_padded_rows(w.n) / kW4TileRows),
      kt_per_split, y, ldy, partial);
  err = cudaGetLastError();
  if (err != cudaSuccess || grid.z == 1) return err;
  return reduce_splits<Out>(partial, static_cast<int>(grid.z), static_cast<int>(m), w.n, y, ldy,
                            stream);
}

// xp[b][c] = x[b][perm[c]] (act-order: x into stored-column order). x, xp: bf16 [m, k].
cudaError_t permute_columns(const bf16* x, const int32_t* perm, int64_t m, int64_t k, bf16* xp,
                            cudaStream_t stream);

}  // namespace shardserve::kernels::cuda::w4
