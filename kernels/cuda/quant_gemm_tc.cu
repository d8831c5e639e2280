// W4A16 tiled tensor-core GEMM: y[m, n] = x[m, k] · Ŵᵀ for the batches between the decode
// kernel's (a pass over the weights per 16 rows of x) and cuBLASLt's on a dequantized copy (a
// bf16 [n, k] write and re-read of every weight per call). The codes are turned into tensor-core
// operands in registers inside the main loop, as Marlin does, so each weight byte is read once
// per 64 or 128 rows of x and nothing is written back but y.
//
// Memory layout read here (quant_gemm.h, quant_layout.h):
//   codes: tiles of 16 weight rows x 64 stored columns, 512 bytes each, row tile by row tile;
//     lane l's 16 bytes at l * 16 of a tile are its A operands for the tile's 4 k16 steps;
//   meta [n_padded, groups] {fp16 scale, fp16 zero}; x bf16 [m, k] in stored-column order (an
//     act-order x is gathered into the workspace first, w4::permute_columns).
//
// Tiling: M of the mma = weight rows, N = rows of x ("batch"). A CTA computes 128 weight rows x
// kBatch = WM * 8 NT batch rows (16, 32, 64 or 128: the fewest that hold m); 4 x WM warps, warp
// (wn, wm) owning weight rows [32 wn, 32 wn + 32) (2 row tiles) x NT n8 tiles of batch. grid =
// (row blocks, batch blocks, K splits); a split's partial sums go to the workspace
// [split, m, n] and w4::reduce_splits adds them in split order.
//
// Pipeline, per 64-column k tile, kStages deep in shared memory (cp.async, 16-byte chunks):
//   stage = codes of the CTA's 8 row tiles (8 x 512 B, copied as laid out, so a lane's A words
//           are one conflict-free 16-byte shared load) | x tile kBatch rows x 128 B, 16-byte
//           chunk c of row r stored at chunk c ^ (r & 7) (the 8 rows an ldmatrix reads at one
//           chunk column fall in 8 different bank groups); rows past m are zero-filled. Each
//           thread's copy slots (count, source, size, shared offset) are fixed before the loop
//           (w4::TileCopies, shared with the wgmma kernel), so a stage costs an add and a
//           cp.async per slot. (Rebuilt per tile, they made
//           integer and control work ~70 of 163 instructions per code tile, run 27; fixed, the
//           kernel runs 17-24 % faster, run 28.)
//   per k16 step s: 2 A operands from code word s (w4::codes_to_operand: exact code - zero in
//   bf16), NT / 2 ldmatrix.x4 give the NT n8 B operands, 2 NT mma.sync accumulate Σ (code - zero) · x
//   per group in float32 (d); at a group boundary acc += scale · d (the decode kernel's exact
//   arithmetic: no weight is rounded to bf16). With rounded weights (kRound, above 64 rows) A
//   is multiplied by the rows' bf16 scales and the mma accumulates into acc directly. One
//   __syncthreads per k tile: after it the stage computed in the previous iteration is
//   refilled with the tile kStages - 1 ahead.
// Registers: acc and d are 2 x NT x 4 floats each (128 at NT = 8: a CTA of 8 warps then runs
// alone on a multiprocessor; kRound has no d, so NT = 16 fits in 240 with 2 CTAs of 4 warps);
// the stages in flight (kStages - 1 tiles: 12 KB of codes and up to 48 KB of x per CTA) are what
// hides the memory latency.
#include <algorithm>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/quant_layout.h"
#include "kernels/cuda/vec.cuh"
#include "kernels/cuda/w4_common.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kWarpsN = 4;         // warps along the weight rows
constexpr int kTilesPerWarp = 2;   // row tiles (16 rows) per warp
constexpr int kBlockRowTiles = kWarpsN * kTilesPerWarp;
constexpr int kStages = 4;
constexpr int kCodeStageBytes = kBlockRowTiles * static_cast<int>(kW4TileBytes);  // 4 KB
constexpr int kXRowBytes = static_cast<int>(kW4TileCols) * 2;                     // 128 B

