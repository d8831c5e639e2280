#include "tools/plan/speculative.h"

#include <cmath>

#include "common/error.h"

namespace shardserve::planner {

void validate_speculative(const SpeculativeParams& params) {
  require(params.acceptance >= 0.0 && params.acceptance <= 1.0,
          "speculative acceptance rate must be in [0, 1], got {}", params.acceptance);
  require(params.k >= 1, "speculative K (draft tokens per verify) must be at least 1, got {}",
          params.k);
  require(params.draft_cost >= 0.0, "speculative draft cost must not be negative, got {}",
          params.draft_cost);
}

double expected_tokens_per_verify(double acceptance, int64_t k) {
  validate_speculative({acceptance, k, 0.0});
  // The closed form divides 0 by 0 at a = 1, where every draft is accepted.
  if (acceptance == 1.0) return static_cast<double>(k + 1);
  return (1.0 - std::pow(acceptance, static_cast<double>(k + 1))) / (1.0 - acceptance);
}

double expected_accepted_drafts(double acceptance, int64_t k) {
  return expected_tokens_per_verify(acceptance, k) - 1.0;
}

double speculative_speedup(const SpeculativeParams& params) {
  validate_speculative(params);
  return expected_tokens_per_verify(params.acceptance, params.k) /
         (1.0 + static_cast<double>(params.k) * params.draft_cost);
}

}  // namespace shardserve::planner
