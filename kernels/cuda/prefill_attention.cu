// Causal grouped-query attention of prefill chunks over the paged KV pool on the tensor cores
// (flash-attention-2 with the query heads of a GQA group packed into the rows of the tile).
//
// Layout (one layer; as in paged_attention.cu):
//   pool.k, pool.v: bf16 [num_blocks, block_size, num_kv_heads, head_dim]; a key's slot is
//   table[p / block_size] * block_size + p % block_size, its head_dim values for one KV head
//   are contiguous (head_dim * 2 = 128 or 256 bytes).
//   q: [tokens, q_stride], query head h of token t at q + t * q_stride + h * head_dim;
//   out: [tokens, out_stride] likewise. Sequence s owns rows q_begin[s] .. + q_len[s]; its
//   query i sits at position first_pos[s] + i and sees positions 0 .. first_pos[s] + i (the
//   chunk's own K/V are in the pool already: write_kv runs first).
//
// Tiling: one CTA of 4 warps per (tile of 64 query rows, KV head, sequence). With G = num_heads
// / num_kv_heads the sequence's query rows are the pairs (token i, head g of the group) in the
// order i * G + g, so a tile holds 64 / G consecutive tokens with all G heads, and every K/V
// byte the CTA loads serves all G heads (the GQA reuse; any G works, a token's heads may
// straddle two tiles). Each warp owns 16 rows. Key tiles of 64 positions.
//   * S = Q Kᵀ: mma.sync.m16n8k16 (bf16 in, fp32 accumulate). Q fragments are loaded once
//     (ldmatrix) and stay in registers; K fragments come from shared memory by ldmatrix (K is
//     [key][dim], which is already the "col" B operand).
//   * online softmax per row in fp32 in the log2 domain (scores scaled by scale * log2 e): the
//     running max is reduced over the 4 lanes of a quad that share a row, the running sum
//     stays per lane and is reduced once at the end. The causal mask is applied only on key
//     tiles that reach past the first row's position (the diagonal tile, two when 64 / G
//     tokens straddle a tile boundary); the first key tile always holds position 0, so every
//     row's max is finite from then on.
//   * O += P V: P is re-packed from the S accumulators to bf16 A fragments in registers (the
//     C layout of m16n8 pairs is the A layout of m16k16), V fragments by ldmatrix.trans
//     (V is [key][dim], the B operand wants [dim][key]).
// Pipeline: K and V tiles are double buffered in shared memory and filled with cp.async
// (16 bytes per copy, key by key through the block table, so any block_size works); tile j + 1
// is in flight while tile j is computed. Keys past the CTA's last visible position are
// zero-filled (cp.async src-size 0) so that neither their K nor their V (NaN in a poisoned or
// stale slot) can reach the accumulators. Shared rows are head_dim * 2 bytes with the 16-byte
// chunk index XOR-swizzled by (row % 8), so the 8 rows of every ldmatrix phase and of every
// cp.async fall into distinct banks.
// Shared memory: Q 64 x D + 2 stages x (K + V) 64 x D bf16 = 40 KB (D = 64), 80 KB (D = 128).
// Output: bf16 pairs straight from the accumulators, each row divided by its sum.
#include <cmath>
#include <cstdint>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/vec.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kRows = 64;     // query rows per CTA (16 per warp)
constexpr int kKeys = 64;     // keys per tile
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

struct PrefillArgs {
  const bf16* pool_k;  // [num_blocks, block_size, kv_heads, head_dim]
  const bf16* pool_v;
  int block_size;  // int: the key -> block division is 32-bit
  int64_t kv_heads;
  const bf16* q;  // [tokens, q_stride]
  int64_t q_stride;
  bf16* out;  // [tokens, out_stride]
  int64_t out_stride;
  PrefillSequences seqs;
  int group;  // query heads per KV head
  float scale_log2;
};

