#include "monitoring/worker_metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "monitoring/catalogue.h"

namespace shardserve::monitoring {
namespace {

using Clock = std::chrono::steady_clock;

// shardserve_worker_heartbeat_age_seconds, computed at scrape time from the last heartbeat, so
// that it keeps growing while the serving loop is stuck (the exposer runs on its own threads).
class HeartbeatCollector final : public prometheus::Collectable {
 public:
  HeartbeatCollector(std::shared_ptr<std::atomic<Clock::rep>> last, prometheus::Labels labels)
      : last_(std::move(last)), labels_(std::move(labels)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    const auto last = Clock::time_point(Clock::duration(last_->load(std::memory_order_relaxed)));
    prometheus::MetricFamily f;
    f.name = metric::worker_heartbeat_age_seconds.name;
    f.help = metric::worker_heartbeat_age_seconds.help;
    f.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric m;
    for (const auto& [name, value] : labels_) m.label.push_back({name, value});
    m.gauge.value = std::max(0.0, std::chrono::duration<double>(Clock::now() - last).count());
    f.metric.push_back(std::move(m));
    return {std::move(f)};
  }

 private:
  std::shared_ptr<std::atomic<Clock::rep>> last_;
  prometheus::Labels labels_;
};

}  // namespace

WorkerMetrics::WorkerMetrics(MetricsEndpoint& endpoint, const WorkerIdentity& id)
    : heartbeat_(std::make_shared<std::atomic<Clock::rep>>(Clock::now().time_since_epoch().count())) {
  const prometheus::Labels rank = {{"rank", std::to_string(id.world_rank)},
                                   {"replica", std::to_string(id.replica)},
                                   {"tp_rank", std::to_string(id.tp_rank)}};
  auto& r = endpoint.registry();
  forward_ = &Family<prometheus::Histogram>(r, metric::worker_forward_duration_seconds, rank).add();
  allreduce_ =
      &Family<prometheus::Histogram>(r, metric::worker_allreduce_duration_seconds, rank).add();
  tokens_ = &Family<prometheus::Counter>(r, metric::worker_tokens_total, rank).add();
  memory_used_ = &Family<prometheus::Gauge>(r, metric::gpu_memory_used_bytes, rank)
                      .add({{"device", id.device}});
  memory_total_ = &Family<prometheus::Gauge>(r, metric::gpu_memory_total_bytes, rank)
                       .add({{"device", id.device}});
  weights_ = &Family<prometheus::Gauge>(r, metric::worker_weight_bytes, rank).add();
  kv_ = &Family<prometheus::Gauge>(r, metric::worker_kv_cache_bytes, rank).add();
  endpoint.add_collectable(std::make_shared<HeartbeatCollector>(heartbeat_, rank));
}

}  // namespace shardserve::monitoring
