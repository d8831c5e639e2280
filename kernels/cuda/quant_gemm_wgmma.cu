// W4A16 GEMM on Hopper's warpgroup products (wgmma): y[m, n] = x[m, k] · Ŵᵀ with weights rounded
// to bf16 (the arithmetic of W4TcArithmetic::kBf16Weights), for the batches where the tiled
// mma.sync kernel (quant_gemm_tc.cu) is latency-bound: its 16 x 8 products each wait on their
// own operand conversion with 8 warps per multiprocessor to cover it (docs/PERF.md, runs 35-37).
// A wgmma of 64 weight rows x 128 rows of x runs asynchronously, so the conversion of the next
// k16 step's weights runs under the current step's product.
//
// Memory layout read here (quant_gemm.h, quant_layout.h):
//   codes: tiles of 16 weight rows x 64 stored columns, 512 bytes each, row tile by row tile;
//     lane l's 16 bytes at l * 16 of a tile are its mma.m16n8k16 A operands for the tile's 4 k16
//     steps. wgmma's register A operand is that same per-warp operand (warp w of a warpgroup
//     holding rows 16 w .. 16 w + 15 of the 64), so the packed layout needs no change;
//   meta [n_padded, groups] {fp16 scale, bf16 128 + zero}; groups a multiple of 64 columns, so a
//     group boundary falls only at a k tile's start;
//   x bf16 [m, k] in stored-column order (an act-order x is gathered into the workspace first).
//
// Tiling: M of the product = weight rows, N = rows of x ("batch"). A CTA is 2 warpgroups over
// 256 weight rows (16 row tiles) x kBatch = 16, 32, 64 or 128 rows of x (the fewest that hold m,
// then blocks of 128: the wgmma's N); warpgroup wg owns weight rows
// [128 wg, 128 wg + 128) as two m64 products (j = 0, 1), its warp w the row tiles 8 wg + 4 j + w.
// grid = (row blocks, batch blocks, K splits); a split's partial sums go to the workspace
// [split, m, n] and w4::reduce_splits adds them in split order.
//
// Pipeline, per 64-column k tile, kStages deep in shared memory (cp.async, 16-byte chunks, all
// 256 threads copying):
//   stage = codes of the CTA's 16 row tiles (16 x 512 B, as laid out) | x tile kBatch x 128 B
//           in wgmma's 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r & 7), the tile
//           1024-byte aligned), rows past m zero-filled: the B operand's K-major layout, read by
//           descriptor, one k16 slice 32 bytes further per step.
//   Tile it waits for its own copies, fences them into the async proxy and syncs the CTA, then
//   refills the stage of tile it - 2 with tile it + kStages - 2: tile it - 2's products are
//   complete by then, since each thread keeps at most three groups of products in flight (some
//   of tile it - 1's steps at the sync) and every thread passed them before the sync.
//   Per k16 step s: the warp's 2 A operands are made from code word s in registers (bf16(scale)
//   · (code − zero), w4::codes_to_operand + w4::scale_operand) into buffer s % kABuffers,
//   fenced, two wgmma (one per m64) issued and committed as one group; then
//   wgmma_wait<kABuffers - 1>: the group that last read the next buffer is done, and up to
//   kABuffers steps' products stay queued while the warps convert (run 40's profile, with 2 at
//   kBatch 128, had a quarter of the stall samples on that wait; run 41, with 4: 10-13 % faster
//   from 128 to 1024 rows).
// Registers: 2 x kBatch / 2 accumulators, 4 x 2 x 4 A words, the tile's 2 code words (8), the
//   meta and the copy slots: ~230 at kBatch 128, one CTA of 8 warps per multiprocessor (121 KB
//   of shared memory at 5 stages); smaller batches leave room for 2 (Wg<kBatch>::kMinBlocks).
#include <algorithm>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/quant_layout.h"
#include "kernels/cuda/vec.cuh"
#include "kernels/cuda/w4_common.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kWarpgroups = 2;
constexpr int kThreads = kWarpgroups * 128;
constexpr int kBlockRowTiles = kWarpgroups * 8;  // 256 weight rows
constexpr int kStages = 5;
constexpr int kAhead = kStages - 2;               // tiles in flight ahead of the one computed
constexpr int kCodeStageBytes = kBlockRowTiles * static_cast<int>(kW4TileBytes);  // 8 KB
constexpr int kXRowBytes = static_cast<int>(kW4TileCols) * 2;                     // 128 B
static_assert(kCodeStageBytes % 1024 == 0);

