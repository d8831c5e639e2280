#pragma once
// The coordinator's engine (runtime::EngineCore: the replicas over MPI) as the front end's
// api::Engine, and the ModelInfo the front end needs from the service configuration. This is
// all a coordinator process adds to host the ZeroMQ front end:
//
//   api::CoreEngine engine(core);                                  // core: runtime::EngineCore
//   api::FrontEnd front(options, api::model_info_for(cfg, model_config, schedulers), tokenizer);
//   while (serving) front.pump(engine, 20ms);                      // the engine thread's loop
//
// (coordinator/runtime/coordinator_main.cc does this when it has no --requests.)
#include <vector>

#include "api/engine.h"
#include "api/protocol.h"
#include "config/service_config.h"
#include "coordinator/runtime/engine_core.h"
#include "coordinator/scheduler_config.h"
#include "model/model_config.h"

namespace shardserve::api {

class CoreEngine final : public Engine {
 public:
  // `metrics` (may be null; must outlive this) is the one the core reports to: a cancellation
  // for a time limit is labelled there (CoordinatorMetrics::on_cancel_reason).
  explicit CoreEngine(runtime::EngineCore& core, monitoring::CoordinatorMetrics* metrics = nullptr)
      : core_(core), metrics_(metrics) {}
  void submit(coordinator::RequestSpec spec) override { core_.submit(std::move(spec)); }
  bool cancel(std::string_view request_id, CancelReason reason) override;
  // With EngineCore::started(): the queue time ends when a request's first step is sent.
  EnginePoll poll(std::chrono::milliseconds wait) override;
  bool has_unfinished() const override { return core_.has_unfinished(); }
  std::vector<ReplicaStatus> status() const override;

 private:
  runtime::EngineCore& core_;
  monitoring::CoordinatorMetrics* metrics_;
};

ModelInfo model_info_for(const config::ServiceConfig& config, const model::ModelConfig& model,
                         const std::vector<coordinator::SchedulerConfig>& replicas);

}  // namespace shardserve::api
