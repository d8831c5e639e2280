// W4A16: 4-bit group-quantized weights times bf16 activations (layout: quant_gemm.h).
//
// Memory layout read here, per output row j of the weight (n rows, k stored columns):
//   codes [j, k/2] bytes: stored column c in byte c/2 (low nibble when c is even); a lane's
//     16-byte load = one "chunk" of 32 consecutive codes = 4 words of 8 codes;
//   meta  [j, groups] uint32 = {fp16 scale, fp16 zero}; group_size % 32 == 0, so a chunk lies
//     in one group: one 4-byte meta load per chunk (4 lanes share it at g128);
//   perm  [k] (or none): stored column c multiplies x[:, perm[c]].
//
// Decode kernel (w4_gemv_kernel<M, Out>, M rows of x per pass, M in {1, 2, 4, 8}):
//   grid (row tiles, K splits); block = 8 warps; split s covers `split_chunks` chunks (32 or 64:
//   1024 or 2048 stored columns); a row tile is 16 * row_iters rows, each warp 2 rows at a time.
//   1. Stage x: the block gathers x[m, perm[k0 + e]] for its split into shared memory as
//      float32, laid out [m][quad q][chunk c][4] so that lane c's 4-float read of quad q is
//      one conflict-free LDS.128 (consecutive lanes, consecutive 16 bytes). Quad q of a chunk
//      holds its word q/2's codes {0,2,4,6} (even q) or {1,3,5,7} (odd q): the order in which a
//      word's nibbles come out of the two masks below. Each warp stages whole chunks, so the
//      chunk sums sx[m][c] = Σ x (for the zero-point term) come from one warp reduction.
//   2. Each lane takes chunks lane, lane + 32 of 2 rows: 2-4 independent 16-byte code loads in
//      flight per lane, issued before any arithmetic. Per word: lo = w & 0x0F0F0F0F and
//      hi = (w >> 4) & 0x0F0F0F0F hold 4 codes each, one per byte; a byte_perm against
//      0x4B000000 makes the float 2^23 + code and one subtraction the exact code (2 ops per
//      code, shared by the M rows); then one FMA per code and row against the staged x.
//      Per chunk and row: acc += scale * (Σ code·x − zero · Σ x) in float32, the CPU's formula.
//   3. Warp reduction of each row's accumulators; lane 0 writes y (one split) or the split's
//      partial sums [split, m, n] that w4_reduce_kernel adds in order (deterministic).
//   Bytes: codes + meta once per pass of 8 rows; x from L2 once per block.
//
// Dequantize kernel (prefill path): one thread per word of 8 codes: dense[j][perm[c]] =
// bf16(scale * (code - zero)); 16-byte stores when perm is the identity. cuBLASLt then does the
// product on the tensor cores (quant_gemm.cc).
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/vec.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = 2;
constexpr int kChunkCodes = 32;

// Chunks per K split: 64 (2048 columns) up to 4 rows, 32 at 8 rows, so that the staged x
// (M * split_chunks * 528 bytes) stays under the 48 KB of shared memory a block gets by default.
__host__ __device__ constexpr int split_chunks_for(int m) { return m >= 8 ? 32 : 64; }

template <typename Out>
__device__ __forceinline__ Out to_out(float v);
template <>
__device__ __forceinline__ float to_out<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 to_out<bf16>(float v) { return __float2bfloat16_rn(v); }

// Byte b of `bytes4` (a code 0..15) as the float 2^23 + code, minus 2^23: the exact code.
__device__ __forceinline__ float code_float(uint32_t bytes4, int b) {
  const uint32_t f = __byte_perm(bytes4, 0x4B000000u, 0x7440u + static_cast<uint32_t>(b));
  return __uint_as_float(f) - 8388608.0f;
}

