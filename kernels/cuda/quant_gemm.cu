// W4A16: 4-bit group-quantized weights times bf16 activations (layout: quant_gemm.h and
// quant_layout.h).
//
// Memory layout read here:
//   codes: tiles of 16 rows x 64 stored columns, 512 bytes each, row tile by row tile; lane l of
//     a warp reads the 16 bytes at l * 16 of a tile = its A operands of the tile's 4 k16 steps
//     of mma.sync.m16n8k16 (quant_layout.h gives the nibble order);
//   meta [n_padded, groups] uint32 = {fp16 scale, bf16 128 + zero} (w4_common.cuh);
//   perm [k] (or none): stored column c multiplies x[:, perm[c]] (x is gathered into the
//     workspace first: w4_permute_kernel).
//
// Decode kernel (w4_decode_kernel<NB, Out>: up to 8 * NB rows of x per pass, NB = 1 or 2):
//   grid (row tiles / 4, K splits); block = 4 warps over 4 consecutive row tiles and one K range
//   of the split's tiles; one barrier (after x is staged), none in the loop.
//   0. The kernel is launched as a programmatic dependent of the one before it in the stream
//      (dependent_launch.cuh; so are the norm, SiLU, attention and reduction kernels around it):
//      it starts its weights' copies (meta and the first code chunks), then waits for that
//      kernel, then stages x. So codes and meta must be complete before the kernel ahead of it
//      starts (true of weights loaded or made before the first forward pass).
//   1. The block copies its K range of x, m rows, into shared memory (cp.async; rows padded by
//      16 bytes so the 8 rows an ldmatrix reads fall in distinct banks); B rows past m read row
//      0 (their output columns are never stored). Each warp copies beside it the meta words of
//      its 16 rows for the split's groups, [group][8][2] (rows g and g + 8 side by side: one
//      8-byte read per lane and group), so that no global load is waited for inside the loop.
//   2. Each warp streams its row tile's code tiles (contiguous in memory for its K range)
//      through a private ring of kStages chunks of kChunkTiles tiles in shared memory: lane 0
//      issues one bulk (TMA) copy per chunk, completing on the stage's mbarrier, kStages - 1
//      chunks (4 KB) in flight. Lane l then reads its 16 bytes at l * 16 of each tile (its A
//      operands; conflict-free). Neither this ring nor the per-lane cp.async ring before it
//      (runs 11-12) was faster than the register pipeline they replaced, at any grid size: the
//      kernel is issue-bound (run 13), not short of loads in flight. The bulk copies stay for
//      their cost: one instruction per 4 tiles for the warp, not one per lane and tile, and no
//      registers held by loads in flight.
//   3. Per k16 step: (word >> 4p) & 0x000F000F | 0x43004300 (one LOP3) makes A register p the
//      bf16 pair {128 + code, 128 + code} (exact: 128..143); one bf16x2 subtraction of
//      {128 + zero} (meta's high half, twice) gives code - zero exactly (|code - zero| <= 15).
//      B = x[8 batch rows][16 columns] comes from shared memory by ldmatrix (one .x4 per two k16
//      steps and 8 rows). One mma per 8 batch rows accumulates Σ (code - zero) · x in float32
//      for the group.
//   4. At each group boundary the group sum is scaled by the rows' fp16 scales into the
//      float32 accumulators: acc += scale · Σ (code - zero) · x. With groups of 128 columns
//      (kGroupTiles = 2: the checkpoints' format) a ring chunk is exactly two groups, so the
//      boundaries are fixed in the unrolled chunk and nothing is tested per tile; any other
//      group size tracks the boundary by column, tested at even k16 steps (boundaries are
//      multiples of 32 columns). The ring's stage and phase are counted, not divided out, and
//      x's ldmatrix addresses are one base plus immediates: run 30's profile had ~45 of 100
//      instructions per tile in such bookkeeping. (Applying the
//      zero once per group instead, through x group sums computed in the prologue, saved the 16
//      subtractions per tile but ran 27 % slower, run 15: the prologue's sums and second barrier
//      cost more; reverted.)
//   5. A warp writes its 16 rows x 8 NB batch columns to y (one split) or to the split's partial
//      sums [split, m, n], which w4_reduce_kernel adds in split order (deterministic).
//   Splits: enough warps for `warps_per_sm` per multiprocessor (the benchmark sweeps it), each
//   warp at least kStages tiles long, the block within kMaxSmemBytes of shared memory.
//
// Dequantize kernel (the dense path): one warp per code tile, decoded through shared memory into
// full 128-byte row segments of dense[row][perm[c]] = bf16(scale * (code - zero)); then cuBLASLt
// does the product on the tensor cores (quant_gemm.cc).
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/quant_layout.h"
#include "kernels/cuda/w4_common.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kChunkTiles = 4;  // code tiles per bulk copy (2 KB)
// Chunks in a warp's ring (kStages - 1 in flight). 3, not 4: the smaller ring lets 7 blocks
// (28 warps) share a multiprocessor instead of 5, 183 -> 176 us per 70B layer at batch 1 (run 22);
// measured again once the kernel waited on the ring (run 35): 4 stages, 149.7 -> 152.8 us.
constexpr int kStages = 3;
constexpr int kStageBytes = kChunkTiles * static_cast<int>(kW4TileBytes);
constexpr int kRingBytes = kWarpsPerBlock * kStages * kStageBytes;  // 24 KB
constexpr int kBarrierBytes = kWarpsPerBlock * kStages * 8;
constexpr int kXRowPad = 16;  // bytes after each staged x row: rows 16 bytes apart mod 128
// A block's shared memory at most: the default dynamic limit (4 blocks = 16 warps per
// multiprocessor at worst, 64 KB of codes in flight).
constexpr int kMaxSmemBytes = 48 * 1024;

