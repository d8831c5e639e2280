#pragma once
// One process's /metrics endpoint: a prometheus::Registry carrying shardserve_build_info, the
// process metrics, and whatever CoordinatorMetrics or WorkerMetrics register on it, served by
// prometheus-cpp's Exposer (civetweb) on a background thread. The engine and worker threads only
// touch their metric handles (atomics); scrapes never block them beyond a histogram's mutex.
//
//   monitoring::MetricsEndpoint endpoint({model_name, tp, replicas, "coordinator"});
//   if (auto port = monitoring::metrics_port_for_rank(cfg.ports.metrics, world_rank))
//     endpoint.serve(cfg.ports.metrics_host, *port);     // "127.0.0.1" unless configured
//   monitoring::CoordinatorMetrics metrics(endpoint.registry(), replicas);
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <prometheus/collectable.h>
#include <prometheus/registry.h>

namespace prometheus {
class Exposer;
}

namespace shardserve::monitoring {

// The shardserve version (CMake's PROJECT_VERSION), the `version` label of build info.
std::string_view version();

struct BuildInfo {
  std::string model;  // served model name
  int tp = 1;
  int replicas = 1;
  std::string role;  // "coordinator" or "worker"
};

// The metrics port of a world rank: base + world rank (the coordinator, rank 0, takes the base;
// worker rank w takes base + w). nullopt when base is 0: metrics disabled. Throws Error naming
// the rank when the port leaves [1, 65535].
std::optional<int> metrics_port_for_rank(int base_port, int world_rank);

class MetricsEndpoint {
 public:
  explicit MetricsEndpoint(const BuildInfo& build);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  // Another collector for the same endpoint (computed-at-scrape metrics); kept alive here.
  void add_collectable(std::shared_ptr<prometheus::Collectable> collectable);

  // Serves GET http://host:port/metrics. `host` is a numeric address ("127.0.0.1", "0.0.0.0",
  // "::1"); port 0 takes an ephemeral port (tests). Throws Error naming the address when it
  // cannot bind (in use, not an address of this host). At most once.
  void serve(const std::string& host, int port);
  bool serving() const { return exposer_ != nullptr; }
  int port() const { return port_; }  // the bound port; 0 when not serving
  std::string url() const;            // "http://127.0.0.1:9090/metrics"; "" when not serving

  // The text a scrape returns now (prometheus-cpp's TextSerializer over every collectable).
  std::string scrape() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string host_;
  int port_ = 0;
};

}  // namespace shardserve::monitoring
