#pragma once
// worker::StepExecutor: everything one worker rank does with a StepPlan, for the in-process
// engine (tools/generate) and the MPI worker loop alike:
//
//   observe (penalty state, releases) -> draft model proposes (if the plan asks for it) ->
//   target forward over [fed tokens, drafts] -> sample, or verify the drafts -> StepResult
//
// It owns the Sampler and, with a draft model, the DraftProposer; the forward passes are the
// caller's StepRunners (CPU reference or CUDA), so the same code drives either backend. Plans
// without drafts go through exactly the path they always took (observe, forward, sample).
//
// Tensor parallelism (docs/speculative.md, "Where the draft runs"):
//   kEveryRank  every rank holds a draft runner sharded over the same group as the target; all
//               ranks compute the same drafts (identical gathered logits, counter-based draws)
//               and the same verification; rank 0's result is the one sent.
//   kRankZero   only rank 0 holds a draft runner (TP = 1, full draft weights); it drafts and
//               broadcasts the draft tokens over `host_group` (host float32 buffers: token ids
//               are exact in float32 below 2^24) before the target forward; only rank 0
//               samples. Other ranks pass draft = nullptr.
#include <cstdint>
#include <memory>
#include <optional>

#include "comm/collective.h"
#include "messages/step_plan.h"
#include "worker/cuda/step_runner.h"
#include "worker/draft_proposer.h"
#include "worker/sampler.h"

namespace shardserve::worker {

enum class DraftPlacement { kEveryRank, kRankZero };

struct StepExecutorOptions {
  int rank = 0;  // tensor-parallel rank of this worker (0 samples and replies)
  DraftPlacement placement = DraftPlacement::kEveryRank;
  comm::Collective* host_group = nullptr;  // kRankZero with more than one rank
};

// Counters since construction (for the benchmark and the metrics).
struct ExecutorCounters {
  int64_t steps = 0;               // plans with work
  int64_t verify_sequences = 0;    // sequence-steps that verified drafts
  int64_t proposed_tokens = 0;     // draft tokens verified
  int64_t accepted_tokens = 0;     // of those, accepted
  int64_t all_accepted = 0;        // verifies that accepted every draft (bonus token)
  int64_t target_passes = 0;
  double target_seconds = 0;       // wall time in the target's forward
  int64_t draft_passes = 0;
  double draft_seconds = 0;        // wall time in the draft's forwards (pass 1 included)
  // Accepted / proposed (the monitoring catalogue's ratio). Drafts after a rejection count as
  // proposed, so this is below the per-token acceptance probability.
  double acceptance_rate() const {
    return proposed_tokens ? double(accepted_tokens) / double(proposed_tokens) : 0.0;
  }
  // The per-token acceptance probability a of the seed's formula: each verify is a run of
  // Bernoulli(a) trials stopped at the first rejection, so the maximum-likelihood estimate is
  // accepted / (accepted + rejections).
  double per_token_acceptance() const {
    const int64_t rejections = verify_sequences - all_accepted;
    const int64_t trials = accepted_tokens + rejections;
    return trials ? double(accepted_tokens) / double(trials) : 0.0;
  }
  // Tokens per verifying sequence-step: accepted drafts + the one token the target adds.
  double mean_accepted_length() const {
    return verify_sequences ? 1.0 + double(accepted_tokens) / double(verify_sequences) : 0.0;
  }
};

class StepExecutor {
 public:
  // `draft`: null for no draft model (prompt-lookup drafts need none). Its pool must have the
  // target's number of blocks and block size; its vocabulary must be the target's.
  StepExecutor(StepRunner& target, StepRunner* draft, StepExecutorOptions options = {});

  // One step. Every rank of a replica calls it with every plan (also plans with only
  // `released`, which return an empty result). The result is complete on rank 0.
  messages::StepResult execute(const messages::StepPlan& plan);

  const ExecutorCounters& counters() const { return counters_; }
  const Sampler& sampler() const { return sampler_; }
  const DraftProposer* proposer() const { return proposer_ ? &*proposer_ : nullptr; }

 private:
  bool samples() const {
    return options_.rank == 0 || options_.placement == DraftPlacement::kEveryRank;
  }
  void broadcast_drafts(messages::StepPlan& plan);

  StepRunner& target_;
  StepExecutorOptions options_;
  Sampler sampler_;
  std::optional<DraftProposer> proposer_;
  ExecutorCounters counters_;
};

}  // namespace shardserve::worker
