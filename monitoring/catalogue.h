#pragma once
// Every metric shardserve exports, defined once: name, type, unit, labels, help and buckets.
// CoordinatorMetrics, WorkerMetrics, the process collector and the build-info gauge register
// their families from these definitions only (never from a literal name), docs/metrics.md lists
// exactly this catalogue (tests/monitoring checks both ways), and the dashboards may name only
// these metrics.
//
// Conventions: one prefix (`shardserve_`), units in the names (`_seconds`, `_bytes`), counters end
// in `_total`, ratios in [0, 1] end in `_ratio`. Label values are bounded: replica indices, ranks,
// finish reasons, step phases, never a request id or a prompt. The process metrics keep the names
// every Prometheus client library uses (`process_...`), so stock dashboards and alerts work;
// the `exposer_...` ones are prometheus-cpp's own, listed so that the catalogue is complete.
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/labels.h>
#include <prometheus/registry.h>

namespace shardserve::monitoring {

// kSummary only for the Exposer's own metric; shardserve registers no summaries.
enum class MetricType { kCounter, kGauge, kHistogram, kSummary };
std::string_view to_string(MetricType type);

// Which process exports a metric.
enum class Exporter {
  kEveryProcess,  // the coordinator and every worker rank (build info, process metrics)
  kCoordinator,   // rank 0: requests, tokens, latencies, scheduler and KV state per replica
  kWorker,        // each worker rank: forward pass, collectives, memory, heartbeat
  kExposer,       // every served endpoint, made by prometheus-cpp's Exposer itself (scrapes)
};
std::string_view to_string(Exporter exporter);

struct MetricDef {
  std::string name;
  MetricType type;
  Exporter exporter;
  std::string unit;                 // "seconds", "bytes", "tokens", "requests", "blocks", "ratio", ...
  std::vector<std::string> labels;  // every label the series carry (Prometheus adds job, instance)
  std::string help;
  std::vector<double> buckets = {};  // histograms only: upper bounds, +Inf implied
};

// Labels every worker-rank series carries (constant per process).
inline const std::vector<std::string>& worker_labels() {
  static const std::vector<std::string> labels = {"rank", "replica", "tp_rank"};
  return labels;
}

// Values of the `reason` label of shardserve_requests_finished_total: FinishReason's order, then
// the cancellations the front end made for a time limit (CoordinatorMetrics::on_cancel_reason).
inline constexpr std::string_view kFinishReasons[] = {"stop",        "length",  "cancelled",
                                                      "rejected",    "unavailable", "timeout",
                                                      "idle_timeout"};
inline constexpr std::size_t kFinishTimeout = 5, kFinishIdleTimeout = 6;
// Values of the `phase` label of shardserve_step_duration_seconds.
inline constexpr std::string_view kStepPhases[] = {"prefill", "decode", "mixed"};

// The definitions. Names are part of the contract (dashboards, recording rules, alerts).
namespace metric {
// Every process.
extern const MetricDef build_info;
extern const MetricDef process_cpu_seconds_total;
extern const MetricDef process_resident_memory_bytes;
extern const MetricDef process_virtual_memory_bytes;
extern const MetricDef process_open_fds;
extern const MetricDef process_max_fds;
extern const MetricDef process_start_time_seconds;
// Every served endpoint: prometheus-cpp's Exposer adds these itself (documented, not ours).
extern const MetricDef exposer_transferred_bytes_total;
extern const MetricDef exposer_scrapes_total;
extern const MetricDef exposer_request_latencies;
// Coordinator: requests.
extern const MetricDef requests_received_total;
extern const MetricDef requests_finished_total;
extern const MetricDef requests_running;
extern const MetricDef requests_waiting;
extern const MetricDef requests_preempted;
// Coordinator: faults.
extern const MetricDef replica_failures_total;
extern const MetricDef replica_up;
extern const MetricDef requests_requeued_total;
// Coordinator: tokens.
extern const MetricDef prompt_tokens_total;
extern const MetricDef generation_tokens_total;
extern const MetricDef prefix_cached_tokens_total;
// Coordinator: latencies.
extern const MetricDef time_to_first_token_seconds;
extern const MetricDef time_per_output_token_seconds;
extern const MetricDef e2e_request_latency_seconds;
extern const MetricDef request_queue_time_seconds;
// Coordinator: steps.
extern const MetricDef step_duration_seconds;
extern const MetricDef step_batch_size;
extern const MetricDef step_tokens;
// Coordinator: KV pool and prefix cache.
extern const MetricDef kv_blocks_used;
extern const MetricDef kv_blocks_capacity;
extern const MetricDef kv_blocks_cached;
extern const MetricDef kv_cache_usage_ratio;
extern const MetricDef prefix_cache_queried_tokens_total;
extern const MetricDef prefix_cache_hit_tokens_total;
extern const MetricDef prefix_cache_hit_ratio;
extern const MetricDef prefix_cache_evictions_total;
extern const MetricDef preemptions_total;
// Coordinator: speculative decoding.
extern const MetricDef spec_decode_drafts_total;
extern const MetricDef spec_decode_draft_tokens_total;
extern const MetricDef spec_decode_accepted_tokens_total;
// Worker ranks.
extern const MetricDef worker_forward_duration_seconds;
extern const MetricDef worker_allreduce_duration_seconds;
extern const MetricDef worker_tokens_total;
extern const MetricDef gpu_memory_used_bytes;
extern const MetricDef gpu_memory_total_bytes;
extern const MetricDef worker_weight_bytes;
extern const MetricDef worker_kv_cache_bytes;
extern const MetricDef worker_heartbeat_age_seconds;
}  // namespace metric

// The whole catalogue, in documentation order.
const std::vector<const MetricDef*>& catalogue();
// nullptr when `name` is not a catalogue metric.
const MetricDef* find_metric(std::string_view name);

// A family registered from its definition. `constant` labels go on every series (a worker's
// rank labels); add() takes the others, and constant + added label names must be exactly
// def.labels (shardserve::Error naming the metric otherwise). add() is for set-up: keep the
// returned handle and update it on the hot path (an atomic add or a bucket search, no look-up).
template <typename T>
class Family {
 public:
  Family(prometheus::Registry& registry, const MetricDef& def, prometheus::Labels constant = {});
  T& add(const prometheus::Labels& labels = {});
  const MetricDef& def() const { return def_; }

 private:
  const MetricDef& def_;
  prometheus::Labels constant_;
  prometheus::Family<T>* family_;
};

extern template class Family<prometheus::Counter>;
extern template class Family<prometheus::Gauge>;
extern template class Family<prometheus::Histogram>;

}  // namespace shardserve::monitoring
