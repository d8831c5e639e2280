#pragma once
// Where each 4-bit code of a W4 weight sits in device memory (kernels/cuda/quant_gemm.h): the
// tensor-core decode kernel's operand order, shared by the host-side layout builder, the
// dequantize kernel and the tests (plain inline functions, compiled by both nvcc and g++).
//
// The weight [n, k] (stored columns, after the act-order permutation) is cut into tiles of
// 16 rows x 64 columns (rows padded to a multiple of 16 with zero codes). Tile (rt, kt) is 512
// contiguous bytes at ((rt * (k / 64)) + kt) * 512; inside it lane l = 4 g + t (g = l / 4,
// t = l % 4) owns 16 bytes at l * 16: one 32-bit word per k16 step s = 0..3 of the tile. Word s
// holds exactly the A operand of one mma.sync.m16n8k16 for that lane, as 8 nibbles:
//   nibble 0: (row g,     col 16s + 2t)      nibble 4: (row g,     col 16s + 2t + 1)
//   nibble 1: (row g + 8, col 16s + 2t)      nibble 5: (row g + 8, col 16s + 2t + 1)
//   nibble 2: (row g,     col 16s + 2t + 8)  nibble 6: (row g,     col 16s + 2t + 9)
//   nibble 3: (row g + 8, col 16s + 2t + 8)  nibble 7: (row g + 8, col 16s + 2t + 9)
// so (word >> 4p) & 0x000F000F puts A register p's two codes (low half, high half) in place.
#include <cstdint>

#if defined(__CUDACC__)
#define SHARDSERVE_HD __host__ __device__ __forceinline__
#else
#define SHARDSERVE_HD inline
#endif

namespace shardserve::kernels::cuda {

inline constexpr int64_t kW4TileRows = 16;
inline constexpr int64_t kW4TileCols = 64;
inline constexpr int64_t kW4TileBytes = kW4TileRows * kW4TileCols / 2;

SHARDSERVE_HD int64_t w4_padded_rows(int64_t n) { return (n + kW4TileRows - 1) / kW4TileRows * kW4TileRows; }

struct W4CodePos {
  int64_t byte;  // offset of the 32-bit word holding the code (a multiple of 4)
  int nibble;    // 0..7 within that word
};

// Position of stored column c of row r in a weight of k columns.
SHARDSERVE_HD W4CodePos w4_code_pos(int64_t r, int64_t c, int64_t k) {
  const int64_t rt = r / kW4TileRows, kt = c / kW4TileCols;
  const int rr = static_cast<int>(r % kW4TileRows), cc = static_cast<int>(c % kW4TileCols);
  const int s = cc / 16, c16 = cc % 16;
  const int g = rr % 8, row_hi = rr / 8, t = (c16 % 8) / 2, col_hi = c16 / 8, odd = c16 % 2;
  const int lane = g * 4 + t;
  const int64_t tile = rt * (k / kW4TileCols) + kt;
  return {tile * kW4TileBytes + lane * 16 + s * 4, odd * 4 + col_hi * 2 + row_hi};
}

// The inverse: row and stored column of nibble j of the word at byte offset `byte`.
SHARDSERVE_HD void w4_code_coords(int64_t byte, int j, int64_t k, int64_t* r, int64_t* c) {
  const int64_t tile = byte / kW4TileBytes;
  const int in_tile = static_cast<int>(byte % kW4TileBytes);
  const int lane = in_tile / 16, s = (in_tile % 16) / 4;
  const int g = lane / 4, t = lane % 4;
  const int odd = j / 4, col_hi = (j / 2) % 2, row_hi = j % 2;
  const int64_t kt_count = k / kW4TileCols;
  *r = (tile / kt_count) * kW4TileRows + g + 8 * row_hi;
  *c = (tile % kt_count) * kW4TileCols + 16 * s + 2 * t + 8 * col_hi + odd;
}

}  // namespace shardserve::kernels::cuda