using ptx::cp_async16;
using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ldmatrix_x4;
using ptx::ldmatrix_x4_trans;
using ptx::mma_bf16;
using ptx::smem_address;

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][D] swizzled tile.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// grid = (ceil(max_q_len * group / 64), kv_heads, seqs); block = 128;
// dynamic shared memory = 5 * 64 * D bf16.
template <int D>
__global__ void __launch_bounds__(kThreads) prefill_attention_kernel(const PrefillArgs a) {
  constexpr int kChunks = D / 8;                  // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kChunks;  // rows one pass of the CTA copies
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* s_q = reinterpret_cast<bf16*>(smem_raw);  // [64][D]
  bf16* s_k = s_q + kRows * D;                    // [2][64][D]
  bf16* s_v = s_k + 2 * kKeys * D;                // [2][64][D]

  const int seq = blockIdx.z, kv_head = blockIdx.y;
  // The longest tiles (last rows, most keys) are scheduled first.
  const int tile = gridDim.x - 1 - blockIdx.x;
  const int G = a.group;
  const int q_len = a.seqs.q_len[seq];
  const int row0 = tile * kRows;
  if (row0 >= q_len * G) return;
  const int q_begin = a.seqs.q_begin[seq], first_pos = a.seqs.first_pos[seq];
  const int32_t* table = a.seqs.block_ids + a.seqs.table_offsets[seq];
  const int tok_lo = row0 / G;
  const int tok_hi = min(q_len - 1, (row0 + kRows - 1) / G);
  const int kv_end = first_pos + tok_hi + 1;  // keys the CTA's rows see: [0, kv_end)
  const int num_tiles = (kv_end + kKeys - 1) / kKeys;
  const int mask_from = first_pos + tok_lo;  // tiles whose last key is past this need the mask

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int col = tid % kChunks;  // this thread's chunk in every row it copies
  const int64_t kv_row = a.kv_heads * D;

  // Q tile: row r = (token (row0 + r) / G, head kv_head * G + (row0 + r) % G), zeros past q_len.
#pragma unroll
  for (int i = 0; i < kRows / kRowsPerPass; ++i) {
    const int r = tid / kChunks + i * kRowsPerPass;
    const int flat = row0 + r, tok = flat / G;
    const bf16* src = a.q;
    int bytes = 0;
    if (tok < q_len) {
      src = a.q + int64_t{q_begin + tok} * a.q_stride + int64_t{kv_head * G + flat % G} * D +
            col * 8;
      bytes = 16;
    }
    cp_async16(smem_address(s_q + swz<D>(r, col)), src, bytes);
  }
  auto load_kv = [&](int kt, int stage) {
    bf16* dk = s_k + stage * kKeys * D;
    bf16* dv = s_v + stage * kKeys * D;
#pragma unroll
    for (int i = 0; i < kKeys / kRowsPerPass; ++i) {
      const int r = tid / kChunks + i * kRowsPerPass;
      const int p = kt * kKeys + r;
      const bf16* ks = a.pool_k;
      const bf16* vs = a.pool_v;
      int bytes = 0;
      if (p < kv_end) {
        const int64_t slot = int64_t{table[p / a.block_size]} * a.block_size + p % a.block_size;
        const int64_t off = slot * kv_row + int64_t{kv_head} * D + col * 8;
        ks += off;
        vs += off;
        bytes = 16;
      }
      cp_async16(smem_address(dk + swz<D>(r, col)), ks, bytes);
      cp_async16(smem_address(dv + swz<D>(r, col)), vs, bytes);
    }
  };
  load_kv(0, 0);
  cp_async_commit();  // group 0: Q and key tile 0

  // This thread's two rows of the warp's 16 (the C fragment rows) and their causal limits.
  const int r_lo = warp * 16 + (lane >> 2), r_hi = r_lo + 8;
  const int lim_lo = first_pos + (row0 + r_lo) / G;
  const int lim_hi = first_pos + (row0 + r_hi) / G;

  uint32_t qf[D / 16][4];
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

  for (int kt = 0; kt < num_tiles; ++kt) {
    const int stage = kt & 1;
    if (kt + 1 < num_tiles) load_kv(kt + 1, stage ^ 1);
    cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning tile kt
    cp_async_wait<1>();
    __syncthreads();
    if (kt == 0) {
      // A fragments of the warp's 16 rows: matrices (rows 0-7 | 8-15) x (dims 0-7 | 8-15).
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        ldmatrix_x4(qf[kk], smem_address(s_q + swz<D>(warp * 16 + (lane & 15), 2 * kk + (lane >> 4))));
      }
    }
    const bf16* sk = s_k + stage * kKeys * D;
    const bf16* sv = s_v + stage * kKeys * D;

    // S = Q Kᵀ for the warp's 16 rows x 64 keys: s[n] is keys 8n .. 8n + 7.
    float s[kKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        // Matrices: (keys 0-7, dims 0-7), (keys 0-7, dims 8-15), (keys 8-15, dims 0-7),
        // (keys 8-15, dims 8-15) of this 16 x 16 block: b0, b1 of key tile 2np, then 2np + 1.
        uint32_t b[4];
        ldmatrix_x4(b, smem_address(sk + swz<D>(np * 16 + (lane & 7) + ((lane >> 4) << 3),
                                             2 * kk + ((lane >> 3) & 1))));
        mma_bf16(s[2 * np], qf[kk], b[0], b[1]);
        mma_bf16(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    }

    // Online softmax. Lane holds keys 8n + 2 (lane % 4) + {0, 1} of rows r_lo (s[n][0..1]) and
    // r_hi (s[n][2..3]).
    const int k0 = kt * kKeys;
    const bool masked = k0 + kKeys - 1 > mask_from;
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = s[n][e] * a.scale_log2;
        if (masked) {
          const int key = k0 + 8 * n + 2 * (lane & 3) + (e & 1);
          if (key > (e < 2 ? lim_lo : lim_hi)) v = -INFINITY;
        }
        s[n][e] = v;
      }
      mx_lo = fmaxf(mx_lo, fmaxf(s[n][0], s[n][1]));
      mx_hi = fmaxf(mx_hi, fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    const float new_lo = fmaxf(m_lo, mx_lo), new_hi = fmaxf(m_hi, mx_hi);
    const float corr_lo = exp2f(m_lo - new_lo), corr_hi = exp2f(m_hi - new_hi);  // 0 at start
    m_lo = new_lo;
    m_hi = new_hi;
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      s[n][0] = exp2f(s[n][0] - new_lo);
      s[n][1] = exp2f(s[n][1] - new_lo);
      s[n][2] = exp2f(s[n][2] - new_hi);
      s[n][3] = exp2f(s[n][3] - new_hi);
      sum_lo += s[n][0] + s[n][1];
      sum_hi += s[n][2] + s[n][3];
    }
    l_lo = l_lo * corr_lo + sum_lo;
    l_hi = l_hi * corr_hi + sum_hi;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= corr_lo;
      o[n][1] *= corr_lo;
      o[n][2] *= corr_hi;
      o[n][3] *= corr_hi;
    }

    // O += P V, 16 keys per step: P's A fragment is the C fragments of key tiles 2kk, 2kk + 1.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint32_t p[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                             pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        // Transposed matrices: (keys 0-7, dims 0-7), (keys 8-15, dims 0-7), (keys 0-7,
        // dims 8-15), (keys 8-15, dims 8-15): b0, b1 of dim tile 2dp, then 2dp + 1.
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_address(sv + swz<D>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                                   2 * dp + (lane >> 4))));
        mma_bf16(o[2 * dp], p, b[0], b[1]);
        mma_bf16(o[2 * dp + 1], p, b[2], b[3]);
      }
    }
    __syncthreads();  // the next iteration's copy overwrites this stage
  }
  cp_async_wait<0>();

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int flat = row0 + (half == 0 ? r_lo : r_hi), tok = flat / G;
    if (tok >= q_len) continue;
    const float inv = half == 0 ? inv_lo : inv_hi;
    bf16* dst = a.out + int64_t{q_begin + tok} * a.out_stride +
                int64_t{kv_head * G + flat % G} * D + 2 * (lane & 3);
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<__nv_bfloat162*>(dst + 8 * n) =
          __floats2bfloat162_rn(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
    }
  }
}