// WM warps along the batch, each with NT n8 tiles (NT even: one ldmatrix.x4 feeds two).
template <int WM, int NT>
struct Tc {
  static_assert(NT % 2 == 0 && NT <= 16);
  static constexpr int kWarps = kWarpsN * WM;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpBatch = 8 * NT;
  static constexpr int kBatch = kWarpBatch * WM;
  static constexpr int kStageBytes = kCodeStageBytes + kBatch * kXRowBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  // Blocks per multiprocessor the registers must allow: 5 for NT = 2 (the 16-row CTA, whose
  // shared memory allows 5; at 106 registers only 4 fit), else whatever they take.
  static constexpr int kMinBlocks = NT == 2 ? 5 : 1;
};

using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ld_shared16;
using ptx::ldmatrix_x4;
using ptx::mma_bf16;
using ptx::smem_address;

// x: bf16 [m, k] (stored-column order); codes: tiles as uint4; meta [n_padded, groups];
// y: Out [m, ldy] when gridDim.z == 1, else partial float [gridDim.z, m, n].
// kRound (W4TcArithmetic::kBf16Weights): A = bf16(scale) · (code - zero) rounded to bf16, summed
// straight into acc: no group sums d (half the accumulator registers, which lets a warp hold
// NT = 16) and nothing to do at a group boundary but load the next scales.
// kTileGroups: the group size is a multiple of 64, so a group boundary can only fall at the
// start of a k tile (s = 0); otherwise at any even k16 step. Tested once per tile, the four k16
// steps are one basic block the compiler can interleave (the next step's conversion and ldmatrix
// under this step's mma).
template <int WM, int NT, bool kRound, bool kTileGroups, typename Out>
__global__ void __launch_bounds__(Tc<WM, NT>::kThreads, Tc<WM, NT>::kMinBlocks)
w4_tc_kernel(const bf16* __restrict__ x, int m, const uint4* __restrict__ codes,
             const uint32_t* __restrict__ meta, int n, int k, int group_size, int groups,
             int row_tiles, int kt_per_split, Out* __restrict__ y, int64_t ldy,
             float* __restrict__ partial) {
  using T = Tc<WM, NT>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wn = warp % kWarpsN, wm = warp / kWarpsN;
  const int g = lane >> 2, t = lane & 3;
  const int KT = k / static_cast<int>(kW4TileCols);
  const int split = blockIdx.z;
  const int kt0 = split * kt_per_split, tiles = min(KT, kt0 + kt_per_split) - kt0;
  const int rt_block = blockIdx.x * kBlockRowTiles;
  const int batch0 = blockIdx.y * T::kBatch;

  const w4::TileCopies<T::kThreads, kBlockRowTiles, T::kBatch> copies(
      tid, codes, rt_block, row_tiles, KT, x, batch0, m, k, kCodeStageBytes);
  const uint32_t smem_base = smem_address(smem);
  auto load_stage = [&](int stage, int kt) { copies.load(smem_base + stage * T::kStageBytes, kt); };

  // This lane's meta rows: g and g + 8 of each of the warp's row tiles (clamped into the
  // padded rows for a CTA past the last row tile; those results are never stored).
  const uint32_t* meta_row[kTilesPerWarp][2];
#pragma unroll
  for (int i = 0; i < kTilesPerWarp; ++i) {
    const int rt = min(rt_block + wn * kTilesPerWarp + i, row_tiles - 1);
    meta_row[i][0] = meta + int64_t{rt * 16 + g} * groups;
    meta_row[i][1] = meta + int64_t{rt * 16 + g + 8} * groups;
  }
  // Group boundaries are multiples of 32 columns and the loop steps by 16, so each is met
  // exactly; the next group's meta is loaded one group ahead.
  int group = kt0 * static_cast<int>(kW4TileCols) / group_size;
  int next_boundary = (group + 1) * group_size;
  int col = kt0 * static_cast<int>(kW4TileCols);
  float scale[kTilesPerWarp][2];
  uint32_t zero[kTilesPerWarp][2], next_meta[kTilesPerWarp][2];
  uint32_t scale_pair[kTilesPerWarp][2];  // kRound: {bf16(scale), bf16(scale)}
  auto set_meta = [&](int i, int h, uint32_t mt) {
    scale[i][h] = w4::meta_scale(mt);
    zero[i][h] = w4::meta_zero_pair(mt);
    if constexpr (kRound) scale_pair[i][h] = pack_bf16(scale[i][h], scale[i][h]);
  };
#pragma unroll
  for (int i = 0; i < kTilesPerWarp; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      set_meta(i, h, __ldg(meta_row[i][h] + group));
      next_meta[i][h] = __ldg(meta_row[i][h] + min(group + 1, groups - 1));
    }
  }

  // d: the exact path's group sums (kRound: unused, no registers).
  constexpr int kDTiles = kRound ? 1 : NT;
  float acc[kTilesPerWarp][NT][4], d[kTilesPerWarp][kDTiles][4];
