#include "worker/sampler.h"

#include "common/counter_rng.h"
#include "common/error.h"

namespace shardserve::worker {

kernels::cpu::PenaltyHistory Sampler::History::as_penalties() const {
  kernels::cpu::PenaltyHistory p;
  p.seen_tokens.reserve(seen.size());
  for (const auto& [t, _] : seen) p.seen_tokens.push_back(t);
  p.output_counts.assign(output_counts.begin(), output_counts.end());
  return p;
}

void Sampler::History::add(int32_t token, int64_t position, int32_t prompt_len) {
  if (position < next_position) return;
  seen[token] = true;
  if (position >= prompt_len) ++output_counts[token];
  next_position = position + 1;
}

void Sampler::observe(const messages::StepPlan& plan) {
  for (uint64_t id : plan.released) history_.erase(id);
  for (const auto& s : plan.seqs) {
    History& h = history_[s.seq_id];
    const int64_t history_begin = int64_t{s.start_pos} - s.history_len;
    for (int32_t i = 0; i < s.history_len; ++i) {
      h.add(plan.history_ids[s.history_offset + i], history_begin + i, s.prompt_len);
    }
    for (int32_t i = 0; i < s.num_tokens; ++i) {
      h.add(plan.token_ids[s.token_offset + i], int64_t{s.start_pos} + i, s.prompt_len);
    }
  }
}

messages::StepResult Sampler::sample(const messages::StepPlan& plan, const StepLogits& logits) {
  messages::StepResult result;
  result.step_id = plan.step_id;
  int64_t row = 0;
  for (const auto& s : plan.seqs) {
    if (s.num_logits == 0) continue;
    require(s.sampling_index >= 0 && s.sampling_index < int32_t(plan.sampling.size()),
            "step {}: sequence {} samples but has no sampling parameters", plan.step_id,
            s.seq_id);
    const auto& params = plan.sampling[s.sampling_index];
    const auto penalties = history_[s.seq_id].as_penalties();
    result.seq_ids.push_back(s.seq_id);
    result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
    for (int32_t j = 0; j < s.num_logits; ++j, ++row) {
      // The position the sampled token will occupy.
      const int64_t position = s.start_pos + s.num_tokens - s.num_logits + j + 1;
      const double u = counter_uniform(params.seed, position);
      auto sample = kernels::cpu::sample_token(logits.row(row), logits.vocab, params, penalties, u);
      messages::SampledToken t;
      t.token_id = sample.token;
      t.logprob = sample.logprob;
      t.top_ids = std::move(sample.top_ids);
      t.top_logprobs = std::move(sample.top_logprobs);
      result.tokens.push_back(std::move(t));
    }
  }
  result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
  return result;
}

}  // namespace shardserve::worker
