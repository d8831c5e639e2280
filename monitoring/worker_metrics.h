#pragma once
// The metrics of one worker rank, every series labelled rank (world rank), replica and tp_rank:
// forward time and all-reduce time per step, tokens computed, device memory, the model's bytes,
// and the heartbeat age (computed when scraped). See docs/metrics.md.
//
// Calls (worker/worker_loop.cc; see monitoring/README.md):
//   heartbeat()           every pass of the serving loop (a message handled, a 1 s idle wait)
//   on_forward(f, a, n)   after each forward pass: its seconds, the all-reduce seconds within
//                         it (TimedCollective::take_allreduce_seconds) and its tokens
//   set_memory(...)       once the KV pool is allocated (and whenever the GPU path re-reads it)
// Each is an atomic add/store or one histogram observation: no look-up, no string.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "monitoring/endpoint.h"

namespace shardserve::monitoring {

struct WorkerIdentity {
  int world_rank = 1;
  int replica = 0;
  int tp_rank = 0;
  std::string device = "cpu";  // "cpu", or "cuda:N" on the GPU path
};

class WorkerMetrics {
 public:
  WorkerMetrics(MetricsEndpoint& endpoint, const WorkerIdentity& id);

  void heartbeat() {
    heartbeat_->store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
  void on_forward(double forward_seconds, double allreduce_seconds, int64_t tokens) {
    forward_->Observe(forward_seconds);
    allreduce_->Observe(allreduce_seconds);
    tokens_->Increment(static_cast<double>(tokens));
  }
  // used / total device bytes (see the metric definitions for the CPU path's meaning), and the
  // bytes of the rank's weights and KV pool.
  void set_memory(int64_t used_bytes, int64_t total_bytes, int64_t weight_bytes,
                  int64_t kv_cache_bytes) {
    memory_used_->Set(static_cast<double>(used_bytes));
    memory_total_->Set(static_cast<double>(total_bytes));
    weights_->Set(static_cast<double>(weight_bytes));
    kv_->Set(static_cast<double>(kv_cache_bytes));
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::shared_ptr<std::atomic<Clock::rep>> heartbeat_;
  prometheus::Histogram* forward_;
  prometheus::Histogram* allreduce_;
  prometheus::Counter* tokens_;
  prometheus::Gauge* memory_used_;
  prometheus::Gauge* memory_total_;
  prometheus::Gauge* weights_;
  prometheus::Gauge* kv_;
};

}  // namespace shardserve::monitoring
