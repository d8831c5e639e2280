#include "monitoring/catalogue.h"

#include <algorithm>
#include <set>

#include "common/error.h"

namespace shardserve::monitoring {
namespace {

using L = std::vector<std::string>;
constexpr auto C = MetricType::kCounter;
constexpr auto G = MetricType::kGauge;
constexpr auto H = MetricType::kHistogram;
constexpr auto kAll = Exporter::kEveryProcess;
constexpr auto kCoord = Exporter::kCoordinator;
constexpr auto kWork = Exporter::kWorker;
constexpr auto kExp = Exporter::kExposer;

// Request latencies: 1 ms to 10 minutes (a long generation on a loaded cluster).
std::vector<double> request_latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
          1.0,   2.5,    5.0,   7.5,    10.0, 20.0,  30.0, 60.0,  120.0, 300.0, 600.0};
}
// Time per output token: decode steps, 1 ms to 10 s.
std::vector<double> tpot_buckets() {
  return {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
          0.1,   0.15,   0.2,   0.3,    0.4,  0.5,   0.75, 1.0,   2.5,  5.0,  10.0};
}
// One step or one forward pass: 0.5 ms (a small GPU decode) to 1 minute (a CPU prefill).
std::vector<double> step_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
          0.1,    0.15,  0.25,   0.5,   0.75,   1.0,  2.5,   5.0,  10.0, 30.0, 60.0};
}
// All-reduce time of one step: 50 us (NVLink) to 10 s (a stalled peer).
std::vector<double> collective_buckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   10.0};
}
std::vector<double> batch_buckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}; }
std::vector<double> token_buckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
}

const L kReplica = {"replica"};
const L kWorkerLabels = {"rank", "replica", "tp_rank"};
const L kWorkerDevice = {"rank", "replica", "tp_rank", "device"};

}  // namespace

std::string_view to_string(MetricType type) {
  switch (type) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
    case MetricType::kSummary: return "summary";
  }
  return "?";
}

std::string_view to_string(Exporter exporter) {
  switch (exporter) {
    case Exporter::kEveryProcess: return "every process";
    case Exporter::kCoordinator: return "coordinator";
    case Exporter::kWorker: return "worker";
    case Exporter::kExposer: return "every served endpoint (prometheus-cpp)";
  }
  return "?";
}

