// W4A16: 4-bit group-quantized weights times bf16 activations (layout: quant_gemm.h and
// quant_layout.h).
//
// Memory layout read here:
//   codes: tiles of 16 rows x 64 stored columns, 512 bytes each, row tile by row tile; lane l of
//     a warp reads the 16 bytes at l * 16 of a tile = its A operands of the tile's 4 k16 steps
//     of mma.sync.m16n8k16 (quant_layout.h gives the nibble order);
//   meta [n_padded, groups] uint32 = {fp16 scale, fp16 zero};
//   perm [k] (or none): stored column c multiplies x[:, perm[c]] (x is gathered into the
//     workspace first: w4_permute_kernel).
//
// Decode kernel (w4_mma_kernel<NB, Out>: up to 8 * NB rows of x per pass, NB = 1 or 2):
//   one warp per (row tile, K split); 4 warps per block, no shared memory, no barriers.
//   1. Each lane issues the 16-byte code loads of the next 4 tiles (64 bytes in flight per lane,
//      2 KB per warp) before using any.
//   2. Per k16 step: (word >> 4p) & 0x000F000F | 0x43004300 makes A register p the bf16 pair
//      {128 + code, 128 + code} (exact: 128..143); one bf16x2 subtraction of {128 + zero} gives
//      code - zero exactly (|code - zero| <= 15). B = x[batch g][16 columns] comes straight from
//      global memory (L1/L2: x is tiny), zero for batch rows past m. One mma per 8 batch rows
//      accumulates Σ (code - zero) · x in float32 for the group.
//   3. At each group boundary (tracked by column, no division) the group sum is scaled by the
//      rows' fp16 scales into the float32 accumulators: acc += scale · Σ (code - zero) · x.
//   4. A warp writes its 16 rows x 8 NB batch columns to y (one split) or to the split's partial
//      sums [split, m, n], which w4_reduce_kernel adds in split order (deterministic).
//   Instruction count per 32 codes and lane: ~11 for the bf16 pairs, 4 (8) mma, 8 (16) 32-bit x
//   loads: far under the memory time at any batch <= 16 (the CUDA-core version before it spent
//   2 instructions per code on conversion and one FMA per code and batch row).
//
// Dequantize kernel (prefill path): one thread per 32-bit word (8 codes of 2 rows):
// dense[row][perm[c]] = bf16(scale * (code - zero)), bf16 pairs when perm is the identity; then
// cuBLASLt does the product on the tensor cores (quant_gemm.cc).
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/quant_layout.h"
#include "kernels/cuda/vec.cuh"
#include "kernels/cuda/w4_common.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kUnroll = 4;  // tiles whose loads are in flight per lane

using w4::meta_scale;
using w4::meta_zero_pair;
using w4::mma_bf16;
using w4::to_out;

