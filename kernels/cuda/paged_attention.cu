// Paged KV cache: the write of new tokens' K/V, and causal grouped-query attention over the
// pool with the context split across thread blocks (flash-decoding).
//
// Layout (one layer; the CPU layout in bf16):
//   pool.k, pool.v: [num_blocks, block_size, num_kv_heads, head_dim]; a token's slot is
//   physical_block * block_size + position % block_size, so one token's K (or V) for one KV
//   head is head_dim contiguous bf16 = head_dim * 2 bytes.
//   q: [tokens, q_stride] with query head h at column h * head_dim (the q part of a fused qkv
//   row); out: [tokens, out_stride] likewise.
//
// Attention pipeline, one thread block per (query token, group of GT query heads that share a
// KV head, split of the context):
//   * the block's 4 warps are cut into "key groups" of L = head_dim / 8 lanes: each lane holds
//     8 dimensions (one 16-byte load of K, one of V) and a key group processes one key at a
//     time, so a warp has 32 / L keys in flight and every K/V byte is loaded once for all GT
//     query heads (the GQA reuse);
//   * per key: GT dot products reduced over the L lanes with shuffles, then an online-softmax
//     update (running max m, sum l, accumulator acc[GT][8] in registers), in the log2 domain
//     (q is pre-scaled by scale * log2(e)); software pipelined: the next U keys' K and V
//     loads are issued before the current U keys are scored, and the running max / sum /
//     accumulator are rescaled once per U keys;
//   * at the end the key groups' (m, l, acc) are merged through shared memory (GT x 1024 floats
//     = 32 KB at GT = 8); with one split the block writes bf16 output, else a normalised float
//     partial and its log-sum-exp go to the workspace and attention_reduce_kernel merges them.
// Prefill chunks can use the same kernel (each query token has its own causal length), but it
// re-reads the chunk's K/V once per query token: prefill_attention.cu is their tensor-core
// path (head_dim 64 / 128), and batch.rows lets this kernel take only the decode tokens of a
// step that mixes both.
#include <cfloat>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/vec.cuh"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// Keys per lane per pipeline stage: fewer where GT query heads already fill the registers.
__host__ __device__ constexpr int unroll_for(int gt) { return gt >= 8 ? 2 : 4; }
constexpr float kLog2e = 1.4426950408889634f;

// ---- write_kv ----------------------------------------------------------------------------
// k, v: [tokens, src_stride]; slots: [tokens]. grid.x = tokens; each thread moves 8 values.
__global__ void write_kv_kernel(bf16* __restrict__ pool_k, bf16* __restrict__ pool_v,
                                int64_t row, const bf16* __restrict__ k,
                                const bf16* __restrict__ v, int64_t src_stride,
                                const int32_t* __restrict__ slots) {
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0) return;
  const bf16* ks = k + t * src_stride;
  const bf16* vs = v + t * src_stride;
  bf16* kd = pool_k + slot * row;
  bf16* vd = pool_v + slot * row;
  for (int64_t i = threadIdx.x * 8; i < row; i += kThreads * 8) {
    *reinterpret_cast<Bf16x8*>(kd + i) = *reinterpret_cast<const Bf16x8*>(ks + i);
    *reinterpret_cast<Bf16x8*>(vd + i) = *reinterpret_cast<const Bf16x8*>(vs + i);
  }
}

// ---- attention ---------------------------------------------------------------------------
struct AttentionArgs {
  const bf16* pool_k;  // [num_blocks, block_size, kv_heads, head_dim]
  const bf16* pool_v;
  int64_t block_size, kv_heads, head_dim;
  const bf16* q;  // [tokens, q_stride]
  int64_t q_stride;
  bf16* out;  // [tokens, out_stride]
  int64_t out_stride;
  const int32_t* positions;      // [tokens]
  const int32_t* table_offsets;  // [tokens]
  const int32_t* block_ids;
  const int32_t* rows;           // [tokens]: entry t's row of q / out; null: row t
  int64_t num_heads;
  float scale_log2;  // softmax scale * log2(e)
  int32_t partition_len, num_splits;
  float* partial_o;    // [tokens, num_heads, num_splits, head_dim]
  float* partial_lse;  // [tokens, num_heads, num_splits]
};

