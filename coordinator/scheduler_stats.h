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
};

}  // namespace shardserve::coordinator
