#pragma once
// Turns a step's logits into sampled tokens. Keeps, per sequence, what the penalties need
// (tokens seen, output token counts), built from the tokens the plans feed. Each position is
// counted once: a recomputation after preemption feeds positions again and changes nothing.
// Random draws come from the counter stream keyed by (seed, position, stream): a seeded request
// reproduces exactly however it was batched.
//
// Speculative decoding (SequenceWork::num_draft = K > 0, docs/speculative.md): the K + 1 logit
// rows verify the K draft tokens by the exact acceptance rule (kernels/cpu/sampling.h:
// verify_draft_token), position by position, and the sequence gets 1 .. K + 1 tokens back.
// Draft tokens are *not* counted by observe(): an accepted draft enters the penalty state when
// it is accepted (so row j + 1 is processed with drafts 1 .. j + 1 in the history, exactly as
// plain decoding would have them), a rejected one never does.
//
// Streams of counter_uniform(seed, position, stream):
//   0  the token drawn at a position: plain sampling, the residual draw after a rejection, the
//      bonus token (so a step without drafts draws what it always drew)
//   1  the acceptance test of the draft token at that position
//   2  the draft model's own draw of its proposal at that position (worker/draft_proposer.h)
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/sampling.h"
#include "messages/step_plan.h"
#include "worker/cuda/step_runner.h"
#include "worker/model_runner.h"

namespace shardserve::worker {

inline constexpr uint32_t kStreamSample = 0;
inline constexpr uint32_t kStreamAccept = 1;
inline constexpr uint32_t kStreamDraft = 2;

// The draft model's distributions for one step: for each sequence it drafted for, the K
// processed distributions its K draft tokens were drawn from (each [vocab]). A sequence with
// num_draft > 0 that is not listed here has point-mass drafts (prompt lookup).
struct DraftDistributions {
  std::unordered_map<uint64_t, std::vector<std::vector<double>>> by_seq;
};

// What verification did in one step, for the counters.
struct VerifyCounts {
  int64_t sequences = 0;  // sequences that verified at least one draft token
  int64_t proposed = 0;   // draft tokens verified
  int64_t accepted = 0;   // of those, accepted
  int64_t all_accepted = 0;  // sequences whose every draft was accepted (got the bonus token)
};

// Where a step's logit rows are turned into tokens (Sampler::sampling_site).
enum class SamplingSite {
  kHost,          // StepRunner::forward copies the logits back; Sampler::sample
  kDeviceGreedy,  // StepRunner::forward_greedy: argmax and logprob of each row
  kDevice,        // StepRunner::forward_sampled with Sampler::device_inputs
};

class Sampler {
 public:
  // Records the plan's fed tokens (not the draft tokens of a speculative verify) and drops
  // released sequences. Call before sample().
  void observe(const messages::StepPlan& plan);
  // logits: the ModelRunner's output for the same plan, whose draft tokens are filled in (the
  // worker's draft model replaced any -1 placeholders). `drafts`: the draft model's
  // distributions, or null when every draft is a point mass.
  messages::StepResult sample(const messages::StepPlan& plan, const StepLogits& logits,
                              const DraftDistributions* drafts = nullptr,
                              VerifyCounts* counts = nullptr);

  // Where a step is sampled: the one place that decides. On the device when the runner can
  // (runner_samples_on_device: its logits are on a GPU and whole, i.e. tp 1; at tp > 1 each
  // rank holds a vocabulary slice) unless the step needs what only the host path computes:
  //   * top logprobs (params.logprobs > 0): the device returns only the chosen token's logprob;
  //   * draft tokens to verify (num_draft > 0) or a draft model in the worker (draft_model):
  //     verification needs the target's whole processed distribution next to the draft's, and
  //     the proposer is told the result of the host path (DraftProposer::on_result);
  //   * a sampled row without valid sampling parameters: sample() reports it.
  // A step whose every row is plain greedy takes the argmax (kDeviceGreedy, no sort).
  static SamplingSite sampling_site(const messages::StepPlan& plan, bool runner_samples_on_device,
                                    bool draft_model);
  // Whether every sampled row of the plan is plain greedy: temperature 0, no penalties, no top
  // logprobs, no drafts to verify.
  static bool plain_greedy(const messages::StepPlan& plan);
  // What StepRunner::forward_sampled needs to draw what sample() would draw for this plan: each
  // row's parameters, its uniform (the same counter_uniform draw) and its sequence's penalty
  // history as observe() left it. The plan must be samplable on the device (sampling_site).
  DeviceSamplingInputs device_inputs(const messages::StepPlan& plan) const;
  // The StepResult of a plan sampled on the device (forward_greedy or forward_sampled) from its
  // rows' tokens and logprobs (plan order): the one sample() gives from the same logits.
  messages::StepResult from_device_rows(const messages::StepPlan& plan,
                                        const std::vector<DeviceSample>& rows) const;

  // The penalty state of a sequence as the next sampled position sees it (empty if unknown).
  kernels::cpu::PenaltyHistory penalty_history(uint64_t seq_id) const;
  std::size_t tracked_sequences() const { return history_.size(); }

 private:
  struct History {
    std::unordered_map<int32_t, int32_t> output_counts;
    std::unordered_map<int32_t, bool> seen;
    int64_t next_position = 0;  // positions below this have been counted
    void add(int32_t token, int64_t position, int32_t prompt_len);
    kernels::cpu::PenaltyHistory as_penalties() const;
  };
  void verify(const messages::StepPlan& plan, const messages::SequenceWork& s,
              const StepLogits& logits, int64_t first_row, const DraftDistributions* drafts,
              messages::StepResult& result, VerifyCounts* counts);
  std::unordered_map<uint64_t, History> history_;
};

}  // namespace shardserve::worker