using ptx::bulk_copy_to_shared;
using ptx::cp_async16;
using ptx::cp_async4;
using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ldmatrix_x4;
using ptx::mbarrier_arrive_expect_tx;
using ptx::mbarrier_init;
using ptx::mbarrier_init_fence;
using ptx::mbarrier_wait;
using ptx::mma_bf16;
using ptx::smem_address;
using w4::meta_scale;
using w4::meta_zero_pair;
using w4::to_out;

// Groups a split of kt_per_split tiles can touch (it need not start on a group boundary).
__host__ __device__ inline int decode_meta_groups(int64_t kt_per_split, int64_t group_size) {
  return static_cast<int>((kt_per_split * kW4TileCols + group_size - 1) / group_size) + 1;
}
// Shared memory of a block: the rings [warp][stage], their mbarriers [warp][stage], the meta
// [warp][split group][8][2] (uint32: rows g and g + 8 of the warp's row tile side by side, one
// 8-byte read per lane), x [m_valid][x_row_bytes].
__host__ __device__ inline int decode_meta_bytes(int64_t kt_per_split, int64_t group_size) {
  return kWarpsPerBlock * decode_meta_groups(kt_per_split, group_size) * kW4TileRows * 4;
}
__host__ __device__ inline int decode_smem_bytes(int m_valid, int64_t kt_per_split,
                                                 int64_t group_size) {
  return kRingBytes + kBarrierBytes + decode_meta_bytes(kt_per_split, group_size) +
         m_valid * static_cast<int>(kt_per_split * kW4TileCols * 2 + kXRowPad);
}