// x: bf16 [m_valid, ldx] (stored-column order); codes: tiles (quant_layout.h) as uint4;
// meta [n_padded, groups]; y: Out [m_valid, ldy] when splits == 1, else
// partial float [splits, m_valid, n].
template <int NB, typename Out>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
w4_mma_kernel(const bf16* __restrict__ x, int64_t ldx, int m_valid,
              const uint4* __restrict__ codes, const uint32_t* __restrict__ meta, int64_t n,
              int64_t k, int64_t group_size, int64_t groups, int64_t row_tiles, int64_t splits,
              int64_t kt_per_split, Out* __restrict__ y, int64_t ldy, float* __restrict__ partial) {
  const int lane = threadIdx.x & 31;
  const int64_t item = int64_t{blockIdx.x} * kWarpsPerBlock + (threadIdx.x >> 5);
  if (item >= row_tiles * splits) return;  // the whole warp: no barrier follows
  const int64_t split = item / row_tiles, rt = item % row_tiles;
  const int64_t KT = k / kW4TileCols;
  const int64_t kt0 = split * kt_per_split, kt1 = std::min<int64_t>(KT, kt0 + kt_per_split);
  const int g = lane >> 2, t = lane & 3;
  const int64_t row0 = rt * kW4TileRows + g, row1 = row0 + 8;
  const uint4* tiles = codes + rt * KT * 32 + lane;

  const uint32_t* xrow[NB];
  bool xok[NB];
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    const int b = nb * 8 + g;
    xok[nb] = b < m_valid;
    xrow[nb] = reinterpret_cast<const uint32_t*>(x + (xok[nb] ? b : 0) * ldx) + t;
  }
  float acc[NB][4], d[NB][4];
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[nb][i] = d[nb][i] = 0.0f;

  // Inside the loop every index is 32-bit and every pointer advances by a constant (the loop
  // is issue-bound otherwise: 64-bit index arithmetic doubled the instructions per code).
  // Meta of the current group and, prefetched, of the next (boundaries are multiples of 32
  // columns and the loop steps by 16, so each boundary is met exactly and the group advances
  // by one).
  const int gs = static_cast<int>(group_size), last_group = static_cast<int>(groups - 1);
  int group = static_cast<int>(kt0 * kW4TileCols / group_size);
  int next_boundary = (group + 1) * gs;
  const uint32_t* meta0 = meta + row0 * groups;
  const uint32_t* meta1 = meta + row1 * groups;
  uint32_t m0 = __ldg(meta0 + group), m1 = __ldg(meta1 + group);
  uint32_t p0 = __ldg(meta0 + min(group + 1, last_group));
  uint32_t p1 = __ldg(meta1 + min(group + 1, last_group));
  float s0 = meta_scale(m0), s1 = meta_scale(m1);
  uint32_t z0 = meta_zero_pair(m0), z1 = meta_zero_pair(m1);

  const int tiles_here = static_cast<int>(kt1 - kt0);
  const uint4* tp = tiles + kt0 * 32;                 // this warp's first tile, this lane
  const uint32_t* xp[NB];                             // x words of this warp's first tile
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) xp[nb] = xrow[nb] + kt0 * (kW4TileCols / 2);
  int col = static_cast<int>(kt0 * kW4TileCols);

  // Software pipeline: the next 4 tiles' code loads are issued before the current 4 are used.
  uint4 q[kUnroll], qn[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) q[u] = u < tiles_here ? __ldg(tp + u * 32) : make_uint4(0, 0, 0, 0);
  for (int base = 0; base < tiles_here; base += kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      qn[u] = base + kUnroll + u < tiles_here ? __ldg(tp + (kUnroll + u) * 32)
                                              : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + u >= tiles_here) break;
      // This tile's B operands (x), all issued before its first product.
      uint32_t b[4][NB][2];
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
          b[s][nb][0] = xok[nb] ? __ldg(xp[nb] + u * 32 + s * 8) : 0u;
          b[s][nb][1] = xok[nb] ? __ldg(xp[nb] + u * 32 + s * 8 + 4) : 0u;
        }
      }
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        if (col >= next_boundary) {
          // Group boundary: scale the finished group's sums, move to the prefetched meta.
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            acc[nb][0] += s0 * d[nb][0];
            acc[nb][1] += s0 * d[nb][1];
            acc[nb][2] += s1 * d[nb][2];
            acc[nb][3] += s1 * d[nb][3];
            d[nb][0] = d[nb][1] = d[nb][2] = d[nb][3] = 0.0f;
          }
          ++group;
          next_boundary += gs;
          m0 = p0;
          m1 = p1;
          p0 = __ldg(meta0 + min(group + 1, last_group));
          p1 = __ldg(meta1 + min(group + 1, last_group));
          s0 = meta_scale(m0);
          s1 = meta_scale(m1);
          z0 = meta_zero_pair(m0);
          z1 = meta_zero_pair(m1);
        }
        col += 16;
        const uint32_t word = s == 0 ? q[u].x : s == 1 ? q[u].y : s == 2 ? q[u].z : q[u].w;
        uint32_t a[4];
        w4::codes_to_operand(word, z0, z1, a);
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) mma_bf16(d[nb], a, b[s][nb][0], b[s][nb][1]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) q[u] = qn[u];
    tp += kUnroll * 32;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) xp[nb] += kUnroll * (kW4TileCols / 2);
  }
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    acc[nb][0] += s0 * d[nb][0];
    acc[nb][1] += s0 * d[nb][1];
    acc[nb][2] += s1 * d[nb][2];
    acc[nb][3] += s1 * d[nb][3];
  }
  // c0, c1: row g, batch 2t, 2t + 1; c2, c3: row g + 8.
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = i < 2 ? row0 : row1;
      const int b = nb * 8 + 2 * t + (i & 1);
      if (row >= n || b >= m_valid) continue;
      if (splits == 1) {
        y[b * ldy + row] = to_out<Out>(acc[nb][i]);
      } else {
        partial[(split * m_valid + b) * n + row] = acc[nb][i];
      }
    }
  }
}

