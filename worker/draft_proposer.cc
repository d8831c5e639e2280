#include "worker/draft_proposer.h"

#include <algorithm>

#include "common/counter_rng.h"
#include "common/error.h"
#include "kernels/cpu/sampling.h"

namespace shardserve::worker {
namespace {

bool drafts_with_model(const messages::SequenceWork& s) {
  return s.num_draft > 0 && s.draft_source == messages::DraftSource::kDraftModel;
}

// One sequence of a draft pass: tokens at [start, start + tokens.size()), logits of the last
// when `logits`.
void add_work(messages::StepPlan& p, const messages::StepPlan& plan,
              const messages::SequenceWork& s, int64_t start, std::span<const int32_t> tokens,
              bool logits) {
  messages::SequenceWork w;
  w.seq_id = s.seq_id;
  w.start_pos = static_cast<int32_t>(start);
  w.num_tokens = static_cast<int32_t>(tokens.size());
  w.num_logits = logits ? 1 : 0;
  w.prompt_len = s.prompt_len;
  w.token_offset = p.total_tokens();
  p.token_ids.insert(p.token_ids.end(), tokens.begin(), tokens.end());
  w.block_offset = static_cast<int32_t>(p.block_ids.size());
  w.num_blocks = s.num_blocks;
  p.block_ids.insert(p.block_ids.end(), plan.block_ids.begin() + s.block_offset,
                     plan.block_ids.begin() + s.block_offset + s.num_blocks);
  if (logits) {
    w.sampling_index = static_cast<int32_t>(p.sampling.size());
    p.sampling.push_back(plan.sampling.at(s.sampling_index));
  }
  p.seqs.push_back(w);
}

}  // namespace

int64_t DraftProposer::valid_end(uint64_t seq_id) const {
  auto it = state_.find(seq_id);
  return it == state_.end() ? -1 : it->second.end;
}

StepLogits DraftProposer::forward(const messages::StepPlan& plan) {
  const auto t0 = std::chrono::steady_clock::now();
  StepLogits l = draft_.forward(plan);
  forward_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++forward_passes_;
  return l;
}

void DraftProposer::release(const std::vector<uint64_t>& seq_ids) {
  for (uint64_t id : seq_ids) state_.erase(id);
}

DraftProposer::Proposal DraftProposer::propose(const messages::StepPlan& plan,
                                               const Sampler& sampler) {
  release(plan.released);
  Proposal out;
  out.target_plan = plan;
  if (plan.seqs.empty()) return out;

  // A sequence that drafts: what its passes need between them.
  struct Drafting {
    std::size_t index;  // in plan.seqs
    int32_t k;
    int64_t first_pos;  // position of d_1 (= the target's first verified position)
    kernels::cpu::PenaltyHistory history;
    std::vector<std::vector<double>>* probs;
  };
  std::vector<Drafting> drafting;

  // Pass 1: catch up and feed the plan's tokens (every sequence); logits for the drafting ones.
  messages::StepPlan pass;
  pass.step_id = plan.step_id;
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) {
    const auto& s = plan.seqs[i];
    const int32_t real = s.num_tokens - std::max(s.num_draft, 0);
    require(real >= 1, "step {}: sequence {} has {} tokens of which {} are drafts", plan.step_id,
            s.seq_id, s.num_tokens, s.num_draft);
    const int64_t real_end = int64_t{s.start_pos} + real;
    auto [it, fresh] = state_.try_emplace(s.seq_id);
    SeqState& st = it->second;
    // A new sequence, or one that starts past a prefix-cache hit: the shared blocks hold the
    // draft's KV of those tokens (it mirrors every sequence). A start before `end` is a
    // recomputation after preemption or a rollback: its KV is rewritten from there.
    int64_t begin = fresh ? s.start_pos : std::min<int64_t>(st.end, s.start_pos);
    std::vector<int32_t> tokens;
    for (int64_t p = begin; p < s.start_pos; ++p) {
      const int64_t k = p - st.proposed_pos;
      if (k < 0 || k >= static_cast<int64_t>(st.proposed.size())) {
        // Not a token this worker proposed or was shown: nothing to catch up with (the KV there
        // may be stale; that costs acceptance, never correctness).
        tokens.clear();
        begin = s.start_pos;
        break;
      }
      tokens.push_back(st.proposed[k]);
    }
    tokens.insert(tokens.end(), plan.token_ids.begin() + s.token_offset,
                  plan.token_ids.begin() + s.token_offset + real);
    const bool draft = drafts_with_model(s);
    add_work(pass, plan, s, begin, tokens, draft);
    st.end = real_end;
    st.proposed_pos = real_end;
    st.proposed.clear();
    if (s.num_draft > 0 && !draft) {  // prompt-lookup drafts: remembered for the catch-up
      st.proposed.assign(plan.token_ids.begin() + s.token_offset + real,
                         plan.token_ids.begin() + s.token_offset + s.num_tokens);
    }
    if (draft) {
      auto& probs = out.distributions.by_seq[s.seq_id];
      probs.reserve(s.num_draft);
      drafting.push_back({i, s.num_draft, real_end, sampler.penalty_history(s.seq_id), &probs});
    }
  }

