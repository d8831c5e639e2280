#pragma once
// The whole engine in one process for tests (as tools/generate runs it): the real Scheduler,
// the worker's StepExecutor over a target runner and an optional draft runner. Requests run
// together (continuous batching); the outputs are each request's generated token ids.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/collective.h"
#include "common/error.h"
#include "coordinator/scheduler.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "worker/cuda/step_runner.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/speculative_executor.h"

namespace shardserve::testing_support {

// A model loaded for one rank, with its CPU step runner.
struct LoadedModel {
  model::ModelConfig config;
  std::unique_ptr<worker::ModelRunner> runner;
  std::unique_ptr<worker::CpuStepRunner> step;

  LoadedModel(const std::filesystem::path& dir, int64_t num_blocks, int64_t block_size,
              comm::Collective& group) {
    config = model::load_model_config(dir);
    const auto shard = worker::make_shard(config, group.rank(), group.size());
    runner = std::make_unique<worker::ModelRunner>(
        config, shard, worker::load_llama_weights(model::Checkpoint::open(dir), config, shard),
        num_blocks, block_size, group);
    step = std::make_unique<worker::CpuStepRunner>(*runner);
  }
};

struct EngineRequest {
  std::vector<int32_t> prompt;
  int32_t max_tokens = 32;
  messages::SamplingParams sampling{};
  std::optional<int32_t> num_speculative_tokens;  // unset: the engine's K
  bool ignore_eos = true;
};

struct EngineRun {
  std::vector<std::vector<int32_t>> outputs;  // per request, in request order
  coordinator::SchedulerStats stats;
  worker::ExecutorCounters counters;
};

struct EngineOptions {
  int32_t num_blocks = 64;
  int32_t block_size = 4;
  int32_t max_model_len = 128;
  int32_t max_num_batched_tokens = 256;
  int32_t max_num_seqs = 16;
  bool prefix_caching = true;
  coordinator::SpeculativeConfig speculative{};
  int32_t eos = -1;
};

// Runs every request to completion. `step` runs one plan on the workers (default: the executor).
inline EngineRun run_engine(worker::StepExecutor& executor, const EngineOptions& o,
                            const std::vector<EngineRequest>& requests) {
  coordinator::SchedulerConfig sc;
  sc.block_size = o.block_size;
  sc.num_blocks = o.num_blocks;
  sc.max_model_len = o.max_model_len;
  sc.max_num_batched_tokens = o.max_num_batched_tokens;
  sc.max_num_seqs = o.max_num_seqs;
  sc.enable_prefix_caching = o.prefix_caching;
  sc.watermark = 0.0;
  if (o.eos >= 0) sc.eos_token_ids = {o.eos};
  sc.speculative = o.speculative;
  coordinator::Scheduler scheduler(sc);
  EngineRun run;
  run.outputs.resize(requests.size());
  std::vector<uint64_t> seq_of(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    coordinator::RequestSpec spec;
    spec.request_id = "r" + std::to_string(i);
    spec.prompt_token_ids = requests[i].prompt;
    spec.sampling = requests[i].sampling;
    spec.max_tokens = requests[i].max_tokens;
    spec.ignore_eos = requests[i].ignore_eos;
    spec.num_speculative_tokens = requests[i].num_speculative_tokens;
    spec.arrival_time = static_cast<double>(i);
    auto added = scheduler.add_request(std::move(spec));
    require(!added.rejection, "test engine: request {} rejected", i);
    seq_of[i] = added.seq_id;
  }
  while (scheduler.has_unfinished_requests()) {
    const messages::StepPlan plan = scheduler.schedule();
    const messages::StepResult result = executor.execute(plan);
    if (plan.seqs.empty()) continue;
    for (auto& out : scheduler.on_step_result(result)) {
      const std::size_t i = std::stoul(out.request_id.substr(1));
      for (const auto& t : out.new_tokens) run.outputs[i].push_back(t.token_id);
    }
  }
  run.stats = scheduler.stats();
  run.counters = executor.counters();
  return run;
}

inline EngineRun run_engine(worker::StepRunner& target, worker::StepRunner* draft,
                            const EngineOptions& o, const std::vector<EngineRequest>& requests) {
  worker::StepExecutor executor(target, draft);
  return run_engine(executor, o, requests);
}

}  // namespace shardserve::testing_support
