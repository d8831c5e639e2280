#pragma once
// The coordinator's metrics: requests, tokens, latencies, steps, KV pool and prefix cache per
// replica, speculative decoding. EngineCore calls the hooks below from its one thread; scrapes
// read the handles from the exposer's threads (prometheus-cpp's atomics and mutexes).
//
// Hooks (the engine's call sites are listed in monitoring/README.md):
//   on_submitted()                      every submit(), accepted or not
//   on_admitted(r, seq, prompt, now)    a scheduler accepted the request (its seq id on r)
//   on_step_sent(r, plan, now)          a plan with sequences went to replica r
//   on_step_done(r, now)                its result arrived (before its outputs are handled)
//   on_output(r, out, now)              every RequestOutput, where it is produced (r = -1 when
//                                       the engine refused it before any replica saw it)
//   on_replica_failed(r)                the engine gave replica r up
//   on_requeued(from, seq, to, new_seq) a live request moved off failed replica `from`
//   on_replica_state(r, stats)          after the replica's state changed (once per poll); its
//                                       monotonic counters (preemptions, prefix cache,
//                                       speculative decoding) are mirrored by their increments
//
// Cost: per step O(sequences) for the batch statistics (plus one integer-keyed look-up per
// sequence while any request awaits its first step); per output one comparison, and one
// integer-keyed look-up only at a request's first token and at its end. No strings, no label
// look-ups: every series handle is taken once, in the constructor.
#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "coordinator/request_output.h"
#include "coordinator/scheduler_stats.h"
#include "messages/step_plan.h"
#include "monitoring/endpoint.h"

namespace shardserve::monitoring {

// How a plan's sequences split: a decode computes one token at a position past the prompt, or
// verifies draft tokens there (num_tokens = 1 + num_draft); anything else is a prefill chunk.
enum class StepPhase { kPrefill = 0, kDecode = 1, kMixed = 2 };
StepPhase phase_of(const messages::StepPlan& plan);

class CoordinatorMetrics {
 public:
  using Clock = std::chrono::steady_clock;

  CoordinatorMetrics(MetricsEndpoint& endpoint, int num_replicas);
  ~CoordinatorMetrics();
  CoordinatorMetrics(const CoordinatorMetrics&) = delete;
  CoordinatorMetrics& operator=(const CoordinatorMetrics&) = delete;

  void on_submitted() { received_->Increment(); }
  void on_admitted(int replica, uint64_t seq_id, int32_t prompt_tokens, Clock::time_point now);
  void on_step_sent(int replica, const messages::StepPlan& plan, Clock::time_point now);
  void on_step_done(int replica, Clock::time_point now);
  void on_output(int replica, const coordinator::RequestOutput& out, Clock::time_point now);
  void on_replica_state(int replica, const coordinator::SchedulerStats& stats);
  // Before the engine cancels `request_id` for a time limit: its final kCancelled output is then
  // counted with reason "timeout" (deadline) or "idle_timeout" instead of "cancelled". Forgotten
  // when the request ends either way.
  enum class TimeLimit { kDeadline, kStreamIdle };
  void on_cancel_reason(const std::string& request_id, TimeLimit limit);
  // The cancel found the request already ended (its final was counted as it was).
  void forget_cancel_reason(const std::string& request_id) { timed_out_.erase(request_id); }
  void on_replica_failed(int replica);
  // Its latencies go on under its new place (arrival, first token kept).
  void on_requeued(int from, uint64_t seq_id, int to, uint64_t new_seq_id);

  int num_replicas() const { return static_cast<int>(replicas_.size()); }
  // Requests tracked for latencies (admitted, not yet finished); for tests.
  std::size_t tracked_requests() const { return live_.size(); }

 private:
  struct Times {
    Clock::time_point arrival;
    Clock::time_point first_token{};
    bool scheduled = false;
    bool first_output_seen = false;
  };
  struct Replica {
    prometheus::Gauge* running;
    prometheus::Gauge* waiting;
    prometheus::Gauge* preempted;
    prometheus::Counter* prompt_tokens;
    prometheus::Counter* generation_tokens;
    prometheus::Counter* cached_tokens;
    std::array<prometheus::Histogram*, 3> step_duration;  // by StepPhase
    prometheus::Histogram* batch_size;
    prometheus::Histogram* step_tokens;
    prometheus::Gauge* kv_used;
    prometheus::Gauge* kv_capacity;
    prometheus::Gauge* kv_cached;
    prometheus::Gauge* kv_usage;
    prometheus::Counter* prefix_queried;
    prometheus::Counter* prefix_hits;
    prometheus::Gauge* prefix_hit_ratio;
    prometheus::Counter* prefix_evictions;
    prometheus::Counter* preemptions;
    prometheus::Counter* spec_drafts;
    prometheus::Counter* spec_draft_tokens;
    prometheus::Counter* spec_accepted_tokens;
    prometheus::Counter* failures;
    prometheus::Gauge* up;
    prometheus::Counter* requeued;
    // The scheduler's monotonic counters as last mirrored (the exported counters add deltas).
    coordinator::SchedulerStats last{};
    // The step in flight.
    Clock::time_point step_sent{};
    StepPhase step_phase = StepPhase::kDecode;
    bool step_in_flight = false;
  };

  static uint64_t key(int replica, uint64_t seq_id) {
    return (static_cast<uint64_t>(replica) << 48) ^ seq_id;
  }
  Replica& replica(int r);

  prometheus::Counter* received_;
  std::array<prometheus::Counter*, 7> finished_;  // by kFinishReasons
  std::unordered_map<std::string, TimeLimit> timed_out_;  // request id -> why it is cancelled
  prometheus::Histogram* ttft_;
  prometheus::Histogram* tpot_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_;
  std::vector<Replica> replicas_;
  std::unordered_map<uint64_t, Times> live_;  // key(replica, seq id) of admitted requests
  std::size_t unscheduled_ = 0;               // of live_, those not yet in a step
};

}  // namespace shardserve::monitoring