// x: bf16 [m_valid, k] (stored-column order, rows 16-byte aligned); codes: tiles
// (quant_layout.h) as uint4; meta [n_padded, groups]; y: Out [m_valid, ldy] when gridDim.y == 1,
// else partial float [gridDim.y, m_valid, n].
// kGroupTiles: 2 = groups of 128 columns and every split starting on a group boundary with an
// even tile count (the launcher's choice for the g128 checkpoints), so each ring chunk is two
// whole groups and the loop has no boundary test; 0 = any group size (a multiple of 32), the
// boundary found by column.
template <int NB, typename Out, int kGroupTiles>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
w4_decode_kernel(const bf16* __restrict__ x, int m_valid, const uint4* __restrict__ codes,
                 const uint32_t* __restrict__ meta, int64_t n, int64_t k, int64_t group_size,
                 int64_t groups, int64_t row_tiles, int64_t kt_per_split, Out* __restrict__ y,
                 int64_t ldy, float* __restrict__ partial) {
  static_assert(kGroupTiles == 0 || kGroupTiles * 2 == kChunkTiles);
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t split = blockIdx.y, splits = gridDim.y;
  const int64_t rt = int64_t{blockIdx.x} * kWarpsPerBlock + warp;
  const int64_t KT = k / kW4TileCols;
  const int64_t kt0 = split * kt_per_split;
  const int tiles_here = static_cast<int>(min(KT, kt0 + kt_per_split) - kt0);
  const int x_row_bytes = static_cast<int>(kt_per_split * kW4TileCols * 2) + kXRowPad;
  uint32_t* const meta_all = reinterpret_cast<uint32_t*>(smem + kRingBytes + kBarrierBytes);
  const int meta_warp_words = decode_meta_groups(kt_per_split, group_size) * kW4TileRows;
  uint32_t* meta_s = meta_all + warp * meta_warp_words;
  unsigned char* xs = reinterpret_cast<unsigned char*>(meta_all + kWarpsPerBlock * meta_warp_words);
  const bool active = rt < row_tiles;
  const uint32_t ring = smem_address(smem) + warp * (kStages * kStageBytes);
  const unsigned char* ring_ptr = smem + warp * (kStages * kStageBytes) + lane * 16;
  const uint32_t bars = smem_address(smem + kRingBytes) + warp * (kStages * 8);
  const uint4* src = codes + ((active ? rt : 0) * KT + kt0) * 32;  // this warp's first tile
  const int chunks = (tiles_here + kChunkTiles - 1) / kChunkTiles;
  // Lane 0 of a warp copies chunk c (kChunkTiles tiles, fewer at the end) into ring stage st.
  auto issue = [&](int c, int st) {
    const uint32_t bytes =
        static_cast<uint32_t>(min(kChunkTiles, tiles_here - c * kChunkTiles)) * kW4TileBytes;
    const uint32_t bar = bars + st * 8;
    mbarrier_arrive_expect_tx(bar, bytes);
    bulk_copy_to_shared(ring + st * kStageBytes, src + c * kChunkTiles * 32, bytes, bar);
  };

  // The split's groups: [first_group, first_group + split_groups).
  const int gs = static_cast<int>(group_size);
  const int first_group = static_cast<int>(kt0 * kW4TileCols / group_size);
  const int split_groups =
      static_cast<int>(((kt0 + tiles_here) * kW4TileCols - 1) / group_size) + 1 - first_group;

  // 1. The weights first: each warp's meta for the split by cp.async and the ring's first
  // chunks; then, after the wait for the kernel ahead, x (this block's K range, m_valid rows).
  // (Loaded from global memory in the loop, one group ahead, the meta words stalled the warps
  // on the long scoreboard: run 19's top stall.) Lane l copies row l % 16 of the warp's tile,
  // groups l / 16, l / 16 + 2, ...: one 4-byte copy and two additions per iteration. (A loop
  // over the 16 rows with the lanes over the groups left most lanes idle at ~10 groups a split
  // and cost ~40 instructions per code tile in the short qkv splits, run 20.) With fixed groups
  // the loop opens one group past the split's last (never used): its slot gets a real meta word
  // too (the last group's again where the split ends the matrix), not stale shared memory.
  if (active) {
    const int r = lane & 15;
    const uint32_t* msrc = meta + (rt * kW4TileRows + r) * groups;
    const uint32_t mdst = smem_address(meta_s + (r & 7) * 2 + (r >> 3));
    const int staged = split_groups + (kGroupTiles != 0 ? 1 : 0);
    for (int gl = lane >> 4; gl < staged; gl += 2) {
      cp_async4(mdst + gl * 64, msrc + min(first_group + gl, static_cast<int>(groups) - 1));
    }
  }
  if (active && lane == 0) {
    for (int st = 0; st < kStages; ++st) mbarrier_init(bars + st * 8, 1);
    mbarrier_init_fence();
    for (int c = 0; c < min(kStages - 1, chunks); ++c) issue(c, c);
  }
  // Only x comes from the kernel before this one: launched as its programmatic dependent
  // (dependent_launch.cuh), the block has started the weights' copies above while that kernel
  // finished.
  begin_dependent();
  {
    const int x_chunks = tiles_here * static_cast<int>(kW4TileCols / 8);  // 16 bytes each
    const bf16* xsrc = x + kt0 * kW4TileCols;
    for (int i = threadIdx.x; i < m_valid * x_chunks; i += blockDim.x) {
      const int r = i / x_chunks, c = i % x_chunks;
      cp_async16(smem_address(xs + r * x_row_bytes + c * 16), xsrc + r * k + c * 8);
    }
    cp_async_commit();
  }
  cp_async_wait<0>();  // x has landed (this thread's part) ...
  __syncthreads();     // ... and every thread's part
  if (!active) return;  // no copy of this warp is in flight, no barrier follows

  const int g = lane >> 2;
  const int64_t row0 = rt * kW4TileRows + g, row1 = row0 + 8;
  // ldmatrix lane roles: matrix j = lane / 8 (columns 8j..8j+7 of a 32-column half tile), batch
  // row 8 nb + lane % 8. Rows past m read row 0 instead: an mma's output column depends on its
  // B column alone, and those columns are never stored; so every lane's address advances by
  // the same immediate offsets (a zero row that stays put cost a multiply per ldmatrix).
  uint32_t xaddr[NB];
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    const int r = nb * 8 + (lane & 7);
    xaddr[nb] = smem_address(xs + (r < m_valid ? r : 0) * x_row_bytes + (lane >> 3) * 16);
  }
  float acc[NB][4], d[NB][4];
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[nb][i] = d[nb][i] = 0.0f;

  // Meta of the current group, rows g and g + 8, from the staged words. Indices in the loop are
  // 32-bit: 64-bit arithmetic doubled the instructions per code.
  const uint2* meta_g = reinterpret_cast<const uint2*>(meta_s) + g;  // [split group][8]
  int next_boundary = (first_group + 1) * gs;
  float s0, s1;
  uint32_t z0, z1;
  auto load_meta = [&] {
    const uint2 mg = *meta_g;
    s0 = meta_scale(mg.x);
    s1 = meta_scale(mg.y);
    z0 = meta_zero_pair(mg.x);
    z1 = meta_zero_pair(mg.y);
  };
  load_meta();
  // Group boundary: scale the finished group's sums, move to the next group's staged meta.
  auto close_group = [&] {
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      acc[nb][0] += s0 * d[nb][0];
      acc[nb][1] += s0 * d[nb][1];
      acc[nb][2] += s1 * d[nb][2];
      acc[nb][3] += s1 * d[nb][3];
      d[nb][0] = d[nb][1] = d[nb][2] = d[nb][3] = 0.0f;
    }
  };
  auto next_group = [&] {
    close_group();
    next_boundary += gs;
    meta_g += 8;
    load_meta();
  };
  int col = static_cast<int>(kt0 * kW4TileCols);  // for kGroupTiles == 0

  // Tile j of the stage at `stage` (this lane's 16 bytes), its x columns at xoff + j * 128 bytes
  // of the staged rows. Called with constant j: the offsets are immediates.
  auto tile = [&](const unsigned char* stage, int j, uint32_t xoff) {
    const uint4 q = *reinterpret_cast<const uint4*>(stage + j * kW4TileBytes);
    uint32_t b[NB][4][2];  // [8-row batch block][k16 step][register]
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t f[4];
        ldmatrix_x4(f, xaddr[nb] + xoff + static_cast<uint32_t>(j * 128 + h * 64));
        b[nb][2 * h][0] = f[0];
        b[nb][2 * h][1] = f[1];
        b[nb][2 * h + 1][0] = f[2];
        b[nb][2 * h + 1][1] = f[3];
      }
    }
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if constexpr (kGroupTiles == 0) {
        // Boundaries are multiples of 32 columns: only even steps can start a group.
        if ((s & 1) == 0 && col + 16 * s >= next_boundary) next_group();
      }
      const uint32_t word = s == 0 ? q.x : s == 1 ? q.y : s == 2 ? q.z : q.w;
      uint32_t a[4];
      w4::codes_to_operand(word, z0, z1, a);
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) mma_bf16(d[nb], a, b[nb][s][0], b[nb][s][1]);
    }
    if constexpr (kGroupTiles == 0) col += static_cast<int>(kW4TileCols);
  };

  // 2. The ring: chunk c sits in stage c % kStages with mbarrier phase (c / kStages) & 1, both
  // kept by counting (a division by 3 per chunk otherwise).
  int stage = 0;
  uint32_t phase = 0, xoff = 0;
  for (int c = 0; c < chunks; ++c) {
    // Refill the stage read in the previous iteration: every lane is done with it.
    __syncwarp();
    if (lane == 0 && c + kStages - 1 < chunks) {
      issue(c + kStages - 1, stage == 0 ? kStages - 1 : stage - 1);
    }
    mbarrier_wait(bars + stage * 8, phase);
    const unsigned char* st = ring_ptr + stage * kStageBytes;
    const int in_chunk = min(kChunkTiles, tiles_here - c * kChunkTiles);
    if constexpr (kGroupTiles != 0) {
      // Two whole groups (the last chunk may hold only the first).
      tile(st, 0, xoff);
      tile(st, 1, xoff);
      next_group();
      if (in_chunk == kChunkTiles) {
        tile(st, 2, xoff);
        tile(st, 3, xoff);
        next_group();
      }
    } else {
#pragma unroll
      for (int j = 0; j < kChunkTiles; ++j) {
        if (j >= in_chunk) break;
        tile(st, j, xoff);
      }
    }
    xoff += kChunkTiles * 128;
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
  if constexpr (kGroupTiles == 0) close_group();
  // c0, c1: row g, batch 2t, 2t + 1; c2, c3: row g + 8.
  const int t = lane & 3;
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
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
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
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
  const int64_t total = int64_t{m_valid} * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    float s = 0.0f;
    for (int p = 0; p < splits; ++p) s += partial[p * total + i];
    const int64_t m = i / n, row = i % n;
    y[m * ldy + row] = to_out<Out>(s);
  }
}