// CTAs per multiprocessor a batch tile of this many rows is built for: 2 up to 64 rows (their
// registers allow it), else 1. The kernel's launch bounds and the grid's wave estimate.
constexpr int wgmma_min_blocks(int batch) { return batch <= 64 ? 2 : 1; }

// The batch tile: kBatch rows of x, the wgmma's N.
template <int kBatch>
struct Wg {
  static constexpr int kXStageBytes = kBatch * kXRowBytes;
  static constexpr int kStageBytes = kCodeStageBytes + kXStageBytes;  // x stays 1024-aligned
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024;     // + room to align the base
  static constexpr int kMinBlocks = wgmma_min_blocks(kBatch);
  // A operand buffers (k16 steps whose products may be in flight): 4, but 2 at kBatch 64, whose
  // two CTAs per multiprocessor leave 128 registers a thread (4 buffers spill there).
  static constexpr int kABuffers = kBatch == 64 ? 2 : 4;
  static_assert(kStageBytes % 1024 == 0);
};

using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ld_shared16;
using ptx::smem_address;

// x: bf16 [m, k] (stored-column order); codes: tiles as uint4; meta [n_padded, groups];
// y: Out [m, ldy] when gridDim.z == 1, else partial float [gridDim.z, m, n].
template <int kBatch, typename Out>
__global__ void __launch_bounds__(kThreads, Wg<kBatch>::kMinBlocks)
w4_wgmma_kernel(const bf16* __restrict__ x, int m, const uint4* __restrict__ codes,
                const uint32_t* __restrict__ meta, int n, int k, int group_size, int groups,
                int row_tiles, int kt_per_split, Out* __restrict__ y, int64_t ldy,
                float* __restrict__ partial) {
  using W = Wg<kBatch>;
  extern __shared__ __align__(1024) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp / 4, w = warp % 4;
  const int g = lane >> 2, t = lane & 3;
  const int KT = k / static_cast<int>(kW4TileCols);
  const int split = blockIdx.z;
  const int kt0 = split * kt_per_split, tiles = min(KT, kt0 + kt_per_split) - kt0;
  const int rt_block = blockIdx.x * kBlockRowTiles;
  const int batch0 = blockIdx.y * kBatch;
  const uint32_t smem_base = (smem_address(smem) + 1023u) & ~1023u;

  const w4::TileCopies<kThreads, kBlockRowTiles, kBatch> copies(
      tid, codes, rt_block, row_tiles, KT, x, batch0, m, k, kCodeStageBytes);
  auto load_stage = [&](int stage, int kt) { copies.load(smem_base + stage * W::kStageBytes, kt); };

  // This lane's meta rows: g and g + 8 of its row tiles 8 wg + 4 j + w (clamped into the padded
  // rows for a CTA past the last row tile; those results are never stored).
  int rt_of[2];
  const uint32_t* meta_row[2][2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    rt_of[j] = rt_block + wg * 8 + j * 4 + w;
    const int rt = min(rt_of[j], row_tiles - 1);
    meta_row[j][0] = meta + int64_t{rt * 16 + g} * groups;
    meta_row[j][1] = meta + int64_t{rt * 16 + g + 8} * groups;
  }
  // The group of the next tile to compute and where the one after it begins; the next group's
  // meta is loaded one group ahead.
  int group = kt0 * static_cast<int>(kW4TileCols) / group_size;
  int next_boundary = (group + 1) * group_size;
  int col = kt0 * static_cast<int>(kW4TileCols);
  uint32_t zero[2][2], scale_pair[2][2], next_meta[2][2];
  auto set_meta = [&](int j, int h, uint32_t mt) {
    const float scale = w4::meta_scale(mt);
    zero[j][h] = w4::meta_zero_pair(mt);
    scale_pair[j][h] = pack_bf16(scale, scale);
  };
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      set_meta(j, h, __ldg(meta_row[j][h] + group));
      next_meta[j][h] = __ldg(meta_row[j][h] + min(group + 1, groups - 1));
    }
  }

  constexpr int kAcc = kBatch / 2;
  float acc[2][kAcc];
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < kAcc; ++e) acc[j][e] = 0.0f;
  // The lane's code words of row tile 8 wg + 4 j + w within a stage.
  const uint32_t code_off[2] = {((wg * 8 + w) * 32 + lane) * 16u,
                                ((wg * 8 + 4 + w) * 32 + lane) * 16u};

