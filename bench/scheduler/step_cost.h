#pragma once
// The time one scheduled step would take on the GPU, from the planner's roofline: a step reads
// every weight once plus every scheduled sequence's KV, does 2 * params FLOPs per token plus
// attention, and takes the longer of its memory time and its compute time:
//   bytes   = weight_bytes_read + kv_bytes_per_token * sum(start_pos + num_tokens)
//   flops   = 2 * layer_params * sum(num_tokens) + 2 * lm_head_params * sum(num_logits)
//           + attention_flops_per_position * sum(num_tokens * start_pos + n (n + 1) / 2)
//   seconds = max(bytes / bandwidth, flops / flop_rate)
// Kernel launches, the sampler and host overhead are left out, so absolute times are lower
// bounds; the comparisons between policies are what the simulation is for.
#include <cstdint>
#include <span>

#include "messages/step_plan.h"
#include "tools/plan/gpu_spec.h"
#include "tools/plan/roofline.h"

namespace shardserve::bench {

class StepCostModel {
 public:
  StepCostModel(planner::RankCost cost, planner::GpuSpec gpu) : cost_(cost), gpu_(std::move(gpu)) {}

  // `padded_contexts`: decode slots that static batching keeps computing for sequences that
  // already finished (one pad token each, attending to that many positions).
  planner::StepEstimate step(const messages::StepPlan& plan,
                             std::span<const int32_t> padded_contexts = {}) const;

  const planner::RankCost& cost() const { return cost_; }
  const planner::GpuSpec& gpu() const { return gpu_; }

 private:
  planner::RankCost cost_;
  planner::GpuSpec gpu_;
};

}  // namespace shardserve::bench
