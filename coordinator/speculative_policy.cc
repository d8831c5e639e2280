#include "coordinator/speculative_policy.h"

namespace shardserve::coordinator {

double expected_tokens_per_verify(double a, int32_t k) {
  double total = 0, term = 1;
  for (int32_t i = 0; i <= k; ++i, term *= a) total += term;
  return total;
}

int32_t best_num_draft(double a, int32_t k_max, double c) {
  int32_t best = 1;
  double best_rate = expected_tokens_per_verify(a, 1) / (1 + c);
  for (int32_t k = 2; k <= k_max; ++k) {
    const double rate = expected_tokens_per_verify(a, k) / (1 + k * c);
    if (rate > best_rate * (1 + 1e-12)) {
      best = k;
      best_rate = rate;
    }
  }
  return best;
}

void AcceptanceEstimate::update(int32_t accepted, int32_t proposed, double decay) {
  successes = decay * successes + accepted;
  trials = decay * trials + accepted + (accepted < proposed ? 1 : 0);
}

}  // namespace shardserve::coordinator