// xp[b][c] = x[b][perm[c]]. x: bf16 [m, k]; xp: bf16 [m, k].
__global__ void w4_permute_kernel(const bf16* __restrict__ x, const int32_t* __restrict__ perm,
                                  int64_t m, int64_t k, bf16* __restrict__ xp) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * k;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = i / k, c = i % k;
    xp[i] = x[b * k + perm[c]];
  }
}

// y[m, row] = Σ_s partial[s, m, row], in split order. partial float [splits, m_valid, n].
template <typename Out>
__global__ void w4_reduce_kernel(const float* __restrict__ partial, int splits, int m_valid,
                                 int64_t n, Out* __restrict__ y, int64_t ldy) {
  const int64_t total = int64_t{m_valid} * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    float s = 0.0f;
    for (int p = 0; p < splits; ++p) s += partial[p * total + i];
    const int64_t m = i / n, row = i % n;
    y[m * ldy + row] = to_out<Out>(s);
  }
}

// One thread per 8 consecutive stored columns of one row (16-byte stores of the dense row);
// the codes come from 4 words of the tile (the same words serve the row 8 apart: L1 hits).
// dense bf16 [n, k].
__global__ void w4_dequantize_kernel(const uint32_t* __restrict__ words,
                                     const uint32_t* __restrict__ meta,
                                     const int32_t* __restrict__ perm, int64_t n, int64_t k,
                                     int64_t group_size, int64_t groups, bf16* __restrict__ dense) {
  const int64_t chunks = k / 8, total = n * chunks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / chunks, c0 = (i % chunks) * 8;
    const uint32_t mt = __ldg(meta + row * groups + c0 / group_size);
    const float scale = meta_scale(mt);
    const float zero = __half2float(__ushort_as_half(static_cast<unsigned short>(mt >> 16)));
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; j += 2) {  // columns c, c + 1: nibbles p and p + 4 of one word
      const W4CodePos pos = w4_code_pos(row, c0 + j, k);
      const uint32_t w = __ldg(words + pos.byte / 4);
      v[j] = scale * (static_cast<float>((w >> (4 * pos.nibble)) & 0xFu) - zero);
      v[j + 1] = scale * (static_cast<float>((w >> (4 * pos.nibble + 16)) & 0xFu) - zero);
    }
    if (perm == nullptr) {
      store8(dense + row * k + c0, v);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) dense[row * k + perm[c0 + j]] = __float2bfloat16_rn(v[j]);
    }
  }
}

// The grid of one pass of up to 8 * NB rows: K splits so that row tiles x splits gives about
// 64 warps per multiprocessor of an H200 (132): about 3 waves of the 16-20 resident warps, so
// that the last wave's tail stays small; each split at least 4 tiles (one unrolled batch) where
// k allows.
struct MmaShape {
  int nb;
  int64_t row_tiles, splits, kt_per_split;
};

MmaShape mma_shape(int64_t m, int64_t n, int64_t k) {
  MmaShape s{};
  s.nb = m <= 8 ? 1 : 2;
  s.row_tiles = w4_padded_rows(n) / kW4TileRows;
  const int64_t KT = k / kW4TileCols;
  const int64_t target = 132 * 64;
  int64_t splits = std::max<int64_t>(1, (target + s.row_tiles - 1) / s.row_tiles);
  splits = std::min(splits, std::max<int64_t>(1, KT / kUnroll));
  s.kt_per_split = (KT + splits - 1) / splits;
  s.splits = (KT + s.kt_per_split - 1) / s.kt_per_split;
  return s;
}

constexpr int64_t kPassRows = 16;

// Bytes of the workspace: partial sums (when split) then, 16-byte aligned, the permuted x.
std::size_t partial_floats(int64_t m, int64_t n, int64_t k) {
  const MmaShape s = mma_shape(std::min(m, kPassRows), n, k);
  return s.splits > 1 ? std::size_t(s.splits) * std::min(m, kPassRows) * n : 0;
}
std::size_t permuted_offset(int64_t m, int64_t n, int64_t k) {
  return (partial_floats(m, n, k) * 4 + 15) / 16 * 16;
}

