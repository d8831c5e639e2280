#pragma once
// Builds StepPlans by hand for worker tests: one entry per sequence, flattened the way the
// coordinator flattens them.
#include <vector>

#include "messages/step_plan.h"

namespace shardserve::testing_support {

struct SeqChunk {
  uint64_t id = 0;
  std::vector<int32_t> tokens;   // the new tokens of this step
  int32_t start_pos = 0;
  int32_t num_logits = 1;
  std::vector<int32_t> blocks;   // the whole block table
  int32_t prompt_len = 0;
  messages::SamplingParams sampling{};
};

inline messages::StepPlan make_plan(const std::vector<SeqChunk>& chunks, uint64_t step_id = 0) {
  messages::StepPlan plan;
  plan.step_id = step_id;
  for (const auto& c : chunks) {
    messages::SequenceWork s;
    s.seq_id = c.id;
    s.start_pos = c.start_pos;
    s.num_tokens = static_cast<int32_t>(c.tokens.size());
    s.num_logits = c.num_logits;
    s.prompt_len = c.prompt_len;
    s.token_offset = plan.total_tokens();
    s.block_offset = static_cast<int32_t>(plan.block_ids.size());
    s.num_blocks = static_cast<int32_t>(c.blocks.size());
    if (c.num_logits > 0) {
      s.sampling_index = static_cast<int32_t>(plan.sampling.size());
      plan.sampling.push_back(c.sampling);
    }
    plan.token_ids.insert(plan.token_ids.end(), c.tokens.begin(), c.tokens.end());
    plan.block_ids.insert(plan.block_ids.end(), c.blocks.begin(), c.blocks.end());
    plan.seqs.push_back(s);
  }
  return plan;
}

}  // namespace shardserve::testing_support