// grid = (tokens, num_heads / GT, num_splits); block = kThreads;
// dynamic shared memory = GT * (1024 + 2 * groups) floats, groups = kWarps * 32 / L.
template <int GT>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(const AttentionArgs a) {
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
  extern __shared__ float smem[];
  const int t = blockIdx.x;
  const int64_t row = a.rows != nullptr ? a.rows[t] : t;
  const int head0 = blockIdx.y * GT;
  const int split = blockIdx.z;
  const int hd = static_cast<int>(a.head_dim);
  const int visible = a.positions[t] + 1;
  const int begin = split * a.partition_len;
  if (begin >= visible) return;  // this split is past the token's causal length
  // The last split runs to the end, so a context longer than the plan assumed stays correct.
  const int end = split == a.num_splits - 1 ? visible : min(visible, begin + a.partition_len);

  const int lanes_per_key = hd / 8;
  const int keys_per_warp = 32 / lanes_per_key;
  const int groups = kWarps * keys_per_warp;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int key_in_warp = lane / lanes_per_key;
  const int sub = lane % lanes_per_key;  // this lane's 8 dimensions: [sub*8, sub*8+8)
  const int group = warp * keys_per_warp + key_in_warp;
  const int kv_head = head0 / static_cast<int>(a.num_heads / a.kv_heads);

  float q[GT][8];
#pragma unroll
  for (int h = 0; h < GT; ++h) {
    load8(a.q + row * a.q_stride + (head0 + h) * hd + sub * 8, q[h]);
#pragma unroll
    for (int j = 0; j < 8; ++j) q[h][j] *= a.scale_log2;
  }
  float m[GT], l[GT], acc[GT][8];
#pragma unroll
  for (int h = 0; h < GT; ++h) {
    m[h] = -FLT_MAX;
    l[h] = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[h][j] = 0.0f;
  }

  const int32_t* table = a.block_ids + a.table_offsets[t];
  const int64_t kv_row = a.kv_heads * a.head_dim;
  const int64_t head_off = int64_t{kv_head} * hd + sub * 8;
  const int stride = groups;  // keys the whole block covers per step
  constexpr int U = unroll_for(GT);
  // Loads the K/V rows of the U keys base + key_in_warp + u * stride (zeros past `end`).
  auto load = [&](int base, Bf16x8 (&kraw)[U], Bf16x8 (&vraw)[U]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int p = base + key_in_warp + u * stride;
      if (p < end) {
        const int64_t slot = int64_t{table[p / a.block_size]} * a.block_size + p % a.block_size;
        kraw[u] = *reinterpret_cast<const Bf16x8*>(a.pool_k + slot * kv_row + head_off);
        vraw[u] = *reinterpret_cast<const Bf16x8*>(a.pool_v + slot * kv_row + head_off);
      } else {
        kraw[u] = Bf16x8{};
        vraw[u] = Bf16x8{};
      }
    }
  };
  // The trip count is uniform across the warp (shuffles need every lane): lanes past `end`
  // load zeros and their keys get weight 0. Software pipelined: the next U keys' loads are in
  // flight while the current U are scored; one online-softmax rescale per U keys.
  int base = begin + group - key_in_warp;
  Bf16x8 k_next[U], v_next[U];
  if (base < end) load(base, k_next, v_next);
  for (; base < end; base += stride * U) {
    Bf16x8 kraw[U], vraw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      kraw[u] = k_next[u];
      vraw[u] = v_next[u];
    }
    if (base + stride * U < end) load(base + stride * U, k_next, v_next);
    float s[U][GT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[8];
      unpack8(kraw[u], kf);
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        float d = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) d += q[h][j] * kf[j];
        s[u][h] = d;
      }
    }
    // Reduce the partial dot products over the key group's lanes, all U x GT at once.
    for (int o = lanes_per_key / 2; o > 0; o >>= 1) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int h = 0; h < GT; ++h) s[u][h] += __shfl_xor_sync(0xffffffffu, s[u][h], o);
      }
    }
    bool valid[U];
#pragma unroll
    for (int u = 0; u < U; ++u) valid[u] = base + key_in_warp + u * stride < end;
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      float m_new = m[h];
#pragma unroll
      for (int u = 0; u < U; ++u) m_new = valid[u] ? fmaxf(m_new, s[u][h]) : m_new;
      const float corr = exp2f(m[h] - m_new);
      l[h] *= corr;
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[h][j] *= corr;
      m[h] = m_new;
#pragma unroll
      for (int u = 0; u < U; ++u) s[u][h] = valid[u] ? exp2f(s[u][h] - m_new) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float vf[8];
      unpack8(vraw[u], vf);
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        l[h] += s[u][h];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[h][j] += s[u][h] * vf[j];
      }
    }
  }

  // Merge the key groups. smem: acc [GT][groups][hd] (groups * hd = 1024), m, l [GT][groups].
  float* s_acc = smem;
  float* s_m = smem + GT * groups * hd;
  float* s_l = s_m + GT * groups;
