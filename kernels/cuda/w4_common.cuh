#pragma once
// Internal to the two W4A16 kernel files (quant_gemm.cu: the decode kernel, the dequantize
// kernel; quant_gemm_tc.cu: the tiled tensor-core GEMM): the device helpers both use to turn
// packed codes into tensor-core operands, and the two small host-side passes around them.
//
// The arithmetic both kernels share: A operand register p of a k16 step is the bf16 pair
// {code - zero} of two weights, made exactly (|code - zero| <= 15) by or-ing each nibble into
// the bf16 bit pattern of 128 (128 + code, 128..143 exact) and subtracting {128 + zero}; the
// mma sums Σ (code - zero) · x in float32 per group, and the group's fp16 scale multiplies that
// sum once (acc += scale · d), so no weight is ever rounded to bf16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardserve::kernels::cuda::w4 {

using bf16 = __nv_bfloat16;

template <typename Out>
__device__ __forceinline__ Out to_out(float v);
template <>
__device__ __forceinline__ float to_out<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 to_out<bf16>(float v) { return __float2bfloat16_rn(v); }

// meta word = {fp16 scale (low half), fp16 zero (high half)}.
__device__ __forceinline__ float meta_scale(uint32_t m) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(m & 0xFFFFu)));
}
// {128 + zero, 128 + zero} as a bf16 pair (zero is an integer 0..15 stored in fp16).
__device__ __forceinline__ uint32_t meta_zero_pair(uint32_t m) {
  const uint32_t z =
      static_cast<uint32_t>(__half2float(__ushort_as_half(static_cast<unsigned short>(m >> 16))));
  return (0x4300u | z) * 0x00010001u;
}

__device__ __forceinline__ uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
  __nv_bfloat162 x = *reinterpret_cast<__nv_bfloat162*>(&a);
  const __nv_bfloat162 y = *reinterpret_cast<__nv_bfloat162*>(&b);
  x = __hsub2(x, y);
  return *reinterpret_cast<uint32_t*>(&x);
}

// The A operand of one k16 step from one 32-bit code word (quant_layout.h's nibble order):
// registers 0, 2 hold row g (zero pair z_lo), registers 1, 3 row g + 8 (z_hi).
__device__ __forceinline__ void codes_to_operand(uint32_t word, uint32_t z_lo, uint32_t z_hi,
                                                 uint32_t (&a)[4]) {
#pragma unroll
  for (int p = 0; p < 4; ++p) a[p] = ((word >> (4 * p)) & 0x000F000Fu) | 0x43004300u;
  a[0] = bf16x2_sub(a[0], z_lo);
  a[1] = bf16x2_sub(a[1], z_hi);
  a[2] = bf16x2_sub(a[2], z_lo);
  a[3] = bf16x2_sub(a[3], z_hi);
}

// d += A · B for one mma.sync.m16n8k16 (bf16 in, float32 accumulate).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  // Not volatile: the product has no side effect, so the compiler may schedule the operand
  // loads of later steps ahead of it.
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Host side, defined in quant_gemm.cu.
// xp[b][c] = x[b][perm[c]] (act-order: x into stored-column order). x, xp: bf16 [m, k].
cudaError_t permute_columns(const bf16* x, const int32_t* perm, int64_t m, int64_t k, bf16* xp,
                            cudaStream_t stream);
// y[b * ldy + j] = Σ_s partial[s][b][j] in split order (deterministic).
// partial: float [splits, m, n]; y: Out [m, ldy]. Out = float or bf16.
template <typename Out>
cudaError_t reduce_splits(const float* partial, int splits, int m, int64_t n, Out* y,
                          int64_t ldy, cudaStream_t stream);

}  // namespace shardserve::kernels::cuda::w4