#pragma unroll
  for (int i = 0; i < kTilesPerWarp; ++i) {
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
#pragma unroll
    for (int j = 0; j < kDTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) d[i][j][e] = 0.0f;
  }

  // ldmatrix.x4 lane roles: matrix q = lane / 8 (n8 tile 2jj + q / 2, k half q % 2), row lane % 8;
  // the lane's row address within a stage for k16 step s (n8 tile pair jj adds 16 rows).
  const int q8 = lane >> 3, r8 = lane & 7;
  const int x_row_base = wm * T::kWarpBatch + (q8 >> 1) * 8 + r8;
  uint32_t x_off[4];
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    x_off[s] = kCodeStageBytes + x_row_base * kXRowBytes + (((2 * s + (q8 & 1)) ^ r8) << 4);
  }
  const uint32_t code_off = ((wn * kTilesPerWarp) * 32 + lane) * 16;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < tiles) load_stage(s, kt0 + s);
    cp_async_commit();
  }
  for (int it = 0; it < tiles; ++it) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if (it + kStages - 1 < tiles) load_stage((it + kStages - 1) % kStages, kt0 + it + kStages - 1);
    cp_async_commit();

    const uint32_t st = smem_base + (it % kStages) * T::kStageBytes;
    uint4 words[kTilesPerWarp];
#pragma unroll
    for (int i = 0; i < kTilesPerWarp; ++i) {
      words[i] = ld_shared16(st + code_off + i * static_cast<uint32_t>(kW4TileBytes));
    }
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if ((kTileGroups ? s == 0 : (s & 1) == 0) && col >= next_boundary) {
        if constexpr (!kRound) {
#pragma unroll
          for (int i = 0; i < kTilesPerWarp; ++i) {
#pragma unroll
            for (int j = 0; j < NT; ++j) {
              acc[i][j][0] += scale[i][0] * d[i][j][0];
              acc[i][j][1] += scale[i][0] * d[i][j][1];
              acc[i][j][2] += scale[i][1] * d[i][j][2];
              acc[i][j][3] += scale[i][1] * d[i][j][3];
              d[i][j][0] = d[i][j][1] = d[i][j][2] = d[i][j][3] = 0.0f;
            }
          }
        }
        ++group;
        next_boundary += group_size;
#pragma unroll
        for (int i = 0; i < kTilesPerWarp; ++i) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            set_meta(i, h, next_meta[i][h]);
            next_meta[i][h] = __ldg(meta_row[i][h] + min(group + 1, groups - 1));
          }
        }
      }
      col += 16;
      uint32_t a[kTilesPerWarp][4];
