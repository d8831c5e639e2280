#include "api/runtime/core_engine.h"

#include <algorithm>
#include <climits>

namespace shardserve::api {

bool CoreEngine::cancel(std::string_view request_id, CancelReason reason) {
  const bool labelled = metrics_ != nullptr && reason != CancelReason::kClient;
  const std::string id(request_id);
  if (labelled)
    metrics_->on_cancel_reason(id, reason == CancelReason::kDeadline
                                       ? monitoring::CoordinatorMetrics::TimeLimit::kDeadline
                                       : monitoring::CoordinatorMetrics::TimeLimit::kStreamIdle);
  const bool live = core_.cancel(id);
  if (labelled && !live) metrics_->forget_cancel_reason(id);
  return live;
}

EnginePoll CoreEngine::poll(std::chrono::milliseconds wait) {
  EnginePoll p;
  p.outputs = core_.poll(wait);
  p.started = core_.started();
  return p;
}

std::vector<ReplicaStatus> CoreEngine::status() const {
  std::vector<ReplicaStatus> out;
  for (int r = 0; r < core_.num_replicas(); ++r) {
    const auto s = core_.stats(r);
    out.push_back({s.scheduler.num_running, s.scheduler.num_waiting, s.scheduler.kv_blocks_used,
                   s.scheduler.kv_blocks_total, s.scheduler.kv_blocks_cached, s.steps});
  }
  return out;
}

ModelInfo model_info_for(const config::ServiceConfig& config, const model::ModelConfig& model,
                         const std::vector<coordinator::SchedulerConfig>& replicas) {
  ModelInfo info;
  info.name = config::effective_model_name(config);
  info.vocab_size = static_cast<int32_t>(model.vocab_size);
  info.max_model_len = config::effective_max_model_len(config, model);
  info.block_size = config.kv.block_size;
  info.num_replicas = static_cast<int32_t>(replicas.size());
  info.kv_blocks_per_replica = INT32_MAX;
  info.max_num_seqs = 0;
  for (const auto& r : replicas) {
    info.kv_blocks_per_replica =
        std::min(info.kv_blocks_per_replica, r.num_blocks - coordinator::watermark_blocks(r));
    info.max_num_seqs += r.max_num_seqs;
  }
  if (replicas.empty()) info.kv_blocks_per_replica = 0;
  info.bos_token_id = model.bos_token_id;
  info.eos_token_ids = model.eos_token_ids;
  return info;
}

}  // namespace shardserve::api