// One warp per code tile (16 rows x 64 stored columns; tiles taken in memory order, grid-stride):
// lane l = 4 g + t reads its 16 bytes at l * 16 (the warp reads the tile's 512 bytes in one
// coalesced load, the next tile's load issued before this one is decoded), decodes its 32 codes
// (rows g and g + 8, columns 16 s + 2 t + {0, 1, 8, 9} of each k16 step s) into the warp's
// 16 x 64 bf16 tile in shared memory, then the warp writes the tile out as 16-byte chunks, 4
// rows x 128 bytes per store instruction. (One thread per 8 columns of a row, reading 4 words 16
// bytes apart and dividing 64-bit indices for each, reached 1.9 TB/s: 1.16 ms of a 70B layer's
// 1.6 ms dense path at 16 rows, run 25.) Rows past n (the last tile's padding) are not written.
// With act order each value goes to dense[row][perm[c]] one by one instead (no tile in shared
// memory: the columns a tile holds are scattered over the row).
// Shared-memory tile rows are 72 bf16 (144 bytes) apart: the pair writes of a warp (rows g, 4-byte
// column t) fall in banks 4 g + t (distinct), and a quarter-warp's 16-byte reads are one row's
// contiguous 128 bytes.
constexpr int kDequantWarps = 8;
constexpr int kDequantRowStride = static_cast<int>(kW4TileCols) + 8;  // bf16 per smem tile row

