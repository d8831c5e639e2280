#include "coordinator/ngram_proposer.h"

#include <algorithm>

namespace shardserve::coordinator {

std::vector<int32_t> propose_ngram(std::span<const int32_t> tokens, int32_t k, int32_t n_min,
                                   int32_t n_max) {
  const int64_t len = static_cast<int64_t>(tokens.size());
  if (k <= 0) return {};
  for (int64_t n = std::min<int64_t>(n_max, len - 1); n >= std::max(n_min, 1); --n) {
    const auto suffix = tokens.subspan(len - n, n);
    int64_t best = -1;  // start of the chosen occurrence
    // Occurrences [i, i + n) with i + n <= len - 1, so at least one token follows; most recent
    // first.
    for (int64_t i = len - n - 1; i >= 0; --i) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + i)) continue;
      best = i;  // scanning backwards: the last one seen is the earliest (longest continuation)
      if (i + n + k <= len) break;  // the most recent one that supplies all k tokens
    }
    if (best < 0) continue;
    const int64_t from = best + n, to = std::min<int64_t>(from + k, len);
    return std::vector<int32_t>(tokens.begin() + from, tokens.begin() + to);
  }
  return {};
}

}  // namespace shardserve::coordinator
