#pragma once
// An Engine that runs the whole model in this process on the CPU: the real Scheduler, the
// reference ModelRunner and the Sampler, one replica of one rank (the loop of
// tools/generate/generate.cc). For tests of the front end and clients, and for `llm-local`,
// which serves a small model over ZeroMQ without mpirun.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "api/engine.h"
#include "comm/collective.h"
#include "coordinator/scheduler.h"
#include "model/model_config.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace shardserve::api {

struct LocalEngineOptions {
  std::filesystem::path model_dir;
  std::string served_model_name;  // "": the directory's name
  int32_t block_size = 16;
  int32_t kv_blocks = 1024;
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 1024;
  int32_t max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  bool load_tokenizer = true;
  // Each step takes at least this long (a slower model, for tests and demos of streaming).
  std::chrono::microseconds min_step_time{0};
};

class LocalEngine final : public Engine {
 public:
  explicit LocalEngine(const LocalEngineOptions& options);
  ~LocalEngine() override;

  const model::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  ModelInfo model_info() const { return info_; }
  const coordinator::Scheduler& scheduler() const { return *scheduler_; }
  // Cancels every live request (their final outputs come from poll()).
  void cancel_all();

  void submit(coordinator::RequestSpec spec) override;
  bool cancel(std::string_view request_id, CancelReason reason) override;
  EnginePoll poll(std::chrono::milliseconds wait) override;
  bool has_unfinished() const override { return scheduler_->has_unfinished_requests(); }
  std::vector<ReplicaStatus> status() const override;

 private:
  model::ModelConfig config_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  comm::SingleRankCollective group_;
  std::unique_ptr<worker::ModelRunner> runner_;
  worker::Sampler sampler_;
  std::unique_ptr<coordinator::Scheduler> scheduler_;
  ModelInfo info_;
  std::vector<coordinator::RequestOutput> pending_;
  std::unordered_set<uint64_t> started_;  // seq ids already scheduled once
  std::unordered_set<std::string> live_;  // request ids submitted and not finished
  int64_t steps_ = 0;
  std::chrono::microseconds min_step_time_{0};
};

}  // namespace shardserve::api