// words: code tiles as uint4 [row_tiles * k / 64][32]; meta [n_padded, groups]; perm [k] or
// null; dense: bf16 [n, k].
__global__ void __launch_bounds__(kDequantWarps * 32)
w4_dequantize_kernel(const uint4* __restrict__ words, const uint32_t* __restrict__ meta,
                     const int32_t* __restrict__ perm, int n, int k, int group_size, int groups,
                     int64_t tiles, bf16* __restrict__ dense) {
  __shared__ __align__(16) bf16 tile_smem[kDequantWarps][kW4TileRows][kDequantRowStride];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int kt_count = k / static_cast<int>(kW4TileCols);
  bf16(*out)[kDequantRowStride] = tile_smem[warp];
  const int64_t stride = int64_t{gridDim.x} * kDequantWarps;
  int64_t tile = int64_t{blockIdx.x} * kDequantWarps + warp;
  uint4 next = tile < tiles ? __ldg(words + tile * 32 + lane) : uint4{};
  for (; tile < tiles; tile += stride) {
    const uint4 cur = next;
    if (tile + stride < tiles) next = __ldg(words + (tile + stride) * 32 + lane);
    const int rt = static_cast<int>(tile / kt_count), kt = static_cast<int>(tile % kt_count);
    const int row0 = rt * static_cast<int>(kW4TileRows);
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint32_t word = s == 0 ? cur.x : s == 1 ? cur.y : s == 2 ? cur.z : cur.w;
      const int col = kt * static_cast<int>(kW4TileCols) + 16 * s + 2 * t;
      // A k16 step never straddles a group (group sizes are multiples of 32).
      const int group = col / group_size;
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // row g + 8 h: nibbles h and h + 2
        const uint32_t mt = __ldg(meta + int64_t{row0 + g + 8 * h} * groups + group);
        const float scale = meta_scale(mt), zero = w4::meta_zero(mt);
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {  // columns col + 8 hi and col + 8 hi + 1
          const int p = h + 2 * hi;
          const float v0 = scale * (static_cast<float>((word >> (4 * p)) & 0xFu) - zero);
          const float v1 = scale * (static_cast<float>((word >> (4 * p + 16)) & 0xFu) - zero);
          if (perm == nullptr) {
            *reinterpret_cast<__nv_bfloat162*>(&out[g + 8 * h][16 * s + 2 * t + 8 * hi]) =
                __floats2bfloat162_rn(v0, v1);
          } else if (row0 + g + 8 * h < n) {
            bf16* dst = dense + int64_t{row0 + g + 8 * h} * k;
            dst[perm[col + 8 * hi]] = __float2bfloat16_rn(v0);
            dst[perm[col + 8 * hi + 1]] = __float2bfloat16_rn(v1);
          }
        }
      }
    }
    if (perm != nullptr) continue;
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = i * 4 + lane / 8, chunk = lane % 8;
      if (row0 + r < n) {
        *reinterpret_cast<uint4*>(dense + int64_t{row0 + r} * k + kt * kW4TileCols + chunk * 8) =
            *reinterpret_cast<const uint4*>(&out[r][chunk * 8]);
      }
    }
    __syncwarp();  // the tile is read out before the next one overwrites it
  }
}

