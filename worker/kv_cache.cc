#include "worker/kv_cache.h"

#include <limits>

#include "common/error.h"

namespace shardserve::worker {

KvCache::KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t kv_heads,
                 int64_t head_dim)
    : num_layers_(num_layers),
      num_blocks_(num_blocks),
      block_size_(block_size),
      kv_heads_(kv_heads),
      head_dim_(head_dim) {
  require(num_layers > 0 && num_blocks > 0 && block_size > 0 && kv_heads > 0 && head_dim > 0,
          "KV cache needs positive sizes (layers {}, blocks {}, block size {}, kv heads {}, "
          "head dim {})",
          num_layers, num_blocks, block_size, kv_heads, head_dim);
  const int64_t n = num_layers * num_blocks * block_size * kv_heads * head_dim;
  // NaN, not zero: a read of a slot nothing wrote poisons the result instead of hiding.
  k_.assign(n, std::numeric_limits<float>::quiet_NaN());
  v_.assign(n, std::numeric_limits<float>::quiet_NaN());
}

kernels::cpu::PagedKvView KvCache::layer(int64_t l) {
  const int64_t per_layer = num_blocks_ * block_size_ * kv_heads_ * head_dim_;
  return {k_.data() + l * per_layer, v_.data() + l * per_layer, num_blocks_, block_size_,
          kv_heads_, head_dim_};
}

int64_t KvCache::bytes() const {
  return static_cast<int64_t>((k_.size() + v_.size()) * sizeof(float));
}

}  // namespace shardserve::worker