// x: bf16 [m_valid, ldx]; codes [n, k/2]; meta [n, groups]; perm [k] or null;
// y: Out [m_valid, ldy] when gridDim.y == 1, else partial float [gridDim.y, m_valid, n].
// Dynamic shared memory: float [M][8][split_chunks][4] (x) + float [M][split_chunks] (sums).
template <int M, typename Out>
__global__ void __launch_bounds__(kThreads)
w4_gemv_kernel(const bf16* __restrict__ x, int64_t ldx, int m_valid,
               const uint8_t* __restrict__ codes, const uint32_t* __restrict__ meta,
               const int32_t* __restrict__ perm, int64_t n, int64_t k, int64_t group_size,
               int64_t groups, int row_iters, Out* __restrict__ y, int64_t ldy,
               float* __restrict__ partial) {
  // Compile-time split width: every shared-memory offset below is an immediate off one base.
  constexpr int split_chunks = split_chunks_for(M);
  extern __shared__ float4 smem4[];
  float4* xs = smem4;  // [M][8][split_chunks]
  float* sx = reinterpret_cast<float*>(smem4 + M * 8 * split_chunks);  // [M][split_chunks]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t total_chunks = k / kChunkCodes;
  const int64_t chunk0 = int64_t{blockIdx.y} * split_chunks;
  const int chunks = static_cast<int>(std::min<int64_t>(split_chunks, total_chunks - chunk0));
  const int64_t col0 = chunk0 * kChunkCodes;

  // 1. Stage x for this split (each warp pass = one whole chunk of one row m).
  const int per_m = split_chunks * kChunkCodes;
  for (int e = threadIdx.x; e < M * per_m; e += kThreads) {
    const int m = e / per_m, local = e % per_m;
    const int c = local / kChunkCodes, el = local % kChunkCodes;
    float v = 0.0f;
    if (m < m_valid && c < chunks) {
      const int64_t col = col0 + local;
      const int64_t src = perm != nullptr ? perm[col] : col;
      v = __bfloat162float(x[m * ldx + src]);
    }
    const int q = 2 * (el / 8) + (el & 1), r = (el % 8) >> 1;
    reinterpret_cast<float*>(xs + (m * 8 + q) * split_chunks + c)[r] = v;
    const float s = warp_sum(v);
    if (lane == 0) sx[m * split_chunks + c] = s;
  }
  __syncthreads();

  // 2-3. Rows: each warp 2 at a time, row_iters times.
  const int64_t tile_rows = int64_t{kWarps} * kRowsPerWarp * row_iters;
  for (int it = 0; it < row_iters; ++it) {
    const int64_t row0 = blockIdx.x * tile_rows + (int64_t{it} * kWarps + warp) * kRowsPerWarp;
    if (row0 >= n) break;
    float acc[kRowsPerWarp][M];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[i][m] = 0.0f;
    for (int cbase = 0; cbase < chunks; cbase += 64) {
      // Issue every load first: 2 rows x 2 chunks of 16 bytes.
      uint4 q[kRowsPerWarp][2];
      uint32_t mt[kRowsPerWarp][2];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int c = cbase + h * 32 + lane;
          const int64_t row = row0 + i;
          if (row < n && c < chunks) {
            const int64_t chunk = chunk0 + c;
            q[i][h] = __ldg(reinterpret_cast<const uint4*>(codes + row * (k / 2)) + chunk);
            mt[i][h] = __ldg(meta + row * groups + chunk * kChunkCodes / group_size);
          } else {
            q[i][h] = make_uint4(0, 0, 0, 0);
            mt[i][h] = 0;
          }
        }
      }
      // Rows out of range and chunks past the split were loaded as zero codes with a zero
      // scale: they add nothing, so no branch per row.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = cbase + h * 32 + lane;
        if (c >= chunks) continue;
        const float4* xc = xs + c;
        float d[kRowsPerWarp][M];
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
          for (int m = 0; m < M; ++m) d[i][m] = 0.0f;
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {
          float fl[kRowsPerWarp][4], fh[kRowsPerWarp][4];
#pragma unroll
          for (int i = 0; i < kRowsPerWarp; ++i) {
            const uint32_t word = wd == 0 ? q[i][h].x : wd == 1 ? q[i][h].y : wd == 2 ? q[i][h].z
                                                                                   : q[i][h].w;
            const uint32_t lo = word & 0x0F0F0F0Fu, hi = (word >> 4) & 0x0F0F0F0Fu;
#pragma unroll
            for (int b = 0; b < 4; ++b) {
              fl[i][b] = code_float(lo, b);
              fh[i][b] = code_float(hi, b);
            }
          }
          // Each staged x vector is read once and used for both rows.
#pragma unroll
          for (int m = 0; m < M; ++m) {
            const float4 xa = xc[(m * 8 + 2 * wd) * split_chunks];
            const float4 xb = xc[(m * 8 + 2 * wd + 1) * split_chunks];
#pragma unroll
            for (int i = 0; i < kRowsPerWarp; ++i) {
              d[i][m] += fl[i][0] * xa.x + fl[i][1] * xa.y + fl[i][2] * xa.z + fl[i][3] * xa.w;
              d[i][m] += fh[i][0] * xb.x + fh[i][1] * xb.y + fh[i][2] * xb.z + fh[i][3] * xb.w;
            }
          }
        }
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) {
          const __half2 sz = *reinterpret_cast<const __half2*>(&mt[i][h]);
          const float scale = __low2float(sz), zero = __high2float(sz);
#pragma unroll
          for (int m = 0; m < M; ++m) {
            acc[i][m] += scale * (d[i][m] - zero * sx[m * split_chunks + c]);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
#pragma unroll
      for (int m = 0; m < M; ++m) acc[i][m] = warp_sum(acc[i][m]);
    }
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int64_t row = row0 + i;
        if (row >= n) continue;
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m >= m_valid) continue;
          if (gridDim.y == 1) {
            y[m * ldy + row] = to_out<Out>(acc[i][m]);
          } else {
            partial[(int64_t{blockIdx.y} * m_valid + m) * n + row] = acc[i][m];
          }
        }
      }
    }
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

