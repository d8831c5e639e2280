#pragma once
// Per-request sampling settings, as the coordinator validated them. They travel inside every
// step plan to the worker that samples; defaults mean "plain softmax sampling at T=1".
#include <cstdint>

namespace shardserve::messages {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy (argmax); else > 0
  float top_p = 1.0f;               // (0, 1]
  int32_t top_k = 0;                // 0 = off; else keep the k most likely
  float min_p = 0.0f;               // [0, 1): drop tokens below min_p * p(max)
  float repetition_penalty = 1.0f;  // > 0; HF/CTRL rule over prompt and output tokens
  float frequency_penalty = 0.0f;   // OpenAI rule over output tokens: logit -= f * count
  float presence_penalty = 0.0f;    // OpenAI rule over output tokens: logit -= p * (count > 0)
  uint64_t seed = 0;                // the sampler's random stream; reproducible per request
  int32_t logprobs = 0;             // how many top alternatives to return (0: only the chosen)

  bool greedy() const { return temperature == 0.0f; }
};

}  // namespace shardserve::messages
