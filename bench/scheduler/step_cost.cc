#include "bench/scheduler/step_cost.h"

namespace shardserve::bench {

planner::StepEstimate StepCostModel::step(const messages::StepPlan& plan,
                                          std::span<const int32_t> padded_contexts) const {
  double kv_positions = 0, tokens = 0, logits = 0, pairs = 0;
  for (const auto& w : plan.seqs) {
    const double s = w.start_pos, n = w.num_tokens;
    kv_positions += s + n;
    tokens += n;
    logits += w.num_logits;
    pairs += n * s + n * (n + 1) / 2;  // causal: new token i sees s + i + 1 positions
  }
  for (int32_t c : padded_contexts) {
    kv_positions += c + 1;
    tokens += 1;
    logits += 1;
    pairs += c + 1;
  }
  planner::StepEstimate e;
  e.bytes = cost_.weight_bytes_read + cost_.kv_bytes_per_token * kv_positions;
  e.flops = 2.0 * cost_.layer_linear_params * tokens + 2.0 * cost_.lm_head_params * logits +
            cost_.attention_flops_per_position * pairs;
  e.memory_s = e.bytes / gpu_.bandwidth_bytes_per_s;
  e.compute_s = e.flops / gpu_.flops_per_s;
  return e;
}

}  // namespace shardserve::bench
