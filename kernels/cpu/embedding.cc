#include "kernels/cpu/embedding.h"

#include <algorithm>

namespace shardserve::kernels::cpu {

void embedding_lookup(const float* table, int64_t vocab_begin, int64_t shard_rows, int64_t dim,
                      const int32_t* ids, int64_t tokens, float* out) {
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t row = static_cast<int64_t>(ids[t]) - vocab_begin;
    float* o = out + t * dim;
    if (row >= 0 && row < shard_rows) {
      std::copy(table + row * dim, table + (row + 1) * dim, o);
    } else {
      std::fill(o, o + dim, 0.0f);
    }
  }
}

}  // namespace shardserve::kernels::cpu