namespace metric {
// ----- every process ------------------------------------------------------------------------
const MetricDef build_info{
    "shardserve_build_info", G, kAll, "", {"version", "model", "tp", "replicas", "role"},
    "Always 1; the labels say what runs: shardserve version, served model name, tensor-parallel "
    "size, replicas, and role (coordinator or worker)."};
const MetricDef process_cpu_seconds_total{
    "process_cpu_seconds_total", C, kAll, "seconds", {},
    "Total user and system CPU time spent by the process, in seconds."};
const MetricDef process_resident_memory_bytes{
    "process_resident_memory_bytes", G, kAll, "bytes", {},
    "Resident memory size of the process, in bytes."};
const MetricDef process_virtual_memory_bytes{
    "process_virtual_memory_bytes", G, kAll, "bytes", {},
    "Virtual memory size of the process, in bytes."};
const MetricDef process_open_fds{"process_open_fds", G, kAll, "file descriptors", {},
                                 "Number of open file descriptors."};
const MetricDef process_max_fds{"process_max_fds", G, kAll, "file descriptors", {},
                                "Maximum number of open file descriptors (the soft limit)."};
const MetricDef process_start_time_seconds{
    "process_start_time_seconds", G, kAll, "seconds", {},
    "Start time of the process since the Unix epoch, in seconds."};

// ----- every served endpoint: prometheus-cpp's Exposer ----------------------------------------
const MetricDef exposer_transferred_bytes_total{
    "exposer_transferred_bytes_total", C, kExp, "bytes", {},
    "Bytes of /metrics responses sent (made by prometheus-cpp's Exposer)."};
const MetricDef exposer_scrapes_total{
    "exposer_scrapes_total", C, kExp, "scrapes", {},
    "Scrapes served (made by prometheus-cpp's Exposer)."};
const MetricDef exposer_request_latencies{
    "exposer_request_latencies", MetricType::kSummary, kExp, "microseconds", {},
    "Time to serve a scrape, in microseconds, quantiles 0.5, 0.9, 0.99 (made by prometheus-cpp's "
    "Exposer; its name and unit are the library's)."};

// ----- coordinator: requests ----------------------------------------------------------------
const MetricDef requests_received_total{
    "shardserve_requests_received_total", C, kCoord, "requests", {},
    "Requests submitted to the engine, accepted or not. Once idle, equals the sum of "
    "shardserve_requests_finished_total over its reasons."};
const MetricDef requests_finished_total{
    "shardserve_requests_finished_total", C, kCoord, "requests", {"reason"},
    "Requests that ended, by reason: stop (EOS, stop token or stop string), length (max_tokens "
    "or the context length), cancelled (the client or a drain), rejected (never scheduled), unavailable "
    "(a replica failed and the request could not be moved: the service's fault, not the "
    "request's), timeout "
    "(the request's deadline passed: timeout_s or limits.max_request_seconds), idle_timeout (no "
    "output for limits.stream_idle_timeout_s)."};
const MetricDef requests_running{
    "shardserve_requests_running", G, kCoord, "requests", kReplica,
    "Requests the replica's scheduler is running (holding KV blocks and scheduled every step)."};
const MetricDef requests_waiting{
    "shardserve_requests_waiting", G, kCoord, "requests", kReplica,
    "Requests waiting for admission on the replica, preempted ones included."};
const MetricDef requests_preempted{
    "shardserve_requests_preempted", G, kCoord, "requests", kReplica,
    "Waiting requests on the replica that were preempted at least once (their KV was freed and "
    "will be recomputed)."};

// ----- coordinator: faults ------------------------------------------------------------------
const MetricDef replica_failures_total{
    "shardserve_replica_failures_total", C, kCoord, "failures", kReplica,
    "Times the replica was given up: a worker's error report, or no step result within "
    "runtime.step_timeout_s (0 or 1: a failed replica stays failed)."};
const MetricDef replica_up{
    "shardserve_replica_up", G, kCoord, "", kReplica,
    "1 while the replica serves, 0 once it failed (it gets no more requests)."};
const MetricDef requests_requeued_total{
    "shardserve_requests_requeued_total", C, kCoord, "requests", kReplica,
    "Live requests moved off a failed replica onto this one (runtime.on_replica_failure = "
    "failover); each continues its stream from prompt + the tokens already sent."};

// ----- coordinator: tokens ------------------------------------------------------------------
const MetricDef prompt_tokens_total{
    "shardserve_prompt_tokens_total", C, kCoord, "tokens", kReplica,
    "Prompt tokens of the requests the replica admitted (counted once, when the request is "
    "placed; recomputation after a preemption is not counted again)."};
const MetricDef generation_tokens_total{
    "shardserve_generation_tokens_total", C, kCoord, "tokens", kReplica,
    "Output tokens the replica sampled and streamed (a final stop token included)."};
const MetricDef prefix_cached_tokens_total{
    "shardserve_prefix_cached_tokens_total", C, kCoord, "tokens", kReplica,
    "Prompt tokens served by the prefix cache at a request's first admission (counted at its "
    "first output)."};

// ----- coordinator: latencies ---------------------------------------------------------------
const MetricDef time_to_first_token_seconds{
    "shardserve_time_to_first_token_seconds", H, kCoord, "seconds", {},
    "From submission to the first output token of a request, in seconds.",
    request_latency_buckets()};
const MetricDef time_per_output_token_seconds{
    "shardserve_time_per_output_token_seconds", H, kCoord, "seconds", {},
    "Mean time between output tokens of a finished request (end-to-end minus time to first "
    "token, over output tokens - 1), in seconds; requests with one output token are not observed.",
    tpot_buckets()};
const MetricDef e2e_request_latency_seconds{
    "shardserve_e2e_request_latency_seconds", H, kCoord, "seconds", {},
    "From submission to the last output of requests that finished with stop or length, in "
    "seconds.",
    request_latency_buckets()};
const MetricDef request_queue_time_seconds{
    "shardserve_request_queue_time_seconds", H, kCoord, "seconds", {},
    "From submission to the first step that schedules the request, in seconds.",
    request_latency_buckets()};

// ----- coordinator: steps -------------------------------------------------------------------
const MetricDef step_duration_seconds{
    "shardserve_step_duration_seconds", H, kCoord, "seconds", {"replica", "phase"},
    "Time from sending a step to the replica to applying its result, in seconds, by phase: "
    "prefill (only prompt chunks), decode (only one-token decodes or speculative verifies), "
    "mixed (both).",
    step_buckets()};
const MetricDef step_batch_size{
    "shardserve_step_batch_size", H, kCoord, "sequences", kReplica,
    "Sequences in one step of the replica.", batch_buckets()};
const MetricDef step_tokens{
    "shardserve_step_tokens", H, kCoord, "tokens", kReplica,
    "Tokens computed in one step of the replica (prefill chunks plus decodes).", token_buckets()};

// ----- coordinator: KV pool and prefix cache ------------------------------------------------
const MetricDef kv_blocks_used{
    "shardserve_kv_blocks_used", G, kCoord, "blocks", kReplica,
    "KV blocks referenced by live requests on the replica (free blocks kept for the prefix cache "
    "are not used)."};
const MetricDef kv_blocks_capacity{
    "shardserve_kv_blocks_capacity", G, kCoord, "blocks", kReplica,
    "KV blocks in the replica's pool (the minimum over its ranks, settled at start-up)."};
const MetricDef kv_blocks_cached{
    "shardserve_kv_blocks_cached", G, kCoord, "blocks", kReplica,
    "KV blocks registered in the replica's prefix cache, referenced or not."};
const MetricDef kv_cache_usage_ratio{
    "shardserve_kv_cache_usage_ratio", G, kCoord, "ratio", kReplica,
    "KV blocks used over the pool's capacity, in [0, 1]; 0 when the replica is idle."};
const MetricDef prefix_cache_queried_tokens_total{
    "shardserve_prefix_cache_queried_tokens_total", C, kCoord, "tokens", kReplica,
    "Tokens looked up in the prefix cache (every admission, readmissions after preemption too)."};
const MetricDef prefix_cache_hit_tokens_total{
    "shardserve_prefix_cache_hit_tokens_total", C, kCoord, "tokens", kReplica,
    "Of the queried tokens, those served from the prefix cache."};
const MetricDef prefix_cache_hit_ratio{
    "shardserve_prefix_cache_hit_ratio", G, kCoord, "ratio", kReplica,
    "Hit tokens over queried tokens since start-up, in [0, 1] (0 before any query); use the "
    "counters' rates for a recent ratio."};
const MetricDef prefix_cache_evictions_total{
    "shardserve_prefix_cache_evictions_total", C, kCoord, "blocks", kReplica,
    "Cached KV blocks evicted from the prefix cache to make room."};
const MetricDef preemptions_total{
    "shardserve_preemptions_total", C, kCoord, "preemptions", kReplica,
    "Running requests preempted (KV freed, requeued) because the pool ran out of blocks."};

// ----- coordinator: speculative decoding ----------------------------------------------------
const MetricDef spec_decode_drafts_total{
    "shardserve_spec_decode_drafts_total", C, kCoord, "drafts", kReplica,
    "Speculative verifications (one per sequence and step that verified draft tokens)."};
const MetricDef spec_decode_draft_tokens_total{
    "shardserve_spec_decode_draft_tokens_total", C, kCoord, "tokens", kReplica,
    "Draft tokens proposed for verification."};
const MetricDef spec_decode_accepted_tokens_total{
    "shardserve_spec_decode_accepted_tokens_total", C, kCoord, "tokens", kReplica,
    "Draft tokens the target model accepted. Mean accepted length = 1 + accepted / drafts."};

// ----- worker ranks -------------------------------------------------------------------------
const MetricDef worker_forward_duration_seconds{
    "shardserve_worker_forward_duration_seconds", H, kWork, "seconds", kWorkerLabels,
    "The rank's forward pass of one step (collectives included; sampling excluded), in seconds.",
    step_buckets()};
const MetricDef worker_allreduce_duration_seconds{
    "shardserve_worker_allreduce_duration_seconds", H, kWork, "seconds", kWorkerLabels,
    "Time the rank spent in tensor-parallel all-reduce during one step's forward pass (waiting "
    "for slower peers included), in seconds.",
    collective_buckets()};
const MetricDef worker_tokens_total{
    "shardserve_worker_tokens_total", C, kWork, "tokens", kWorkerLabels,
    "Tokens the rank computed in forward passes (prefill and decode positions)."};
const MetricDef gpu_memory_used_bytes{
    "shardserve_gpu_memory_used_bytes", G, kWork, "bytes", kWorkerDevice,
    "Device memory in use by the rank, in bytes. GPU: used of the device (cudaMemGetInfo); CPU "
    "path (device=\"cpu\"): the rank's weights plus its KV pool."};
const MetricDef gpu_memory_total_bytes{
    "shardserve_gpu_memory_total_bytes", G, kWork, "bytes", kWorkerDevice,
    "Device memory of the rank, in bytes. GPU: the device's total; CPU path: the rank's share "
    "of the host's memory (MemTotal over the job's ranks on the host)."};
const MetricDef worker_weight_bytes{
    "shardserve_worker_weight_bytes", G, kWork, "bytes", kWorkerLabels,
    "Bytes of model weights the rank holds (its tensor-parallel shard)."};
const MetricDef worker_kv_cache_bytes{
    "shardserve_worker_kv_cache_bytes", G, kWork, "bytes", kWorkerLabels,
    "Bytes of the rank's KV pool."};
const MetricDef worker_heartbeat_age_seconds{
    "shardserve_worker_heartbeat_age_seconds", G, kWork, "seconds", kWorkerLabels,
    "Seconds since the rank's serving loop last made progress (a message handled, a step "
    "done, or an idle wait of at most 1 s ended), computed at scrape time. Grows without bound "
    "when the loop hangs, e.g. in a collective with a dead peer."};
}  // namespace metric