// One thread per word of 8 codes. codes [n, k/2]; dense bf16 [n, k].
__global__ void w4_dequantize_kernel(const uint8_t* __restrict__ codes,
                                     const uint32_t* __restrict__ meta,
                                     const int32_t* __restrict__ perm, int64_t n, int64_t k,
                                     int64_t group_size, int64_t groups, bf16* __restrict__ dense) {
  const int64_t words_per_row = k / 8, total = n * words_per_row;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / words_per_row, c0 = (i % words_per_row) * 8;
    const uint32_t w = __ldg(reinterpret_cast<const uint32_t*>(codes + row * (k / 2)) + i % words_per_row);
    const uint32_t mt = __ldg(meta + row * groups + c0 / group_size);
    const __half2 sz = *reinterpret_cast<const __half2*>(&mt);
    const float scale = __low2float(sz), zero = __high2float(sz);
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = scale * (static_cast<float>((w >> (4 * j)) & 0xFu) - zero);
    if (perm == nullptr) {
      store8(dense + row * k + c0, v);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) dense[row * k + perm[c0 + j]] = __float2bfloat16_rn(v[j]);
    }
  }
}

template <int M, typename Out>
cudaError_t launch_gemv(const bf16* x, int64_t ldx, int m_valid, const W4Weights& w, Out* y,
                        int64_t ldy, float* partial, int row_iters, int64_t splits,
                        cudaStream_t stream) {
  constexpr int split_chunks = split_chunks_for(M);
  const int64_t tile_rows = int64_t{kWarps} * kRowsPerWarp * row_iters;
  const dim3 grid(static_cast<unsigned>((w.n + tile_rows - 1) / tile_rows),
                  static_cast<unsigned>(splits));
  const std::size_t smem = std::size_t(M) * split_chunks * (8 * 16 + 4);
  w4_gemv_kernel<M, Out><<<grid, kThreads, smem, stream>>>(
      x, ldx, m_valid, w.codes, w.meta, w.perm, w.n, w.k, w.group_size, w.groups(), row_iters, y,
      ldy, partial);
  return cudaGetLastError();
}

