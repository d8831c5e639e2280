#pragma once
// Counters the metrics exporter reads from the scheduler (a snapshot; no I/O here).
#include <cstdint>

namespace shardserve::coordinator {

struct SchedulerStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;            // includes the preempted ones below
  int32_t num_preempted_waiting = 0;  // waiting requests that were preempted at least once
  int32_t kv_blocks_used = 0;         // referenced blocks (free cached blocks are not "used")
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_cached = 0;       // registered in the prefix cache, referenced or not
  int64_t prefix_cache_queried_tokens = 0;  // tokens of every admission (readmissions too)
  int64_t prefix_cache_hit_tokens = 0;      // of those, served from the cache
  int64_t prefix_cache_evictions = 0;
  int64_t preemptions_total = 0;
  int64_t requests_finished = 0;      // stop or length
  int64_t requests_cancelled = 0;
  int64_t requests_rejected = 0;
  int64_t steps_total = 0;            // plans with work
  // Speculative decoding (the monitoring catalogue's shardserve_spec_decode_*_total):
  int64_t spec_decode_drafts_total = 0;         // sequence-steps that verified draft tokens
  int64_t spec_decode_draft_tokens_total = 0;   // draft tokens proposed for verification
  int64_t spec_decode_accepted_tokens_total = 0;  // of those, accepted by the target
  int64_t spec_decode_rollback_blocks_total = 0;  // KV blocks freed by rolling back rejections

  double spec_acceptance_rate() const {
    return spec_decode_draft_tokens_total
               ? double(spec_decode_accepted_tokens_total) / double(spec_decode_draft_tokens_total)
               : 0.0;
  }
  // Tokens a verifying sequence gains per step: accepted drafts + the target's own token.
  double spec_mean_accepted_length() const {
    return spec_decode_drafts_total
               ? 1.0 + double(spec_decode_accepted_tokens_total) / double(spec_decode_drafts_total)
               : 0.0;
  }
};

}  // namespace shardserve::coordinator
