#pragma once
// Token sampling from one row of logits: penalties, then greedy or temperature / top-k /
// top-p / min-p (transformers' warper order) and inverse-CDF sampling with one uniform draw.
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "messages/sampling_params.h"

namespace shardserve::kernels::cpu {

// What the penalties need to know of a sequence so far.
struct PenaltyHistory {
  std::vector<int32_t> seen_tokens;                      // prompt ∪ output, unique
  std::vector<std::pair<int32_t, int32_t>> output_counts;  // (token, times generated)
};

struct Sample {
  int32_t token = 0;
  float logprob = 0.0f;  // log_softmax of the model's raw logits (before any processing),
                         // the convention vLLM and OpenAI follow
  std::vector<int32_t> top_ids;      // params.logprobs most likely tokens of the raw logits
  std::vector<float> top_logprobs;
};

// logits: [vocab] raw model output for one position (not modified).
// uniform: one draw in [0, 1), used unless the request is greedy.
Sample sample_token(const float* logits, int64_t vocab, const messages::SamplingParams& params,
                    const PenaltyHistory& history, double uniform);

// The processed distribution sample_token draws from (probabilities over the whole vocabulary,
// zero where filtered), exposed for tests and for speculative decoding's acceptance rule.
// Greedy requests give a one-hot distribution.
std::vector<double> sampling_distribution(const float* logits, int64_t vocab,
                                          const messages::SamplingParams& params,
                                          const PenaltyHistory& history);

// Adds one token to a penalty history: `output` says whether it is a generated token (counts
// for the frequency / presence penalties) or a prompt token (only the repetition penalty).
void add_to_history(PenaltyHistory& history, int32_t token, bool output);

// Inverse-CDF draw in id order from a distribution (as sample_token draws): the first token whose
// cumulative probability exceeds `uniform`; the last token of nonzero probability when rounding
// leaves the sum just under the draw.
int32_t sample_from_distribution(std::span<const double> probs, double uniform);

// The reported fields of a chosen token (logprob and top alternatives of the raw logits, as
// sample_token reports them).
Sample describe_token(const float* logits, int64_t vocab, int32_t token, int32_t num_logprobs);

// ---- Speculative decoding: the exact acceptance rule (Leviathan et al. 2023; Chen et al. 2023).
// Notation here: `target` = the target model's processed distribution at the position (what plain
// decoding would sample from), `draft` = the distribution the draft token was sampled from.
// (The issue writes q for the target and p for the draft.)
//
// Accept the draft token d with probability min(1, target(d) / draft(d)): accepted when
// u_accept < target(d) / draft(d). On rejection, the token is drawn with u_resample from
// normalize(max(0, target - draft)). The token that comes out is distributed exactly as `target`,
// whatever `draft` is (as long as d was drawn from it).
//
// `draft` empty means a point mass at d (prompt-lookup drafts): accept with probability
// target(d), else draw from target with d removed. A greedy target (one-hot at its argmax a)
// accepts exactly when d == a and otherwise yields a.
struct DraftVerdict {
  bool accepted = false;
  int32_t token = 0;  // d when accepted, else the resampled token
};
DraftVerdict verify_draft_token(std::span<const double> target, std::span<const double> draft,
                                int32_t draft_token, double u_accept, double u_resample);

}  // namespace shardserve::kernels::cpu
