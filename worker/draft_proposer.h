#pragma once
// The draft model of speculative decoding on the worker (docs/speculative.md): a small LLaMA
// that shares the target's tokenizer proposes the draft tokens of the sequences whose plan asks
// for them (SequenceWork::draft_source = kDraftModel, num_draft = K > 0).
//
// Its KV lives in its own paged pool with the *same number of blocks and block size* as the
// target's, so the coordinator's block tables are valid for both (a draft block is just
// smaller). The draft's KV is kept in step with every sequence of every plan: prefill chunks and
// plain decodes are fed to it as well (no logits), so that it is ready whenever a sequence
// speculates, and a block that the prefix cache shares holds the draft's KV of its tokens too.
//
// One step, for the sequences of the plan:
//   pass 1      feed what the draft has not computed: tokens it lacks from the last step (the
//               accepted drafts it never fed: d_K after all K were accepted, or every accepted
//               prompt-lookup draft), then the plan's own tokens; a speculating sequence asks for
//               the last position's logits -> Q_0, d_1 ~ Q_0
//   pass j      (j = 2..K) feed d_{j-1} alone -> Q_{j-1}, d_j ~ Q_{j-1}
// Passes are batched over the sequences (each drops out after its own K). Q_j is the draft's
// distribution after the request's own processing (temperature, top-k, top-p, min-p, and the
// penalties with d_1..d_j counted), so that it is close to the target's processed distribution;
// d_j is drawn from it with counter_uniform(seed, position, kStreamDraft). The verification
// (worker/sampler.h) needs exactly these distributions.
//
// After verification, on_result() records how far the draft's KV is valid: through the last
// accepted draft it was fed. Positions beyond are overwritten when they are next fed.
#include <chrono>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "messages/step_plan.h"
#include "worker/cuda/step_runner.h"
#include "worker/sampler.h"

namespace shardserve::worker {

class DraftProposer {
 public:
  // `draft`: the draft model's forward pass over a pool of the target's geometry.
  explicit DraftProposer(StepRunner& draft) : draft_(draft) {}

  struct Proposal {
    messages::StepPlan target_plan;    // the plan with the draft tokens filled in
    DraftDistributions distributions;  // per drafting sequence, Q_0 .. Q_{K-1}
  };
  // Runs the draft passes for a step. `sampler` (after observe(plan)) supplies penalty state.
  Proposal propose(const messages::StepPlan& plan, const Sampler& sampler);

  // The verification's outcome: result tokens per sequence of `target_plan`.
  void on_result(const messages::StepPlan& target_plan, const messages::StepResult& result);
  void release(const std::vector<uint64_t>& seq_ids);

  int64_t forward_passes() const { return forward_passes_; }
  double forward_seconds() const { return forward_seconds_; }
  std::size_t tracked_sequences() const { return state_.size(); }
  // Positions [0, valid_end) of the sequence hold the draft's KV of its tokens (-1: unknown).
  int64_t valid_end(uint64_t seq_id) const;

 private:
  struct SeqState {
    int64_t end = 0;           // the draft's KV holds positions [0, end) (if accepted)
    int64_t proposed_pos = 0;  // position of proposed[0]
    std::vector<int32_t> proposed;  // last step's draft tokens (either source), for catch-up
  };
  StepLogits forward(const messages::StepPlan& plan);

  StepRunner& draft_;
  std::unordered_map<uint64_t, SeqState> state_;
  int64_t forward_passes_ = 0;
  double forward_seconds_ = 0;
};

}  // namespace shardserve::worker