  for (int32_t j = 0;; ++j) {
    const StepLogits logits = forward(pass);
    if (drafting.empty()) break;
    require(logits.rows == static_cast<int64_t>(drafting.size()),
            "step {}: draft pass {} returned {} logit rows for {} drafting sequences",
            plan.step_id, j + 1, logits.rows, drafting.size());
    // Draw d_{j+1} for every sequence in this pass, in pass order (= drafting order).
    int64_t row = 0;
    messages::StepPlan next;
    next.step_id = plan.step_id;
    std::vector<Drafting> still;
    for (auto& d : drafting) {
      const auto& s = plan.seqs[d.index];
      const auto& params = plan.sampling.at(s.sampling_index);
      const int64_t position = d.first_pos + j;
      std::vector<double> q =
          kernels::cpu::sampling_distribution(logits.row(row++), logits.vocab, params, d.history);
      const int32_t token = kernels::cpu::sample_from_distribution(
          q, counter_uniform(params.seed, position, kStreamDraft));
      d.probs->push_back(std::move(q));
      out.target_plan.token_ids[s.token_offset + s.num_tokens - d.k + j] = token;
      SeqState& st = state_.at(s.seq_id);
      st.proposed.push_back(token);
      if (j + 1 < d.k) {
        // Feed d_{j+1} to draw the next one; the last draft is never fed (the target verifies
        // it; the draft catches up next step if it is accepted).
        kernels::cpu::add_to_history(d.history, token, position >= s.prompt_len);
        const int32_t one[1] = {token};
        add_work(next, plan, s, position, one, true);
        st.end = position + 1;
        still.push_back(std::move(d));
      }
    }
    if (still.empty()) break;
    drafting = std::move(still);
    pass = std::move(next);
  }
  return out;
}

void DraftProposer::on_result(const messages::StepPlan& target_plan,
                              const messages::StepResult& result) {
  std::unordered_map<uint64_t, int32_t> returned;
  for (std::size_t i = 0; i < result.seq_ids.size(); ++i)
    returned[result.seq_ids[i]] = result.sample_offsets[i + 1] - result.sample_offsets[i];
  for (const auto& s : target_plan.seqs) {
    if (s.num_draft <= 0) continue;
    auto st = state_.find(s.seq_id);
    auto r = returned.find(s.seq_id);
    if (st == state_.end() || r == returned.end()) continue;
    const int64_t accepted = std::max(0, r->second - 1);
    // The draft's KV holds d_1 .. d_{K-1} (if it drafted) at first_pos .. first_pos + K - 2;
    // only the accepted ones are the sequence's tokens.
    const int64_t first_pos = int64_t{s.start_pos} + s.num_tokens - s.num_draft;
    st->second.end = std::min(st->second.end, first_pos + accepted);
  }
}

}  // namespace shardserve::worker
