#include "worker/plan_validation.h"

#include "common/error.h"

namespace shardserve::worker {

void validate_plan(const messages::StepPlan& plan, const PlanLimits& limits) {
  const int64_t bs = limits.block_size;
  require(limits.max_tokens < 0 || plan.total_tokens() <= limits.max_tokens,
          "step {}: {} tokens exceed the runner's max_tokens_per_step {}", plan.step_id,
          plan.total_tokens(), limits.max_tokens);
  require(limits.max_block_entries < 0 ||
              int64_t(plan.block_ids.size()) <= limits.max_block_entries,
          "step {}: {} block table entries exceed the runner's capacity {}", plan.step_id,
          plan.block_ids.size(), limits.max_block_entries);
  int64_t rows = 0;
  for (const auto& s : plan.seqs) {
    require(s.num_tokens > 0 && s.start_pos >= 0,
            "step {}: sequence {} has {} tokens at start position {}", plan.step_id, s.seq_id,
            s.num_tokens, s.start_pos);
    require(s.num_logits >= 0 && s.num_logits <= s.num_tokens,
            "step {}: sequence {} asks for {} logits from {} tokens", plan.step_id, s.seq_id,
            s.num_logits, s.num_tokens);
    require(s.token_offset >= 0 && s.token_offset + s.num_tokens <= plan.total_tokens(),
            "step {}: sequence {} token range is outside the plan", plan.step_id, s.seq_id);
    const int64_t end = int64_t{s.start_pos} + s.num_tokens;
    require(end <= limits.max_positions,
            "step {}: sequence {} reaches position {} beyond the context length {}", plan.step_id,
            s.seq_id, end, limits.max_positions);
    require(s.history_len >= 0 && s.history_len <= s.start_pos && s.history_offset >= 0 &&
                s.history_offset + s.history_len <= int64_t(plan.history_ids.size()),
            "step {}: sequence {} history range is outside the plan", plan.step_id, s.seq_id);
    require(s.block_offset >= 0 && s.block_offset + s.num_blocks <= int64_t(plan.block_ids.size()),
            "step {}: sequence {} block table is outside the plan", plan.step_id, s.seq_id);
    require(int64_t{s.num_blocks} * bs >= end,
            "step {}: sequence {} has {} blocks of {} tokens, too few for {} positions",
            plan.step_id, s.seq_id, s.num_blocks, bs, end);
    for (int32_t t = s.token_offset; t < s.token_offset + s.num_tokens; ++t) {
      require(plan.token_ids[t] >= 0 && plan.token_ids[t] < limits.vocab_size,
              "step {}: sequence {} has token id {} outside the vocabulary ({})", plan.step_id,
              s.seq_id, plan.token_ids[t], limits.vocab_size);
    }
    // Every entry the step can touch (positions 0 .. end-1) must be inside the pool: neither the
    // GPU kernels nor the CPU attention check.
    const int64_t used = (end + bs - 1) / bs;
    for (int64_t b = 0; b < used; ++b) {
      const int32_t id = plan.block_ids[s.block_offset + b];
      require(id >= 0 && id < limits.num_blocks,
              "step {}: sequence {}: paged KV: block table entry {} = {} is outside the pool of "
              "{} blocks", plan.step_id, s.seq_id, b, id, limits.num_blocks);
    }
    rows += s.num_logits;
  }
  require(limits.max_logits < 0 || rows <= limits.max_logits,
          "step {}: {} logit rows exceed the runner's max_logits_per_step {}", plan.step_id, rows,
          limits.max_logits);
}

}  // namespace shardserve::worker