template <int D>
cudaError_t launch_prefill(const PrefillArgs& a, unsigned tiles, cudaStream_t stream) {
  constexpr std::size_t smem = sizeof(bf16) * (kRows + 4 * kKeys) * D;
  // Above the default 48 KB at D = 128: opt in (a host-side attribute, not a stream operation).
  const cudaError_t attr = cudaFuncSetAttribute(
      prefill_attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int{smem});
  if (attr != cudaSuccess) return attr;
  const dim3 grid(tiles, static_cast<unsigned>(a.kv_heads), static_cast<unsigned>(a.seqs.seqs));
  prefill_attention_kernel<D><<<grid, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

namespace launch {

cudaError_t paged_prefill_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride,
                                    bf16* out, int64_t out_stride, const PrefillSequences& seqs,
                                    int64_t num_heads, float scale, cudaStream_t stream) {
  if (seqs.seqs == 0 || seqs.max_q_len == 0) return cudaSuccess;
  PrefillArgs a{};
  a.pool_k = pool.k;
  a.pool_v = pool.v;
  a.block_size = static_cast<int>(pool.block_size);
  a.kv_heads = pool.num_kv_heads;
  a.q = q;
  a.q_stride = q_stride;
  a.out = out;
  a.out_stride = out_stride;
  a.seqs = seqs;
  a.group = static_cast<int>(num_heads / pool.num_kv_heads);
  a.scale_log2 = scale * kLog2e;
  const auto tiles = static_cast<unsigned>((seqs.max_q_len * a.group + kRows - 1) / kRows);
  return pool.head_dim == 64 ? launch_prefill<64>(a, tiles, stream)
                             : launch_prefill<128>(a, tiles, stream);
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
