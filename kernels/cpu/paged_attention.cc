#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"

namespace shardserve::kernels::cpu {
namespace {

// Address of one token's head vector in the pool, after checking the table covers `pos`.
inline int64_t slot_offset(const PagedKvView& c, const int32_t* table, int64_t table_len,
                           int64_t pos) {
  const int64_t logical = pos / c.block_size;
  require(logical < table_len, "paged KV: position {} needs logical block {} but the block table "
          "has {} entries", pos, logical, table_len);
  const int64_t physical = table[logical];
  require(physical >= 0 && physical < c.num_blocks,
          "paged KV: block table entry {} = {} is outside the pool of {} blocks", logical,
          physical, c.num_blocks);
  return (physical * c.block_size + pos % c.block_size) * c.num_kv_heads * c.head_dim;
}

}  // namespace

void write_kv(const PagedKvView& cache, const float* k, const float* v, const int32_t* positions,
              int64_t tokens, const int32_t* block_table, int64_t num_table_blocks) {
  const int64_t row = cache.num_kv_heads * cache.head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t off = slot_offset(cache, block_table, num_table_blocks, positions[t]);
    std::copy(k + t * row, k + (t + 1) * row, cache.k + off);
    std::copy(v + t * row, v + (t + 1) * row, cache.v + off);
  }
}

void paged_attention(const PagedKvView& cache, const float* q, float* out, int64_t tokens,
                     int64_t num_heads, int64_t start_pos, const int32_t* block_table,
                     int64_t num_table_blocks, float scale) {
  const int64_t hd = cache.head_dim;
  const int64_t group = num_heads / cache.num_kv_heads;
  const int64_t context = start_pos + tokens;
  // Resolve every position's slot once: all heads and query tokens reuse the table walk.
  std::vector<int64_t> slots(context);
  for (int64_t p = 0; p < context; ++p) {
    slots[p] = slot_offset(cache, block_table, num_table_blocks, p);
  }
#pragma omp parallel for collapse(2) schedule(static) if (tokens * num_heads * context > 65536)
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      const int64_t kv_head = h / group;
      const float* qv = q + (t * num_heads + h) * hd;
      const int64_t visible = start_pos + t + 1;  // causal: itself and everything before
      std::vector<float> scores(visible);
      float max_score = -INFINITY;
      for (int64_t p = 0; p < visible; ++p) {
        const float* kv = cache.k + slots[p] + kv_head * hd;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < hd; ++i) dot += qv[i] * kv[i];
        scores[p] = dot * scale;
        max_score = std::max(max_score, scores[p]);
      }
      double denom = 0;
      for (int64_t p = 0; p < visible; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        denom += scores[p];
      }
      float* o = out + (t * num_heads + h) * hd;
      std::fill(o, o + hd, 0.0f);
      const float inv = static_cast<float>(1.0 / denom);
      for (int64_t p = 0; p < visible; ++p) {
        const float w = scores[p] * inv;
        const float* vv = cache.v + slots[p] + kv_head * hd;
        for (int64_t i = 0; i < hd; ++i) o[i] += w * vv[i];
      }
    }
  }
}

}  // namespace shardserve::kernels::cpu
