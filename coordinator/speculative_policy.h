#pragma once
// How many draft tokens a speculating request verifies in a step (docs/speculative.md).
//
// Fixed K: the request's K (its own, or the engine's), clipped so that the step cannot overrun
// what the request may still produce: a verify yields up to K + 1 tokens, so
//   K <= max_tokens - outputs - 1  and  K <= max_model_len - tokens - 1,
// and by the token budget left after every other running decode got its one token.
//
// Adaptive K: each verify of K drafts that accepted `a` of them is a run of Bernoulli trials
// stopped at the first rejection: a successes in a + [a < K] trials. The acceptance rate is the
// exponentially weighted ratio successes / trials (the prior counts as two trials at the initial
// rate), and K is the value in [1, K_max] that maximises expected tokens per unit of step time
//   (1 + a + a^2 + ... + a^K) / (1 + K * c),
// the seed's speedup formula with c = draft_cost. K never drops to 0: a verify of one draft
// keeps measuring, and costs little.
#include <cstdint>

namespace shardserve::coordinator {

// Expected tokens of one verify of k drafts at acceptance rate a: sum_{i=0..k} a^i.
double expected_tokens_per_verify(double acceptance, int32_t k);

// argmax over k in [1, k_max] of expected_tokens_per_verify(a, k) / (1 + k * draft_cost); the
// smallest such k on ties. k_max >= 1.
int32_t best_num_draft(double acceptance, int32_t k_max, double draft_cost);

struct AcceptanceEstimate {
  double successes = 0;
  double trials = 0;
  // One verify: `accepted` of `proposed` drafts. decay: weight of the past, in [0, 1).
  void update(int32_t accepted, int32_t proposed, double decay);
  // The estimate, with `prior` counted as two trials.
  double rate(double prior) const { return (successes + 2 * prior) / (trials + 2); }
};

}  // namespace shardserve::coordinator