template <typename Out>
cudaError_t gemv_any(const bf16* x, int64_t m, const W4Weights& w, Out* y, int64_t ldy,
                     void* workspace, cudaStream_t stream) {
  auto* partial = static_cast<float*>(workspace);
  const bf16* xs = x;
  if (w.perm != nullptr) {
    auto* xp = reinterpret_cast<bf16*>(static_cast<char*>(workspace) + permuted_offset(m, w.n, w.k));
    const cudaError_t err = w4::permute_columns(x, w.perm, m, w.k, xp, stream);
    if (err != cudaSuccess) return err;
    xs = xp;
  }
  const auto* codes = reinterpret_cast<const uint4*>(w.codes);
  for (int64_t r0 = 0; r0 < m; r0 += kPassRows) {
    const int64_t rows = std::min<int64_t>(kPassRows, m - r0);
    const MmaShape s = mma_shape(rows, w.n, w.k);
    const bf16* xr = xs + r0 * w.k;
    Out* yr = y + r0 * ldy;
    const int mv = static_cast<int>(rows);
    const unsigned blocks =
        static_cast<unsigned>((s.row_tiles * s.splits + kWarpsPerBlock - 1) / kWarpsPerBlock);
    if (s.nb == 1) {
      w4_mma_kernel<1, Out><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
          xr, w.k, mv, codes, w.meta, w.n, w.k, w.group_size, w.groups(), s.row_tiles, s.splits,
          s.kt_per_split, yr, ldy, partial);
    } else {
      w4_mma_kernel<2, Out><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
          xr, w.k, mv, codes, w.meta, w.n, w.k, w.group_size, w.groups(), s.row_tiles, s.splits,
          s.kt_per_split, yr, ldy, partial);
    }
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    if (s.splits > 1) {
      err = w4::reduce_splits<Out>(partial, static_cast<int>(s.splits), mv, w.n, yr, ldy, stream);
      if (err != cudaSuccess) return err;
    }
  }
  return cudaSuccess;
}

}  // namespace

namespace w4 {

cudaError_t permute_columns(const bf16* x, const int32_t* perm, int64_t m, int64_t k, bf16* xp,
                            cudaStream_t stream) {
  const int64_t total = m * k;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 8));
  w4_permute_kernel<<<blocks, 256, 0, stream>>>(x, perm, m, k, xp);
  return cudaGetLastError();
}

template <typename Out>
cudaError_t reduce_splits(const float* partial, int splits, int m, int64_t n, Out* y,
                          int64_t ldy, cudaStream_t stream) {
  const int64_t total = int64_t{m} * n;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 8));
  w4_reduce_kernel<Out><<<blocks, 256, 0, stream>>>(partial, splits, m, n, y, ldy);
  return cudaGetLastError();
}
template cudaError_t reduce_splits<float>(const float*, int, int, int64_t, float*, int64_t,
                                          cudaStream_t);
template cudaError_t reduce_splits<bf16>(const float*, int, int, int64_t, bf16*, int64_t,
                                         cudaStream_t);

}  // namespace w4

namespace launch {

std::size_t w4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k) {
  return permuted_offset(m, n, k) + std::size_t(m) * k * sizeof(bf16);
}

cudaError_t w4_gemv(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                    bool float_out, void* workspace, cudaStream_t stream) {
  if (m == 0 || w.n == 0) return cudaSuccess;
  return float_out ? gemv_any<float>(x, m, w, static_cast<float*>(y), ldy, workspace, stream)
                   : gemv_any<bf16>(x, m, w, static_cast<bf16*>(y), ldy, workspace, stream);
}

cudaError_t w4_dequantize(const W4Weights& w, bf16* dense, cudaStream_t stream) {
  const int64_t total = w.n * (w.k / 8);
  if (total == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 16));
  w4_dequantize_kernel<<<blocks, 256, 0, stream>>>(reinterpret_cast<const uint32_t*>(w.codes),
                                                   w.meta, w.perm, w.n, w.k, w.group_size,
                                                   w.groups(), dense);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