// Rows per pass and the grid shape for m rows: the split is 64 chunks (2048 columns) up to 4
// rows, 32 chunks at 8 rows (shared memory stays under the 48 KB default); row tiles shrink
// until the grid has at least 4 blocks per multiprocessor of an H200 (132).
struct GemvShape {
  int rows_per_pass;
  int split_chunks;
  int row_iters;
  int64_t splits;
};

GemvShape gemv_shape(int64_t m, int64_t n, int64_t k) {
  GemvShape s{};
  s.rows_per_pass = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : 8;
  s.split_chunks = split_chunks_for(s.rows_per_pass);
  const int64_t chunks = k / kChunkCodes;
  s.splits = (chunks + s.split_chunks - 1) / s.split_chunks;
  s.row_iters = 4;
  while (s.row_iters > 1 &&
         (n + kWarps * kRowsPerWarp * s.row_iters - 1) / (kWarps * kRowsPerWarp * s.row_iters) *
                 s.splits < 4 * 132) {
    s.row_iters /= 2;
  }
  return s;
}

template <typename Out>
cudaError_t gemv_any(const bf16* x, int64_t m, const W4Weights& w, Out* y, int64_t ldy,
                     float* partial, cudaStream_t stream) {
  for (int64_t r0 = 0; r0 < m; r0 += 8) {
    const int64_t rows = std::min<int64_t>(8, m - r0);
    const GemvShape s = gemv_shape(rows, w.n, w.k);
    const bf16* xr = x + r0 * w.k;
    Out* yr = y + r0 * ldy;
    const int mv = static_cast<int>(rows);
    cudaError_t err;
    switch (s.rows_per_pass) {
      case 1: err = launch_gemv<1, Out>(xr, w.k, mv, w, yr, ldy, partial, s.row_iters, s.splits, stream); break;
      case 2: err = launch_gemv<2, Out>(xr, w.k, mv, w, yr, ldy, partial, s.row_iters, s.splits, stream); break;
      case 4: err = launch_gemv<4, Out>(xr, w.k, mv, w, yr, ldy, partial, s.row_iters, s.splits, stream); break;
      default: err = launch_gemv<8, Out>(xr, w.k, mv, w, yr, ldy, partial, s.row_iters, s.splits, stream); break;
    }
    if (err != cudaSuccess) return err;
    if (s.splits > 1) {
      const int64_t total = rows * w.n;
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 8));
      w4_reduce_kernel<Out><<<blocks, 256, 0, stream>>>(partial, static_cast<int>(s.splits), mv,
                                                        w.n, yr, ldy);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
  }
  return cudaSuccess;
}

}  // namespace

namespace launch {

std::size_t w4_gemv_partial_floats(int64_t m, int64_t n, int64_t k) {
  const GemvShape s = gemv_shape(std::min<int64_t>(m, 8), n, k);
  return s.splits > 1 ? std::size_t(s.splits) * std::min<int64_t>(m, 8) * n : 0;
}

cudaError_t w4_gemv(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                    bool float_out, float* partial, cudaStream_t stream) {
  if (m == 0 || w.n == 0) return cudaSuccess;
  return float_out ? gemv_any<float>(x, m, w, static_cast<float*>(y), ldy, partial, stream)
                   : gemv_any<bf16>(x, m, w, static_cast<bf16*>(y), ldy, partial, stream);
}

cudaError_t w4_dequantize(const W4Weights& w, bf16* dense, cudaStream_t stream) {
  const int64_t total = w.n * (w.k / 8);
  if (total == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 16));
  w4_dequantize_kernel<<<blocks, 256, 0, stream>>>(w.codes, w.meta, w.perm, w.n, w.k,
                                                   w.group_size, w.groups(), dense);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
