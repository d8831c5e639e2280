#include "coordinator/decode_policy.h"

#include <algorithm>

namespace shardserve::coordinator {

std::vector<Request*> order_running(std::span<Request* const> running) {
  std::vector<Request*> order(running.begin(), running.end());
  std::stable_sort(order.begin(), order.end(), [](const Request* a, const Request* b) {
    if (a->is_decoding() != b->is_decoding()) return a->is_decoding();
    return a->key() < b->key();
  });
  return order;
}

}  // namespace shardserve::coordinator