// The grid of one pass of up to 8 * NB rows: K splits so that row tiles x splits gives about
// warps_per_sm warps per multiprocessor of an H200 (132), each split at least kStages tiles
// where k allows (as measured in run 14), and the block's shared memory within kMaxSmemBytes.
// Groups of 128 columns over an even number of tiles take the fixed-group kernel
// (kGroupTiles 2): its splits are an even number of tiles long, so each starts on a group.
struct DecodeShape {
  int nb;
  bool fixed_groups;
  int64_t row_tiles, splits, kt_per_split;
  int smem_bytes;
};

DecodeShape decode_shape(int64_t m, int64_t n, int64_t k, int64_t group_size, int warps_per_sm) {
  DecodeShape s{};
  s.nb = m <= 8 ? 1 : 2;
  s.row_tiles = w4_padded_rows(n) / kW4TileRows;
  const int64_t KT = k / kW4TileCols;
  s.fixed_groups = group_size == 2 * kW4TileCols && KT % 2 == 0;
  const int64_t step = s.fixed_groups ? 2 : 1;
  const int64_t target = int64_t{132} * warps_per_sm;
  int64_t splits = std::max<int64_t>(1, (target + s.row_tiles - 1) / s.row_tiles);
  splits = std::min(splits, std::max<int64_t>(1, KT / kStages));
  s.kt_per_split = ((KT + splits - 1) / splits + step - 1) / step * step;
  const int mv = static_cast<int>(m);
  while (s.kt_per_split > step &&
         decode_smem_bytes(mv, s.kt_per_split, group_size) > kMaxSmemBytes)
    s.kt_per_split -= step;
  s.splits = (KT + s.kt_per_split - 1) / s.kt_per_split;
  s.smem_bytes = decode_smem_bytes(mv, s.kt_per_split, group_size);
  return s;
}

constexpr int64_t kPassRows = 16;

// Bytes of the workspace: partial sums (when split) then, 16-byte aligned, the permuted x. Sized
// for the most splits any group size gives: the smallest group (32: the most meta per tile, so
// the shortest splits) or groups of 128 (fixed: splits of an even tile count).
std::size_t partial_floats(int64_t m, int64_t n, int64_t k, int warps_per_sm) {
  const int64_t rows = std::min(m, kPassRows);
  int64_t splits = 1;
  for (const int64_t group : {32, 128}) {
    splits = std::max(splits, decode_shape(rows, n, k, group, warps_per_sm).splits);
  }
  return splits > 1 ? std::size_t(splits) * rows * n : 0;
}
std::size_t permuted_offset(int64_t m, int64_t n, int64_t k, int warps_per_sm) {
  return (partial_floats(m, n, k, warps_per_sm) * 4 + 15) / 16 * 16;
}

