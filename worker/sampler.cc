#include "worker/sampler.h"

#include <span>

#include "common/counter_rng.h"
#include "common/error.h"

namespace shardserve::worker {
namespace {

bool uses_penalties(const messages::SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f ||
         p.presence_penalty != 0.0f;
}

// The position the token sampled from logit row j of s will occupy.
int64_t sampled_position(const messages::SequenceWork& s, int32_t j) {
  return int64_t{s.start_pos} + s.num_tokens - s.num_logits + j + 1;
}

// Whether every sampled row has sampling parameters, no drafts to verify and no top logprobs:
// what the device paths can give (Sampler::sampling_site says why).
bool device_samplable(const messages::StepPlan& plan) {
  for (const auto& s : plan.seqs) {
    if (s.num_logits == 0) continue;
    if (s.num_draft != 0 || s.sampling_index < 0 ||
        s.sampling_index >= int32_t(plan.sampling.size()) ||
        plan.sampling[s.sampling_index].logprobs > 0)
      return false;
  }
  return true;
}

messages::SampledToken to_message(kernels::cpu::Sample sample) {
  messages::SampledToken t;
  t.token_id = sample.token;
  t.logprob = sample.logprob;
  t.top_ids = std::move(sample.top_ids);
  t.top_logprobs = std::move(sample.top_logprobs);
  return t;
}

}  // namespace

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

kernels::cpu::PenaltyHistory Sampler::penalty_history(uint64_t seq_id) const {
  auto it = history_.find(seq_id);
  return it == history_.end() ? kernels::cpu::PenaltyHistory{} : it->second.as_penalties();
}

void Sampler::observe(const messages::StepPlan& plan) {
  for (uint64_t id : plan.released) history_.erase(id);
  for (const auto& s : plan.seqs) {
    History& h = history_[s.seq_id];
    const int64_t history_begin = int64_t{s.start_pos} - s.history_len;
    for (int32_t i = 0; i < s.history_len; ++i) {
      h.add(plan.history_ids[s.history_offset + i], history_begin + i, s.prompt_len);
    }
    // Draft tokens are counted when (if) they are accepted: see verify().
    const int32_t fed = s.num_tokens - std::max(s.num_draft, 0);
    for (int32_t i = 0; i < fed; ++i) {
      h.add(plan.token_ids[s.token_offset + i], int64_t{s.start_pos} + i, s.prompt_len);
    }
  }
}

messages::StepResult Sampler::sample(const messages::StepPlan& plan, const StepLogits& logits,
                                     const DraftDistributions* drafts, VerifyCounts* counts) {
  messages::StepResult result;
  result.step_id = plan.step_id;
  int64_t row = 0;
  for (const auto& s : plan.seqs) {
    if (s.num_logits == 0) continue;
    require(s.sampling_index >= 0 && s.sampling_index < int32_t(plan.sampling.size()),
            "step {}: sequence {} samples but has no sampling parameters", plan.step_id,
            s.seq_id);
    require(row + s.num_logits <= logits.rows,
            "step {}: sequence {} needs logit rows {}..{} of {}", plan.step_id, s.seq_id, row,
            row + s.num_logits, logits.rows);
    result.seq_ids.push_back(s.seq_id);
    result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
    if (s.num_draft > 0) {
      verify(plan, s, logits, row, drafts, result, counts);
      row += s.num_logits;
      continue;
    }
    const auto& params = plan.sampling[s.sampling_index];
    const auto penalties =
        uses_penalties(params) ? history_[s.seq_id].as_penalties() : kernels::cpu::PenaltyHistory{};
    for (int32_t j = 0; j < s.num_logits; ++j, ++row) {
      const double u = counter_uniform(params.seed, sampled_position(s, j), kStreamSample);
      result.tokens.push_back(to_message(
          kernels::cpu::sample_token(logits.row(row), logits.vocab, params, penalties, u)));
    }
  }
  result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
  return result;
}

SamplingSite Sampler::sampling_site(const messages::StepPlan& plan,
                                    bool runner_samples_on_device, bool draft_model) {
  if (!runner_samples_on_device || draft_model || !device_samplable(plan)) {
    return SamplingSite::kHost;
  }
  return plain_greedy(plan) ? SamplingSite::kDeviceGreedy : SamplingSite::kDevice;
}

bool Sampler::plain_greedy(const messages::StepPlan& plan) {
  if (!device_samplable(plan)) return false;
  for (const auto& s : plan.seqs) {
    if (s.num_logits == 0) continue;
    const auto& p = plan.sampling[s.sampling_index];
    if (!p.greedy() || uses_penalties(p)) return false;
  }
  return true;
}

DeviceSamplingInputs Sampler::device_inputs(const messages::StepPlan& plan) const {
  require(device_samplable(plan),
          "step {}: device_inputs on a plan with drafts, top logprobs or rows without sampling "
          "parameters (Sampler::sampling_site keeps those on the host)", plan.step_id);
  DeviceSamplingInputs in;
  in.seen_offsets.push_back(0);
  in.count_offsets.push_back(0);
  for (const auto& s : plan.seqs) {
    if (s.num_logits == 0) continue;
    const auto& params = plan.sampling[s.sampling_index];
    // As sample(): the history only where a penalty reads it, the same for every row of the
    // sequence (the step's own sampled tokens are not fed yet).
    const auto penalties =
        uses_penalties(params) ? penalty_history(s.seq_id) : kernels::cpu::PenaltyHistory{};
    for (int32_t j = 0; j < s.num_logits; ++j) {
      in.params.push_back(params);
      in.uniforms.push_back(counter_uniform(params.seed, sampled_position(s, j), kStreamSample));
      in.seen_tokens.insert(in.seen_tokens.end(), penalties.seen_tokens.begin(),
                            penalties.seen_tokens.end());
      in.seen_offsets.push_back(static_cast<int32_t>(in.seen_tokens.size()));
      for (const auto& [token, count] : penalties.output_counts) {
        in.count_tokens.push_back(token);
        in.counts.push_back(count);
      }
      in.count_offsets.push_back(static_cast<int32_t>(in.count_tokens.size()));
    }
  }
  return in;
}

messages::StepResult Sampler::from_device_rows(const messages::StepPlan& plan,
                                               const std::vector<DeviceSample>& rows) const {
  require(device_samplable(plan),
          "step {}: from_device_rows on a plan with drafts, top logprobs or rows without "
          "sampling parameters (Sampler::sampling_site keeps those on the host)", plan.step_id);
  messages::StepResult result;
  result.step_id = plan.step_id;
  std::size_t row = 0;
  for (const auto& s : plan.seqs) {
    if (s.num_logits == 0) continue;
    require(row + s.num_logits <= rows.size(), "step {}: sequence {} needs device rows {}..{} of {}",
            plan.step_id, s.seq_id, row, row + s.num_logits, rows.size());
    result.seq_ids.push_back(s.seq_id);
    result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
    for (int32_t j = 0; j < s.num_logits; ++j, ++row) {
      messages::SampledToken t;
      t.token_id = rows[row].token;
      t.logprob = rows[row].logprob;
      result.tokens.push_back(std::move(t));
    }
  }
  require(row == rows.size(), "step {}: {} device rows for a plan of {} logit rows", plan.step_id,
          rows.size(), row);
  result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
  return result;
}

void Sampler::verify(const messages::StepPlan& plan, const messages::SequenceWork& s,
                     const StepLogits& logits, int64_t first_row, const DraftDistributions* drafts,
                     messages::StepResult& result, VerifyCounts* counts) {
  const int32_t k = s.num_draft;
  require(s.num_logits == k + 1 && k < s.num_tokens,
          "step {}: sequence {} verifies {} draft tokens with {} logits of {} tokens (want "
          "num_logits = num_draft + 1 <= num_tokens)",
          plan.step_id, s.seq_id, k, s.num_logits, s.num_tokens);
  const auto& params = plan.sampling[s.sampling_index];
  const std::vector<std::vector<double>>* draft_probs = nullptr;
  if (drafts) {
    auto it = drafts->by_seq.find(s.seq_id);
    if (it != drafts->by_seq.end()) draft_probs = &it->second;
  }
  require(draft_probs || s.draft_source == messages::DraftSource::kPlan,
          "step {}: sequence {} has draft-model drafts but no draft distributions", plan.step_id,
          s.seq_id);
  require(!draft_probs || static_cast<int32_t>(draft_probs->size()) == k,
          "step {}: sequence {} has {} draft distributions for {} draft tokens", plan.step_id,
          s.seq_id, draft_probs ? draft_probs->size() : 0, k);
  History& h = history_[s.seq_id];
  const bool penalised = uses_penalties(params);
  // Row j's sampled token occupies position first_pos + j; draft token j + 1 (fed at offset
  // num_tokens - k + j) occupies the same position.
  const int64_t first_pos = int64_t{s.start_pos} + s.num_tokens - k;
  if (counts) {
    ++counts->sequences;
    counts->proposed += k;
  }
  for (int32_t j = 0; j <= k; ++j) {
    const int64_t position = first_pos + j;
    const float* row = logits.row(first_row + j);
    const auto penalties = penalised ? h.as_penalties() : kernels::cpu::PenaltyHistory{};
    if (j == k) {  // every draft accepted: the bonus token, drawn as plain decoding draws it
      if (counts) ++counts->all_accepted;
      const double u = counter_uniform(params.seed, position, kStreamSample);
      result.tokens.push_back(
          to_message(kernels::cpu::sample_token(row, logits.vocab, params, penalties, u)));
      return;
    }
    const int32_t d = plan.token_ids[s.token_offset + s.num_tokens - k + j];
    require(d >= 0 && d < logits.vocab, "step {}: sequence {} draft token {} is {}", plan.step_id,
            s.seq_id, j, d);
    const std::vector<double> target =
        kernels::cpu::sampling_distribution(row, logits.vocab, params, penalties);
    std::span<const double> draft;
    if (draft_probs) {
      draft = (*draft_probs)[j];
      require(static_cast<int64_t>(draft.size()) == logits.vocab,
              "step {}: sequence {}: draft distribution over {} tokens, target vocabulary {}",
              plan.step_id, s.seq_id, draft.size(), logits.vocab);
    }
    const auto verdict = kernels::cpu::verify_draft_token(
        target, draft, d, counter_uniform(params.seed, position, kStreamAccept),
        counter_uniform(params.seed, position, kStreamSample));
    result.tokens.push_back(to_message(
        kernels::cpu::describe_token(row, logits.vocab, verdict.token, params.logprobs)));
    if (!verdict.accepted) return;  // the resampled token is fed (and counted) next step
    if (counts) ++counts->accepted;
    h.add(d, position, s.prompt_len);
  }
}

}  // namespace shardserve::worker
