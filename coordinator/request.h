#pragma once
// A request as the scheduler tracks it: its tokens (prompt then output), how many of them have
// KV in the cache, its block hashes, its stop conditions and its place in the queue order.
#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/block_hash.h"
#include "coordinator/speculative_policy.h"
#include "coordinator/stop_string_matcher.h"
#include "coordinator/text_stream.h"
#include "messages/sampling_params.h"

namespace shardserve::coordinator {

// What the API layer hands to Scheduler::add_request.
struct RequestSpec {
  std::string request_id;               // the client's id; unique among live requests
  std::vector<int32_t> prompt_token_ids;
  messages::SamplingParams sampling;
  std::optional<int32_t> max_tokens;    // output tokens at most; unset: up to the context length
  std::vector<int32_t> stop_token_ids;  // end generation like EOS (the token is not detokenized)
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;              // EOS ids do not end generation (stop_token_ids still do)
  // Lower value = more urgent (as vLLM). Orders the waiting queue and the choice of victims.
  int32_t priority = 0;
  // The caller's clock (seconds or steps; only the order matters): ties within a priority are
  // served first come, first served. The scheduler never reads a clock itself.
  double arrival_time = 0.0;
  // Detokenizer for stop strings and output text; may be null when stop_strings is empty.
  std::unique_ptr<TextStream> text_stream;
  // Speculative decoding: draft tokens per verify for this request. Unset: the engine's
  // SpeculativeConfig::num_speculative_tokens; 0: this request does not speculate; larger values
  // are capped at the engine's. Ignored when the engine does not speculate.
  std::optional<int32_t> num_speculative_tokens;
};

enum class RequestStatus { kWaiting, kRunning, kFinished };

// Queue order: priority, then arrival, then seq id (admission order of simultaneous arrivals).
struct QueueKey {
  int32_t priority = 0;
  double arrival_time = 0.0;
  uint64_t seq_id = 0;
  friend auto operator<=>(const QueueKey&, const QueueKey&) = default;
};

struct Request {
  Request(uint64_t seq_id, RequestSpec spec, int32_t block_size, bool hash_blocks);

  uint64_t seq_id;
  std::string request_id;
  messages::SamplingParams sampling;
  std::optional<int32_t> max_tokens;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos;
  int32_t priority;
  double arrival_time;
  std::unique_ptr<TextStream> text_stream;
  StopStringMatcher stop_matcher;

  std::vector<int32_t> tokens;  // prompt, then every sampled token
  int32_t prompt_len;
  // Tokens whose KV is in the cache (computed, or taken from the prefix cache). Decode and
  // prefill are the same thing here: a step computes tokens[num_computed, num_computed + n).
  int32_t num_computed_tokens = 0;
  // Positions the worker ranks have been fed (their sampler state covers [0, this)); a
  // preemption does not lower it, since the workers keep that state until `released`.
  int32_t num_fed_tokens = 0;
  // hash of block i for every full block of `tokens` (empty when prefix caching is off).
  std::vector<BlockHash> block_hashes;

  RequestStatus status = RequestStatus::kWaiting;
  bool ever_scheduled = false;
  int32_t num_preemptions = 0;
  int32_t num_cached_prompt_tokens = 0;  // prefix-cache hit at first admission

  // Speculative decoding: the most draft tokens per verify (0: never speculates), and the
  // measured acceptance for the adaptive K (coordinator/speculative_policy.h).
  int32_t max_num_draft = 0;
  AcceptanceEstimate acceptance;

  QueueKey key() const { return QueueKey{priority, arrival_time, seq_id}; }
  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_output_tokens() const { return num_tokens() - prompt_len; }
  int32_t num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens; }
  // Whether the next step would be a decode (one token, the last sampled one) rather than a
  // prefill chunk (the prompt, or prompt plus outputs being recomputed after preemption).
  bool is_decoding() const { return num_uncomputed_tokens() == 1 && num_computed_tokens > 0; }

  // Appends a sampled token and extends the hash chain when it fills a block.
  void append_token(int32_t token);
  int32_t block_size() const { return block_size_; }

 private:
  void extend_hashes();
  int32_t block_size_;
  bool hash_blocks_;
};

}  // namespace shardserve::coordinator
