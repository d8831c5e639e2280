#include "api/local/local_engine.h"

#include <algorithm>
#include <thread>

#include "common/error.h"
#include "coordinator/scheduler_config.h"
#include "model/safetensors.h"
#include "worker/llama_weights.h"
#include "worker/tensor_parallel.h"

namespace shardserve::api {

LocalEngine::LocalEngine(const LocalEngineOptions& o) : min_step_time_(o.min_step_time) {
  config_ = model::load_model_config(o.model_dir);
  if (o.load_tokenizer) tokenizer_ = model::load_tokenizer(o.model_dir);
  const auto shard = worker::make_shard(config_, 0, 1);
  const auto checkpoint = model::Checkpoint::open(o.model_dir);
  runner_ = std::make_unique<worker::ModelRunner>(
      config_, shard, worker::load_llama_weights(checkpoint, config_, shard), o.kv_blocks,
      o.block_size, group_);
  coordinator::SchedulerConfig sc;
  sc.block_size = o.block_size;
  sc.num_blocks = o.kv_blocks;
  sc.max_num_seqs = o.max_num_seqs;
  sc.max_num_batched_tokens = o.max_num_batched_tokens;
  sc.max_model_len =
      o.max_model_len > 0
          ? o.max_model_len
          : static_cast<int32_t>(std::min<int64_t>(config_.max_position_embeddings, INT32_MAX));
  require(sc.max_model_len <= config_.max_position_embeddings,
          "max_model_len {} exceeds the model's max_position_embeddings {}", sc.max_model_len,
          config_.max_position_embeddings);
  sc.enable_prefix_caching = o.enable_prefix_caching;
  sc.eos_token_ids = config_.eos_token_ids;
  coordinator::validate_scheduler_config(sc);
  scheduler_ = std::make_unique<coordinator::Scheduler>(sc);

  info_.name = o.served_model_name.empty()
                   ? std::filesystem::absolute(o.model_dir).lexically_normal().filename().string()
                   : o.served_model_name;
  if (info_.name.empty())
    info_.name = std::filesystem::absolute(o.model_dir).parent_path().filename().string();
  info_.vocab_size = static_cast<int32_t>(config_.vocab_size);
  info_.max_model_len = sc.max_model_len;
  info_.block_size = sc.block_size;
  info_.kv_blocks_per_replica = sc.num_blocks - coordinator::watermark_blocks(sc);
  info_.num_replicas = 1;
  info_.max_num_seqs = sc.max_num_seqs;
  info_.bos_token_id = config_.bos_token_id;
  if (!info_.bos_token_id && tokenizer_) info_.bos_token_id = tokenizer_->bos_id();
  info_.eos_token_ids = config_.eos_token_ids;
}

LocalEngine::~LocalEngine() = default;

void LocalEngine::submit(coordinator::RequestSpec spec) {
  std::string id = spec.request_id;
  auto added = scheduler_->add_request(std::move(spec));
  if (added.rejection)
    pending_.push_back(std::move(*added.rejection));
  else
    live_.insert(std::move(id));
}

bool LocalEngine::cancel(std::string_view request_id, CancelReason) {
  auto out = scheduler_->cancel(request_id);
  if (!out) return false;
  live_.erase(out->request_id);
  pending_.push_back(std::move(*out));
  return true;
}

void LocalEngine::cancel_all() {
  const std::vector<std::string> ids(live_.begin(), live_.end());
  for (const auto& id : ids) cancel(id, CancelReason::kClient);
}

EnginePoll LocalEngine::poll(std::chrono::milliseconds) {
  EnginePoll result;
  result.outputs = std::move(pending_);
  pending_.clear();
  if (scheduler_->has_unfinished_requests()) {
    const messages::StepPlan plan = scheduler_->schedule();
    sampler_.observe(plan);
    for (uint64_t seq : plan.released) started_.erase(seq);
    if (!plan.seqs.empty()) {
      const auto now = Clock::now();
      const auto step_end = now + min_step_time_;
      for (const auto& s : plan.seqs)
        if (started_.insert(s.seq_id).second)
          if (const auto* r = scheduler_->find(s.seq_id))
            result.started.emplace_back(r->request_id, now);
      const auto step = sampler_.sample(plan, runner_->forward(plan));
      ++steps_;
      if (min_step_time_.count() > 0) std::this_thread::sleep_until(step_end);
      for (auto& out : scheduler_->on_step_result(step)) {
        if (out.finished) live_.erase(out.request_id);
        result.outputs.push_back(std::move(out));
      }
    }
  }
  return result;
}

std::vector<ReplicaStatus> LocalEngine::status() const {
  const auto s = scheduler_->stats();
  return {ReplicaStatus{s.num_running, s.num_waiting, s.kv_blocks_used, s.kv_blocks_total,
                        s.kv_blocks_cached, steps_}};
}

}  // namespace shardserve::api