#pragma unroll
  for (int h = 0; h < GT; ++h) {
#pragma unroll
    for (int j = 0; j < 8; ++j) s_acc[(h * groups + group) * hd + sub * 8 + j] = acc[h][j];
    if (sub == 0) {
      s_m[h * groups + group] = m[h];
      s_l[h * groups + group] = l[h];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < GT * hd; e += kThreads) {
    const int h = e / hd, dim = e % hd;
    float mx = -FLT_MAX;
    for (int g = 0; g < groups; ++g) mx = fmaxf(mx, s_m[h * groups + g]);
    float sum = 0.0f, o = 0.0f;
    for (int g = 0; g < groups; ++g) {
      const float w = exp2f(s_m[h * groups + g] - mx);  // 0 for a group that saw no key
      sum += s_l[h * groups + g] * w;
      o += s_acc[(h * groups + g) * hd + dim] * w;
    }
    const int head = head0 + h;
    if (a.num_splits == 1) {
      a.out[row * a.out_stride + head * hd + dim] = __float2bfloat16_rn(o / sum);
    } else {
      const int64_t part = (int64_t{t} * a.num_heads + head) * a.num_splits + split;
      a.partial_o[part * hd + dim] = o / sum;
      if (dim == 0) a.partial_lse[part] = mx + log2f(sum);
    }
  }
}

// Merges the splits of one (token, head). grid = (tokens, num_heads); block = head_dim threads
// (at most 256).
__global__ void attention_reduce_kernel(const AttentionArgs a) {
  begin_dependent();  // launched by launch_dependent (dependent_launch.cuh)
  const int t = blockIdx.x, head = blockIdx.y, dim = threadIdx.x;
  const int hd = static_cast<int>(a.head_dim);
  const int visible = a.positions[t] + 1;
  const int used = min(a.num_splits, (visible + a.partition_len - 1) / a.partition_len);
  const int64_t row0 = (int64_t{t} * a.num_heads + head) * a.num_splits;
  float mx = -FLT_MAX;
  for (int s = 0; s < used; ++s) mx = fmaxf(mx, a.partial_lse[row0 + s]);
  float sum = 0.0f, o = 0.0f;
  for (int s = 0; s < used; ++s) {
    const float w = exp2f(a.partial_lse[row0 + s] - mx);
    sum += w;
    o += w * a.partial_o[(row0 + s) * hd + dim];
  }
  const int64_t row = a.rows != nullptr ? a.rows[t] : t;
  a.out[row * a.out_stride + head * hd + dim] = __float2bfloat16_rn(o / sum);
}

template <int GT>
cudaError_t launch_attention(const AttentionArgs& a, int64_t tokens, cudaStream_t stream) {
  const int groups = kWarps * 32 / static_cast<int>(a.head_dim / 8);
  const std::size_t smem =
      sizeof(float) * GT * (static_cast<std::size_t>(groups) * a.head_dim + 2 * groups);
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(a.num_heads / GT),
                  static_cast<unsigned>(a.num_splits));
  return launch_dependent(paged_attention_kernel<GT>, grid, kThreads, smem, stream, a);
}

}  // namespace

namespace launch {

cudaError_t write_kv(const PagedKvPool& pool, const bf16* k, const bf16* v, int64_t src_stride,
                     const int32_t* slots, int64_t tokens, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  return launch_dependent(write_kv_kernel, static_cast<unsigned>(tokens), kThreads, 0, stream,
                          pool.k, pool.v, pool.num_kv_heads * pool.head_dim, k, v, src_stride,
                          slots);
}

cudaError_t paged_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride, bf16* out,
                            int64_t out_stride, const AttentionBatch& batch, int64_t num_heads,
                            float scale, const AttentionSplit& split, float* workspace,
                            cudaStream_t stream) {
  if (batch.tokens == 0) return cudaSuccess;
  AttentionArgs a{};
  a.pool_k = pool.k;
  a.pool_v = pool.v;
  a.block_size = pool.block_size;
  a.kv_heads = pool.num_kv_heads;
  a.head_dim = pool.head_dim;
  a.q = q;
  a.q_stride = q_stride;
  a.out = out;
  a.out_stride = out_stride;
  a.positions = batch.positions;
  a.table_offsets = batch.table_offsets;
  a.block_ids = batch.block_ids;
  a.rows = batch.rows;
  a.num_heads = num_heads;
  a.scale_log2 = scale * kLog2e;
  a.partition_len = split.partition_len;
  a.num_splits = split.num_splits;
  a.partial_o = workspace;
  a.partial_lse = workspace == nullptr
                      ? nullptr
                      : workspace + batch.tokens * num_heads * split.num_splits * pool.head_dim;
  // Heads per block: the largest of 8, 4, 2, 1 dividing the GQA group (so all share a KV head).
  const int64_t group = num_heads / pool.num_kv_heads;
  cudaError_t status;
  if (group % 8 == 0) {
    status = launch_attention<8>(a, batch.tokens, stream);
  } else if (group % 4 == 0) {
    status = launch_attention<4>(a, batch.tokens, stream);
  } else if (group % 2 == 0) {
    status = launch_attention<2>(a, batch.tokens, stream);
  } else {
    status = launch_attention<1>(a, batch.tokens, stream);
  }
  if (status != cudaSuccess || split.num_splits == 1) return status;
  const dim3 grid(static_cast<unsigned>(batch.tokens), static_cast<unsigned>(num_heads));
  return launch_dependent(attention_reduce_kernel, grid, static_cast<unsigned>(pool.head_dim), 0,
                          stream, a);
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