const std::vector<const MetricDef*>& catalogue() {
  using namespace metric;
  static const std::vector<const MetricDef*> all = {
      &build_info,
      &process_cpu_seconds_total,
      &process_resident_memory_bytes,
      &process_virtual_memory_bytes,
      &process_open_fds,
      &process_max_fds,
      &process_start_time_seconds,
      &exposer_transferred_bytes_total,
      &exposer_scrapes_total,
      &exposer_request_latencies,
      &requests_received_total,
      &requests_finished_total,
      &requests_running,
      &requests_waiting,
      &requests_preempted,
      &replica_failures_total,
      &replica_up,
      &requests_requeued_total,
      &prompt_tokens_total,
      &generation_tokens_total,
      &prefix_cached_tokens_total,
      &time_to_first_token_seconds,
      &time_per_output_token_seconds,
      &e2e_request_latency_seconds,
      &request_queue_time_seconds,
      &step_duration_seconds,
      &step_batch_size,
      &step_tokens,
      &kv_blocks_used,
      &kv_blocks_capacity,
      &kv_blocks_cached,
      &kv_cache_usage_ratio,
      &prefix_cache_queried_tokens_total,
      &prefix_cache_hit_tokens_total,
      &prefix_cache_hit_ratio,
      &prefix_cache_evictions_total,
      &preemptions_total,
      &spec_decode_drafts_total,
      &spec_decode_draft_tokens_total,
      &spec_decode_accepted_tokens_total,
      &worker_forward_duration_seconds,
      &worker_allreduce_duration_seconds,
      &worker_tokens_total,
      &gpu_memory_used_bytes,
      &gpu_memory_total_bytes,
      &worker_weight_bytes,
      &worker_kv_cache_bytes,
      &worker_heartbeat_age_seconds,
  };
  return all;
}

