#pragma once
// The checks every forward-pass backend makes of a StepPlan before touching its KV pool
// (worker::ModelRunner, worker::cuda::CudaModelRunner): one function, so the CPU reference and the
// GPU runner refuse the same plans with the same messages.
#include <cstdint>

#include "messages/step_plan.h"

namespace shardserve::worker {

struct PlanLimits {
  int64_t vocab_size = 0;
  int64_t max_positions = 0;  // the model's context length
  int64_t block_size = 0;
  int64_t num_blocks = 0;     // the pool: every block id the step touches must be below it
  // Per-step capacities of a backend with fixed buffers (-1: none).
  int64_t max_tokens = -1;
  int64_t max_logits = -1;
  int64_t max_block_entries = -1;
};

// Throws Error naming the step, the sequence and the violated limit: token, logit, history and
// block-table ranges inside the plan; positions within the context; enough blocks for the
// positions; block ids inside the pool; token ids inside the vocabulary (a -1 draft placeholder
// the worker forgot to fill is caught here).
void validate_plan(const messages::StepPlan& plan, const PlanLimits& limits);

}  // namespace shardserve::worker