#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < tiles) load_stage(s, kt0 + s);
    cp_async_commit();
  }
  uint32_t a[W::kABuffers][2][4];  // [buffer = k16 step s % kABuffers][m64 product j][register]
  for (int it = 0; it < tiles; ++it) {
    cp_async_wait<kAhead - 1>();
    ptx::fence_proxy_async();
    __syncthreads();
    if (it + kAhead < tiles) load_stage((it + kAhead) % kStages, kt0 + it + kAhead);
    cp_async_commit();

    const uint32_t st = smem_base + (it % kStages) * W::kStageBytes;
    const uint4 words[2] = {ld_shared16(st + code_off[0]), ld_shared16(st + code_off[1])};
    if (col >= next_boundary) {
      ++group;
      next_boundary += group_size;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          set_meta(j, h, next_meta[j][h]);
          next_meta[j][h] = __ldg(meta_row[j][h] + min(group + 1, groups - 1));
        }
      }
    }
    col += static_cast<int>(kW4TileCols);
    const uint64_t desc = ptx::wgmma_desc_k_major_sw128(st + kCodeStageBytes);
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      uint32_t(&as)[2][4] = a[s % W::kABuffers];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const uint32_t word =
            s == 0 ? words[j].x : s == 1 ? words[j].y : s == 2 ? words[j].z : words[j].w;
        w4::codes_to_operand(word, zero[j][0], zero[j][1], as[j]);
        w4::scale_operand(scale_pair[j][0], scale_pair[j][1], as[j]);
      }
      ptx::wgmma_fence();
      // + 32 bytes per k16 step: 2 in the descriptor's address field (bytes >> 4).
      ptx::wgmma_m64k16_rs<kBatch>(acc[0], as[0], desc + 2 * s);
      ptx::wgmma_m64k16_rs<kBatch>(acc[1], as[1], desc + 2 * s);
      ptx::wgmma_commit();
      ptx::wgmma_wait<W::kABuffers - 1>();
    }
  }
  ptx::wgmma_wait<0>();
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < kAcc; ++e) ptx::fence_operand(acc[j][e]);
  cp_async_wait<0>();  // no copy may be left in flight into a CTA's shared memory at exit

  // acc[j][4 nt + e]: weight row 16 rt + g (+ 8 for e >= 2), batch row 8 nt + 2 t + (e & 1).
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int row_lo = rt_of[j] * 16 + g;
#pragma unroll
    for (int nt = 0; nt < kBatch / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row_lo + (e >> 1) * 8;
        const int b = batch0 + nt * 8 + 2 * t + (e & 1);
        if (row >= n || b >= m) continue;
        const float v = acc[j][4 * nt + e];
        if (gridDim.z == 1) {
          y[b * ldy + row] = w4::to_out<Out>(v);
        } else {
          partial[(int64_t{split} * m + b) * n + row] = v;
        }
      }
    }
  }
}

// The grid of a call: the batch tile by m (the fewest of 16, 32, 64 rows that hold it, else
// blocks of 128), ceil(n_padded / 256) row blocks x ceil(m / batch) batch blocks; K splits (at
// least 8 k tiles each) where they shorten the estimated time, in units of one k tile of one
// CTA: ceil(CTAs x splits / resident CTAs) waves x tiles per split, plus the split sums' round
// trip (splits x m x n floats written and read at ~3 TB/s; a k tile takes ~0.55 µs: 8 KB of
// codes per resident CTA at the copy rate, or kBatch 128's products at the tensor rate). Run 40
// tried ~6 TB/s (the sums mostly within L2): 512 and 1024 rows went 4 % slower.
struct WgmmaShape {
  int batch, row_blocks, batch_blocks, splits, kt_per_split;
};

int wgmma_batch(int64_t m) { return m <= 16 ? 16 : m <= 32 ? 32 : m <= 64 ? 64 : 128; }

