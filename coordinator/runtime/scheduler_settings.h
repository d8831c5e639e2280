#pragma once
// The schedulers' settings, one per replica, from the service configuration and the KV pool the
// handshake settled for each replica. The one place where ServiceConfig becomes SchedulerConfig.
#include <vector>

#include "config/service_config.h"
#include "coordinator/runtime/handshake.h"
#include "coordinator/scheduler_config.h"
#include "model/model_config.h"

namespace shardserve::runtime {

// The [speculative] table as the scheduler's SpeculativeConfig (method none: all off).
coordinator::SpeculativeConfig speculative_config_for(const config::SpeculativeSettings& s);

// Throws Error naming the replica and its pool when a replica's settings are invalid.
std::vector<coordinator::SchedulerConfig> scheduler_configs_for(
    const config::ServiceConfig& cfg, const model::ModelConfig& model,
    const HandshakeResult& handshake);

}  // namespace shardserve::runtime
