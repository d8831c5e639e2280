#pragma once
// The scheduler's settings for one replica, checked once by validate_scheduler_config so that
// the scheduler itself may assume them. Every limit that could make a request wait forever is
// checked here rather than discovered at run time.
#include <cstdint>
#include <string_view>
#include <vector>

namespace shardserve::coordinator {

// What happens to a victim when the KV pool runs out.
enum class PreemptionMode {
  kRecompute,  // free its blocks; it is requeued and its KV recomputed (prefix cache permitting)
  kSwap,       // copy its blocks to host memory: refused by validation (see scheduler_config.cc)
};

// Speculative decoding (docs/speculative.md). The scheduler reserves lookahead slots for the
// drafts, puts them in the plan (prompt lookup) or asks the workers' draft model for them, keeps
// the accepted ones and rolls the rest back.
enum class SpeculativeMethod {
  kNone,
  kNgram,       // prompt lookup: the scheduler proposes from the sequence's own tokens
  kDraftModel,  // the workers' draft model proposes (DraftSource::kDraftModel)
};

inline constexpr int32_t kMaxSpeculativeTokens = 32;

struct SpeculativeConfig {
  SpeculativeMethod method = SpeculativeMethod::kNone;
  // K: draft tokens per verify, the default for every request (RequestSpec may ask for fewer or
  // for none) and the most the adaptive choice may use.
  int32_t num_speculative_tokens = 0;
  int32_t ngram_min = 1;  // prompt lookup: suffix lengths tried, longest first
  int32_t ngram_max = 3;
  // Adaptive K: per request, the K in [1, K] that maximises expected tokens per unit of step time
  // (1 + a + ... + a^K) / (1 + K * draft_cost) at its measured acceptance rate a (an EWMA).
  bool adaptive = false;
  // Cost of one more draft token relative to a plain decode step: t_draft / t_target plus the
  // verify pass's cost per extra token (near 0 while decode is memory-bound).
  double draft_cost = 0.05;
  double initial_acceptance = 0.6;  // the estimate before a request has verified anything
  double acceptance_decay = 0.9;    // EWMA weight of the past per verify
};

struct SchedulerConfig {
  int32_t block_size = 16;                // tokens per KV block
  int32_t num_blocks = 0;                 // physical blocks in the pool (the memory planner's figure)
  int32_t max_num_batched_tokens = 2048;  // token budget of one step (decodes + prefill chunks)
  int32_t max_num_seqs = 256;             // running sequences at most
  int32_t max_model_len = 0;              // context length: prompt + output tokens at most
  double watermark = 0.01;                // fraction of the pool admission keeps free
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  PreemptionMode preemption_mode = PreemptionMode::kRecompute;
  std::vector<int32_t> eos_token_ids;     // every id that ends generation (ModelConfig's list)
  SpeculativeConfig speculative;
};

// Throws shardserve::Error naming the offending setting and value.
void validate_scheduler_config(const SchedulerConfig& config);

// "none", "ngram" or "draft_model" (command-line and config-file spelling).
SpeculativeMethod parse_speculative_method(std::string_view name);
std::string_view to_string(SpeculativeMethod method);

// "recompute" or "swap" (command-line and config-file spelling).
PreemptionMode parse_preemption_mode(std::string_view name);
std::string_view to_string(PreemptionMode mode);

// Blocks that admission leaves free: floor(watermark * num_blocks).
int32_t watermark_blocks(const SchedulerConfig& config);

}  // namespace shardserve::coordinator