WgmmaShape wgmma_shape(int64_t m, int64_t n, int64_t k) {
  WgmmaShape s{};
  s.batch = wgmma_batch(m);
  const int64_t row_tiles = w4_padded_rows(n) / kW4TileRows;
  s.row_blocks = static_cast<int>((row_tiles + kBlockRowTiles - 1) / kBlockRowTiles);
  s.batch_blocks = static_cast<int>((m + s.batch - 1) / s.batch);
  const int64_t KT = k / kW4TileCols;
  const int64_t ctas = int64_t{s.row_blocks} * s.batch_blocks;
  const int64_t resident = 132 * wgmma_min_blocks(s.batch);
  double best = 0;
  int64_t best_splits = 1;
  for (int64_t splits = 1; splits <= std::max<int64_t>(1, std::min<int64_t>(8, KT / 8));
       ++splits) {
    const int64_t per = (KT + splits - 1) / splits;
    const double waves = static_cast<double>((ctas * splits + resident - 1) / resident);
    const double reduce_tiles = splits > 1 ? double(splits) * m * n * 8 / 3e12 / 0.55e-6 : 0.0;
    const double cost = waves * per + reduce_tiles;
    if (splits == 1 || cost < best) {
      best = cost;
      best_splits = splits;
    }
  }
  s.kt_per_split = static_cast<int>((KT + best_splits - 1) / best_splits);
  s.splits = static_cast<int>((KT + s.kt_per_split - 1) / s.kt_per_split);
  return s;
}

std::size_t wgmma_permuted_offset(int64_t m, int64_t n, int64_t k) {
  const WgmmaShape s = wgmma_shape(m, n, k);
  const std::size_t partial = s.splits > 1 ? std::size_t(s.splits) * m * n * 4 : 0;
  return (partial + 15) / 16 * 16;
}

template <int kBatch, typename Out>
cudaError_t launch_wgmma(const WgmmaShape& s, const bf16* x, int64_t m, const W4Weights& w,
                         Out* y, int64_t ldy, float* partial, cudaStream_t stream) {
  const dim3 grid(s.row_blocks, s.batch_blocks, s.splits);
  auto* kernel = &w4_wgmma_kernel<kBatch, Out>;
  return w4::launch_tiled<Out>(kernel, grid, kThreads, Wg<kBatch>::kSmemBytes, s.kt_per_split,
                               x, m, w, y, ldy, partial, stream);
}

template <typename Out>
cudaError_t wgmma_any(const bf16* x, int64_t m, const W4Weights& w, Out* y, int64_t ldy,
                      void* workspace, cudaStream_t stream) {
  const bf16* xs = x;
  if (w.perm != nullptr) {
    auto* xp = reinterpret_cast<bf16*>(static_cast<char*>(workspace) +
                                       wgmma_permuted_offset(m, w.n, w.k));
    const cudaError_t err = w4::permute_columns(x, w.perm, m, w.k, xp, stream);
    if (err != cudaSuccess) return err;
    xs = xp;
  }
  const WgmmaShape s = wgmma_shape(m, w.n, w.k);
  auto* p = static_cast<float*>(workspace);
  switch (s.batch) {
    case 16: return launch_wgmma<16, Out>(s, xs, m, w, y, ldy, p, stream);
    case 32: return launch_wgmma<32, Out>(s, xs, m, w, y, ldy, p, stream);
    case 64: return launch_wgmma<64, Out>(s, xs, m, w, y, ldy, p, stream);
    default: return launch_wgmma<128, Out>(s, xs, m, w, y, ldy, p, stream);
  }
}

}  // namespace

namespace launch {

std::size_t w4_gemm_wgmma_workspace_bytes(int64_t m, int64_t n, int64_t k) {
  return wgmma_permuted_offset(m, n, k) + std::size_t(m) * k * sizeof(bf16);
}

cudaError_t w4_gemm_wgmma(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                          bool float_out, void* workspace, cudaStream_t stream) {
  if (m == 0 || w.n == 0) return cudaSuccess;
  return float_out
             ? wgmma_any<float>(x, m, w, static_cast<float*>(y), ldy, workspace, stream)
             : wgmma_any<bf16>(x, m, w, static_cast<bf16*>(y), ldy, workspace, stream);
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
