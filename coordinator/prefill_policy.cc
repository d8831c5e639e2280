#include "coordinator/prefill_policy.h"

#include <algorithm>

namespace shardserve::coordinator {

int32_t prefill_chunk(int32_t remaining, int32_t budget, bool chunked) {
  if (remaining <= 0 || budget <= 0) return 0;
  if (remaining <= budget) return remaining;
  return chunked ? budget : 0;
}

int32_t max_cached_blocks(int32_t num_tokens, int32_t block_size) {
  return std::max(0, num_tokens - 1) / block_size;
}

}  // namespace shardserve::coordinator
