#pragma once
// Turns a step's logits into sampled tokens. Keeps, per sequence, what the penalties need
// (tokens seen, output token counts), rebuilt from the tokens the plans feed, so it stays right
// across chunked prefill and preemption by recomputation. Random draws come from the counter
// stream keyed by (seed, position): a seeded request reproduces exactly however it was batched.
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/sampling.h"
#include "messages/step_plan.h"
#include "worker/model_runner.h"

namespace shardserve::worker {

class Sampler {
 public:
  // Records the plan's fed tokens and drops released sequences. Call before sample().
  void observe(const messages::StepPlan& plan);
  // logits: the ModelRunner's output for the same plan.
  messages::StepResult sample(const messages::StepPlan& plan, const StepLogits& logits);

  std::size_t tracked_sequences() const { return history_.size(); }

 private:
  struct History {
    std::unordered_map<int32_t, int32_t> output_counts;
    std::unordered_map<int32_t, bool> seen;
    kernels::cpu::PenaltyHistory as_penalties() const;
  };
  std::unordered_map<uint64_t, History> history_;
};

}  // namespace shardserve::worker
