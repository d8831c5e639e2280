#pragma once
// Speculative decoding's expected speedup (Leviathan et al. 2023, eq. 1 and its cost model):
// a draft model proposes K tokens, the target verifies them in one forward pass, and each
// draft token is accepted independently with probability a until the first rejection. The
// verify pass always yields one token of its own (the correction at the first rejection, or
// the bonus token when all K are accepted).
#include <cstdint>

namespace shardserve::planner {

struct SpeculativeParams {
  double acceptance = 0.8;  // a: probability that a draft token is accepted
  int64_t k = 4;            // K: tokens drafted per verify
  double draft_cost = 0.05; // c: one draft forward pass / one target forward pass (time)
};

// E[accepted drafts] = sum_{i=1..K} a^i (the i-th draft survives only if all before it did).
double expected_accepted_drafts(double acceptance, int64_t k);

// Tokens per verify = E[accepted] + 1 = sum_{i=0..K} a^i = (1 - a^(K+1)) / (1 - a),
// which is K + 1 at a = 1 and 1 at a = 0.
double expected_tokens_per_verify(double acceptance, int64_t k);

// Speedup over plain decoding = (E[accepted] + 1) / (1 + K * c): one verify plus K draft passes
// produce E[accepted] + 1 tokens, where plain decoding produces one per target pass. Assumes
// the verify pass of K + 1 tokens costs one decode step, which holds while decode is
// memory-bound (see roofline.h: compute_bound_batch).
double speculative_speedup(const SpeculativeParams& params);

// Throws unless 0 <= a <= 1, K >= 1 and c >= 0.
void validate_speculative(const SpeculativeParams& params);

}  // namespace shardserve::planner