const MetricDef* find_metric(std::string_view name) {
  for (const MetricDef* d : catalogue())
    if (d->name == name) return d;
  return nullptr;
}

namespace {

template <typename T>
constexpr MetricType type_of();
template <>
constexpr MetricType type_of<prometheus::Counter>() { return MetricType::kCounter; }
template <>
constexpr MetricType type_of<prometheus::Gauge>() { return MetricType::kGauge; }
template <>
constexpr MetricType type_of<prometheus::Histogram>() { return MetricType::kHistogram; }

template <typename T>
prometheus::detail::Builder<T> builder();
template <>
prometheus::detail::Builder<prometheus::Counter> builder() { return prometheus::BuildCounter(); }
template <>
prometheus::detail::Builder<prometheus::Gauge> builder() { return prometheus::BuildGauge(); }
template <>
prometheus::detail::Builder<prometheus::Histogram> builder() {
  return prometheus::BuildHistogram();
}

std::string join(const std::set<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return "{" + s + "}";
}

}  // namespace

template <typename T>
Family<T>::Family(prometheus::Registry& registry, const MetricDef& def, prometheus::Labels constant)
    : def_(def), constant_(std::move(constant)) {
  require(def.type == type_of<T>(), "metric {} is a {}, registered as a {}", def.name,
          to_string(def.type), to_string(type_of<T>()));
  for (const auto& [name, value] : constant_)
    require(std::find(def.labels.begin(), def.labels.end(), name) != def.labels.end(),
            "metric {}: constant label '{}' is not one of its labels", def.name, name);
  try {
    family_ = &builder<T>().Name(def.name).Help(def.help).Labels(constant_).Register(registry);
  } catch (const std::exception& e) {
    fail("metric {}: cannot be registered: {}", def.name, e.what());
  }
}

template <typename T>
T& Family<T>::add(const prometheus::Labels& labels) {
  std::set<std::string> got, want(def_.labels.begin(), def_.labels.end());
  for (const auto& [name, value] : constant_) got.insert(name);
  for (const auto& [name, value] : labels) {
    require(!constant_.count(name), "metric {}: label '{}' is given twice", def_.name, name);
    got.insert(name);
  }
  require(got == want, "metric {}: labels {} given, {} defined", def_.name, join(got), join(want));
  try {
    if constexpr (std::is_same_v<T, prometheus::Histogram>) {
      return family_->Add(labels, prometheus::Histogram::BucketBoundaries(def_.buckets));
    } else {
      return family_->Add(labels);
    }
  } catch (const std::exception& e) {
    fail("metric {}: series cannot be added: {}", def_.name, e.what());
  }
}

template class Family<prometheus::Counter>;
template class Family<prometheus::Gauge>;
template class Family<prometheus::Histogram>;

}  // namespace shardserve::monitoring
