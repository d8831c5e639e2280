#pragma once
// Token sampling from one row of logits: penalties, then greedy or temperature / top-k /
// top-p / min-p (transformers' warper order) and inverse-CDF sampling with one uniform draw.
#include <cstdint>
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

}  // namespace shardserve::kernels::cpu