#pragma unroll
      for (int i = 0; i < kTilesPerWarp; ++i) {
        const uint32_t word =
            s == 0 ? words[i].x : s == 1 ? words[i].y : s == 2 ? words[i].z : words[i].w;
        w4::codes_to_operand(word, zero[i][0], zero[i][1], a[i]);
        if constexpr (kRound) w4::scale_operand(scale_pair[i][0], scale_pair[i][1], a[i]);
      }
#pragma unroll
      for (int jj = 0; jj < NT / 2; ++jj) {
        uint32_t b[4];
        ldmatrix_x4(b, st + x_off[s] + jj * 16 * kXRowBytes);
#pragma unroll
        for (int i = 0; i < kTilesPerWarp; ++i) {
          if constexpr (kRound) {
            mma_bf16(acc[i][2 * jj], a[i], b[0], b[1]);
            mma_bf16(acc[i][2 * jj + 1], a[i], b[2], b[3]);
          } else {
            mma_bf16(d[i][2 * jj], a[i], b[0], b[1]);
            mma_bf16(d[i][2 * jj + 1], a[i], b[2], b[3]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // no copy may be left in flight into a CTA's shared memory at exit

  // Output fragment e of (row tile i, n8 tile j): weight row 16 rt + g (+ 8 for e >= 2), batch
  // row 8 j + 2 t + (e & 1).
#pragma unroll
  for (int i = 0; i < kTilesPerWarp; ++i) {
    const int row_lo = (rt_block + wn * kTilesPerWarp + i) * 16 + g;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = acc[i][j][e];
        if constexpr (!kRound) v += scale[i][e >> 1] * d[i][j][e];
        const int row = row_lo + (e >> 1) * 8;
        const int b = batch0 + wm * T::kWarpBatch + j * 8 + 2 * t + (e & 1);
        if (row >= n || b >= m) continue;
        if (gridDim.z == 1) {
          y[b * ldy + row] = w4::to_out<Out>(v);
        } else {
          partial[(int64_t{split} * m + b) * n + row] = v;
        }
      }
    }
  }
}

// The grid of a call: the CTA's batch by m (the fewest n8 tiles that hold it, up to 2 warps of
// 64 rows; rounded weights: always one warp of NT = 16, 128 rows); K splits so that the CTAs
// fill about two waves of the multiprocessors' resident warps (16 on 132; 8 for NT = 16, whose
// 4-warp CTAs run two to a multiprocessor), each split at least 8 k tiles (a pipeline's worth).
struct TcShape {
  bool round;
  int wm, nt;
  int row_blocks, batch_blocks, splits, kt_per_split;
};

TcShape tc_shape(int64_t m, int64_t n, int64_t k, W4TcArithmetic arithmetic) {
  TcShape s{};
  s.round = arithmetic == W4TcArithmetic::kBf16Weights;
  s.wm = s.round || m <= 64 ? 1 : 2;
  s.nt = s.round ? 16 : m <= 16 ? 2 : m <= 32 ? 4 : 8;
  const int64_t batch = 8 * s.nt * s.wm;
  const int64_t row_tiles = w4_padded_rows(n) / kW4TileRows;
  s.row_blocks = static_cast<int>((row_tiles + kBlockRowTiles - 1) / kBlockRowTiles);
  s.batch_blocks = static_cast<int>((m + batch - 1) / batch);
  const int64_t KT = k / kW4TileCols;
  const int64_t warps = int64_t{s.row_blocks} * s.batch_blocks * kWarpsN * s.wm;
  const int64_t resident = s.round ? 8 : 16;
  int64_t splits = std::max<int64_t>(1, (132 * resident * 2 + warps - 1) / warps);
  splits = std::min(splits, std::max<int64_t>(1, KT / 8));
  s.kt_per_split = static_cast<int>((KT + splits - 1) / splits);
  s.splits = static_cast<int>((KT + s.kt_per_split - 1) / s.kt_per_split);
  return s;
}

std::size_t tc_partial_bytes(int64_t m, int64_t n, int64_t k, W4TcArithmetic arithmetic) {
  const TcShape s = tc_shape(m, n, k, arithmetic);
  return s.splits > 1 ? std::size_t(s.splits) * m * n * 4 : 0;
}
std::size_t tc_permuted_offset(int64_t m, int64_t n, int64_t k, W4TcArithmetic arithmetic) {
  return (tc_partial_bytes(m, n, k, arithmetic) + 15) / 16 * 16;
}

template <int WM, int NT, bool kRound, bool kTileGroups, typename Out>
cudaError_t launch_tc(const TcShape& s, const bf16* x, int64_t m, const W4Weights& w, Out* y,
                      int64_t ldy, float* partial, cudaStream_t stream) {
  using T = Tc<WM, NT>;
  const dim3 grid(s.row_blocks, s.batch_blocks, s.splits);
  auto* kernel = &w4_tc_kernel<WM, NT, kRound, kTileGroups, Out>;
  return w4::launch_tiled<Out>(kernel, grid, T::kThreads, T::kSmemBytes, s.kt_per_split, x, m, w, y,
                               ldy, partial, stream);
}

template <bool kTileGroups, typename Out>
cudaError_t dispatch_tc(const TcShape& s, const bf16* xs, int64_t m, const W4Weights& w, Out* y,
                        int64_t ldy, float* partial, cudaStream_t stream) {
  constexpr bool G = kTileGroups;
  float* p = partial;
  if (s.round) return launch_tc<1, 16, true, G, Out>(s, xs, m, w, y, ldy, p, stream);
  if (s.wm == 2) return launch_tc<2, 8, false, G, Out>(s, xs, m, w, y, ldy, p, stream);
  switch (s.nt) {
    case 2: return launch_tc<1, 2, false, G, Out>(s, xs, m, w, y, ldy, p, stream);
    case 4: return launch_tc<1, 4, false, G, Out>(s, xs, m, w, y, ldy, p, stream);
    default: return launch_tc<1, 8, false, G, Out>(s, xs, m, w, y, ldy, p, stream);
  }
}

template <typename Out>
cudaError_t tc_any(const bf16* x, int64_t m, const W4Weights& w, Out* y, int64_t ldy,
                   void* workspace, W4TcArithmetic arithmetic, cudaStream_t stream) {
  const bf16* xs = x;
  if (w.perm != nullptr) {
    auto* xp = reinterpret_cast<bf16*>(static_cast<char*>(workspace) +
                                       tc_permuted_offset(m, w.n, w.k, arithmetic));
    const cudaError_t err = w4::permute_columns(x, w.perm, m, w.k, xp, stream);
    if (err != cudaSuccess) return err;
    xs = xp;
  }
  const TcShape s = tc_shape(m, w.n, w.k, arithmetic);
  auto* partial = static_cast<float*>(workspace);
  return w.group_size % kW4TileCols == 0
             ? dispatch_tc<true, Out>(s, xs, m, w, y, ldy, partial, stream)
             : dispatch_tc<false, Out>(s, xs, m, w, y, ldy, partial, stream);
}

}  // namespace

namespace launch {

std::size_t w4_gemm_tc_workspace_bytes(int64_t m, int64_t n, int64_t k,
                                       W4TcArithmetic arithmetic) {
  return tc_permuted_offset(m, n, k, arithmetic) + std::size_t(m) * k * sizeof(bf16);
}

cudaError_t w4_gemm_tc(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                       bool float_out, void* workspace, W4TcArithmetic arithmetic,
                       cudaStream_t stream) {
  if (m == 0 || w.n == 0) return cudaSuccess;
  return float_out ? tc_any<float>(x, m, w, static_cast<float*>(y), ldy, workspace, arithmetic,
                                   stream)
                   : tc_any<bf16>(x, m, w, static_cast<bf16*>(y), ldy, workspace, arithmetic,
                                  stream);
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
