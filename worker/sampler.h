#pragma once
// Turns a step's logits into sampled tokens. Keeps, per sequence, what the penalties need
// (tokens seen, output token counts), built from the tokens the plans feed. Each position is
// counted once: a recomputation after preemption feeds positions again and changes nothing. Random draws come from the counter
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
    int64_t next_position = 0;  // positions below this have been counted
    void add(int32_t token, int64_t position, int32_t prompt_len);
    kernels::cpu::PenaltyHistory as_penalties() const;
  };
  std::unordered_map<uint64_t, History> history_;
};

}  // namespace shardserve::worker
