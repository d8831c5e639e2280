#include "monitoring/endpoint.h"

#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include <vector>

#include "common/error.h"
#include "monitoring/catalogue.h"
#include "monitoring/process_metrics.h"

#ifndef SHARDSERVE_VERSION
#define SHARDSERVE_VERSION "unknown"
#endif

namespace shardserve::monitoring {

std::string_view version() { return SHARDSERVE_VERSION; }

std::optional<int> metrics_port_for_rank(int base_port, int world_rank) {
  require(base_port >= 0 && base_port <= 65535, "ports.metrics = {} must be 0 (off) or a port",
          base_port);
  require(world_rank >= 0, "metrics port: world rank {} is negative", world_rank);
  if (base_port == 0) return std::nullopt;
  const int port = base_port + world_rank;
  require(port <= 65535,
          "ports.metrics = {} + world rank {} = {} is not a port: lower ports.metrics", base_port,
          world_rank, port);
  return port;
}

MetricsEndpoint::MetricsEndpoint(const BuildInfo& build)
    : registry_(std::make_shared<prometheus::Registry>()) {
  Family<prometheus::Gauge> info(*registry_, metric::build_info);
  info.add({{"version", std::string(version())},
            {"model", build.model},
            {"tp", std::to_string(build.tp)},
            {"replicas", std::to_string(build.replicas)},
            {"role", build.role}})
      .Set(1);
  collectables_.push_back(std::make_shared<ProcessCollector>());
}

MetricsEndpoint::~MetricsEndpoint() {
  // Stop serving before the collectables go away.
  exposer_.reset();
}

void MetricsEndpoint::add_collectable(std::shared_ptr<prometheus::Collectable> collectable) {
  collectables_.push_back(collectable);
  if (exposer_) exposer_->RegisterCollectable(collectable);
}

void MetricsEndpoint::serve(const std::string& host, int port) {
  require(!exposer_, "metrics endpoint: already serving on {}", url());
  require(!host.empty(), "metrics endpoint: empty bind address");
  require(port >= 0 && port <= 65535, "metrics endpoint: port {} is out of range", port);
  const bool v6 = host.find(':') != std::string::npos;
  const std::string address =
      (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    fail("metrics endpoint: cannot listen on {} ({}): is the port in use, or {} not an address "
         "of this host? (ports.metrics, ports.metrics_host)",
         address, e.what(), host);
  }
  const std::vector<int> ports = exposer_->GetListeningPorts();
  require(!ports.empty(), "metrics endpoint: listening on {} but no port was reported", address);
  port_ = ports.front();
  host_ = host;
  exposer_->RegisterCollectable(registry_);
  for (const auto& c : collectables_) exposer_->RegisterCollectable(c);
}

std::string MetricsEndpoint::url() const {
  if (!exposer_) return "";
  const bool v6 = host_.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_) + "/metrics";
}

std::string MetricsEndpoint::scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (const auto& c : collectables_) {
    auto more = c->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace shardserve::monitoring
