#pragma once
// One iteration of a replica, as the coordinator plans it and every worker rank executes it.
// Flat arrays with offsets (not one object per sequence) so that a step is one small message
// per rank whatever the batch size, and so that it serialises without per-sequence framing.
#include <cstdint>
#include <vector>

#include "messages/sampling_params.h"

namespace shardserve::messages {

// Where the draft tokens of a speculating sequence (SequenceWork::num_draft > 0) come from.
enum class DraftSource : uint8_t {
  kPlan = 0,        // the coordinator proposed them (prompt lookup): they are in token_ids
  kDraftModel = 1,  // the worker's draft model proposes them: token_ids holds -1 placeholders
};

struct SequenceWork {
  uint64_t seq_id = 0;        // the coordinator's id; the worker keys sampler state by it
  int32_t start_pos = 0;      // position of the first new token = tokens already in the KV cache
  int32_t num_tokens = 0;     // new tokens computed this step (prefill chunk, 1 for decode,
                              // 1 + num_draft for a speculative verify)
  int32_t num_logits = 0;     // trailing positions to sample from: 0 (a prefill chunk that is not
                              // the last), 1 (decode / last chunk), num_draft + 1 (speculative
                              // verify: the worker returns 1 .. num_draft + 1 tokens, the
                              // accepted drafts then the correction or bonus token)
  int32_t prompt_len = 0;     // positions < prompt_len are prompt tokens (penalty bookkeeping)
  int32_t token_offset = 0;   // this sequence's tokens: StepPlan::token_ids[token_offset ...]
  int32_t block_offset = 0;   // its block table: StepPlan::block_ids[block_offset ...]
  int32_t num_blocks = 0;     // covers positions [0, start_pos + num_tokens)
  int32_t sampling_index = -1;  // StepPlan::sampling[...] when num_logits > 0
  // Tokens at positions [start_pos - history_len, start_pos) that the worker has not been fed
  // (a first admission that starts past a prefix-cache hit), sent once so that penalties over
  // the prompt see them: StepPlan::history_ids[history_offset ...]. Usually empty.
  int32_t history_offset = 0;
  int32_t history_len = 0;
  // Speculative decoding (docs/speculative.md): the last num_draft of the num_tokens are draft
  // tokens to verify (num_logits = num_draft + 1); 0 = a plain step. Their KV is written like
  // any token's; the coordinator keeps only what the result accepts.
  int32_t num_draft = 0;
  DraftSource draft_source = DraftSource::kPlan;  // meaningful when num_draft > 0
};

struct StepPlan {
  uint64_t step_id = 0;
  std::vector<int32_t> token_ids;        // all sequences' new tokens, concatenated
  std::vector<int32_t> block_ids;        // all block tables, concatenated (physical block ids)
  std::vector<SequenceWork> seqs;
  std::vector<SamplingParams> sampling;  // one per sequence that samples this step
  std::vector<uint64_t> released;        // sequences finished or cancelled: drop worker state
  std::vector<int32_t> history_ids;      // see SequenceWork::history_len

  int32_t total_tokens() const { return static_cast<int32_t>(token_ids.size()); }
};

// What a replica sends back: for each sequence with num_logits > 0 its sampled tokens: exactly
// num_logits for a plain step; for a speculative verify (num_draft > 0) between 1 and
// num_draft + 1: the accepted draft tokens in order, then the token sampled at the first
// rejection (or the bonus token when every draft was accepted).
struct SampledToken {
  int32_t token_id = 0;
  float logprob = 0.0f;                  // log p(token) under the sampling distribution's logits
  std::vector<int32_t> top_ids;          // top `logprobs` alternatives, most likely first
  std::vector<float> top_logprobs;
};

struct StepResult {
  uint64_t step_id = 0;
  std::vector<uint64_t> seq_ids;          // in StepPlan::seqs order, those that sampled
  std::vector<int32_t> sample_offsets;    // into tokens, one per seq_ids entry (+ end)
  std::vector<SampledToken> tokens;
};

}  // namespace shardserve::messages
