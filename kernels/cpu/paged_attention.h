#pragma once
// Attention over a paged KV cache (PagedAttention). The cache of one layer is a pool of
// fixed-size blocks; a sequence's block table maps its logical block b (positions
// [b*block_size, (b+1)*block_size)) to a physical block of the pool.
//
// Cache layout, one pool for K and one for V per layer:
//   [num_blocks, block_size, num_kv_heads, head_dim] float32, row-major,
// so one token's heads are contiguous (the write of a new token is one run of memory).
#include <cstdint>

namespace shardserve::kernels::cpu {

struct PagedKvView {
  float* k = nullptr;  // [num_blocks, block_size, num_kv_heads, head_dim]
  float* v = nullptr;  // same
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Stores the keys and values of `tokens` new tokens of one sequence.
// k, v: [tokens, num_kv_heads, head_dim]; positions: [tokens];
// block_table: [num_table_blocks] physical ids covering every position written.
void write_kv(const PagedKvView& cache, const float* k, const float* v, const int32_t* positions,
              int64_t tokens, const int32_t* block_table, int64_t num_table_blocks);

// Causal attention of `tokens` query tokens of one sequence, at positions
// start_pos .. start_pos+tokens-1, over the cached keys/values of positions 0 .. its own
// (the new tokens' K/V must already be written). Grouped-query: query head h reads KV head
// h / (num_heads / num_kv_heads).
// q: [tokens, num_heads, head_dim]; out: [tokens, num_heads, head_dim];
// block_table: [num_table_blocks].
void paged_attention(const PagedKvView& cache, const float* q, float* out, int64_t tokens,
                     int64_t num_heads, int64_t start_pos, const int32_t* block_table,
                     int64_t num_table_blocks, float scale);

}  // namespace shardserve::kernels::cpu