template <int NB, typename Out>
cudaError_t launch_decode(const DecodeShape& s, const bf16* x, int m_valid, const W4Weights& w,
                          Out* y, int64_t ldy, float* partial, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.row_tiles + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>(s.splits));
  auto* kernel = s.fixed_groups ? &w4_decode_kernel<NB, Out, 2> : &w4_decode_kernel<NB, Out, 0>;
  return launch_dependent(kernel, grid, kWarpsPerBlock * 32,
                          static_cast<std::size_t>(s.smem_bytes), stream, x, m_valid,
                          reinterpret_cast<const uint4*>(w.codes), w.meta, w.n, w.k,
                          w.group_size, w.groups(), s.row_tiles, s.kt_per_split, y, ldy, partial);
}

template <typename Out>
cudaError_t gemv_any(const bf16* x, int64_t m, const W4Weights& w, Out* y, int64_t ldy,
                     void* workspace, int warps_per_sm, cudaStream_t stream) {
  auto* partial = static_cast<float*>(workspace);
  const bf16* xs = x;
  if (w.perm != nullptr) {
    auto* xp = reinterpret_cast<bf16*>(static_cast<char*>(workspace) +
                                       permuted_offset(m, w.n, w.k, warps_per_sm));
    const cudaError_t err = w4::permute_columns(x, w.perm, m, w.k, xp, stream);
    if (err != cudaSuccess) return err;
    xs = xp;
  }
  for (int64_t r0 = 0; r0 < m; r0 += kPassRows) {
    const int64_t rows = std::min<int64_t>(kPassRows, m - r0);
    const DecodeShape s = decode_shape(rows, w.n, w.k, w.group_size, warps_per_sm);
    const bf16* xr = xs + r0 * w.k;
    Out* yr = y + r0 * ldy;
    const int mv = static_cast<int>(rows);
    cudaError_t err = s.nb == 1 ? launch_decode<1, Out>(s, xr, mv, w, yr, ldy, partial, stream)
                                : launch_decode<2, Out>(s, xr, mv, w, yr, ldy, partial, stream);
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
  return launch_dependent(w4_permute_kernel, blocks, 256, 0, stream, x, perm, m, k, xp);
}

template <typename Out>
cudaError_t reduce_splits(const float* partial, int splits, int m, int64_t n, Out* y,
                          int64_t ldy, cudaStream_t stream) {
  const int64_t total = int64_t{m} * n;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 8));
  return launch_dependent(w4_reduce_kernel<Out>, blocks, 256, 0, stream, partial, splits, m, n, y,
                          ldy);
}
template cudaError_t reduce_splits<float>(const float*, int, int, int64_t, float*, int64_t,
                                          cudaStream_t);
template cudaError_t reduce_splits<bf16>(const float*, int, int, int64_t, bf16*, int64_t,
                                         cudaStream_t);

}  // namespace w4

namespace launch {

std::size_t w4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int warps_per_sm) {
  return permuted_offset(m, n, k, warps_per_sm) + std::size_t(m) * k * sizeof(bf16);
}

cudaError_t w4_gemv(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                    bool float_out, void* workspace, int warps_per_sm, cudaStream_t stream) {
  if (m == 0 || w.n == 0) return cudaSuccess;
  return float_out ? gemv_any<float>(x, m, w, static_cast<float*>(y), ldy, workspace,
                                     warps_per_sm, stream)
                   : gemv_any<bf16>(x, m, w, static_cast<bf16*>(y), ldy, workspace,
                                    warps_per_sm, stream);
}

cudaError_t w4_dequantize(const W4Weights& w, bf16* dense, cudaStream_t stream) {
  const int64_t tiles = w4_padded_rows(w.n) / kW4TileRows * (w.k / kW4TileCols);
  if (tiles == 0) return cudaSuccess;
  // Up to 8 blocks of 8 warps per multiprocessor, each warp then over several tiles.
  const int64_t blocks_for_all = (tiles + kDequantWarps - 1) / kDequantWarps;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(blocks_for_all, 132 * 8));
  w4_dequantize_kernel<<<blocks, kDequantWarps * 32, 0, stream>>>(
      reinterpret_cast<const uint4*>(w.codes), w.meta, w.perm, static_cast<int>(w.n),
      static_cast<int>(w.k), static_cast<int>(w.group_size), static_cast<int>(w.groups()), tiles,
      dense);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
