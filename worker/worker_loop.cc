#include "worker/worker_loop.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "comm/world_layout.h"
#include "common/error.h"
#include "messages/codec.h"
#include "model/memory_plan.h"
#include "model/safetensors.h"
#include "monitoring/process_metrics.h"

namespace shardserve::worker {
namespace {

int64_t weight_bytes(const LlamaWeights& w) {
  int64_t n = static_cast<int64_t>(w.embedding.size() + w.final_norm.size() + w.lm_head.size());
  for (const auto& l : w.layers)
    n += static_cast<int64_t>(l.input_norm.size() + l.qkv.size() + l.o.size() + l.post_norm.size() +
                              l.gate_up.size() + l.down.size());
  return n * static_cast<int64_t>(sizeof(float));
}

std::string gib(int64_t b) { return fmt::format("{:.2f} GiB", b / 1073741824.0); }

}  // namespace

int64_t host_available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t value = 0;
  while (in >> key >> value >> unit)
    if (key == "MemAvailable:") return value * 1024;
  return 0;
}

KvPoolPlan plan_kv_pool(const config::ServiceConfig& cfg, const model::ModelConfig& m,
                        int64_t available_bytes) {
  // The CPU pool is float32 (worker/kv_cache.h).
  const auto layout = model::kv_layout(m, cfg.tp, model::KvDtype::kFp32, cfg.kv.block_size);
  KvPoolPlan plan;
  plan.bytes_per_block = model::kv_bytes_per_block(layout);
  if (cfg.kv.num_blocks > 0) {
    plan.num_blocks = cfg.kv.num_blocks;
    plan.source = fmt::format("kv.num_blocks = {}", cfg.kv.num_blocks);
  } else if (cfg.kv.memory_bytes > 0) {
    plan.num_blocks = model::kv_blocks_that_fit(cfg.kv.memory_bytes, layout);
    plan.source = fmt::format("kv.memory_bytes = {}", cfg.kv.memory_bytes);
  } else {
    const int64_t pool = model::kv_pool_bytes(std::max<int64_t>(available_bytes, 0),
                                              cfg.kv.memory_fraction);
    plan.num_blocks = model::kv_blocks_that_fit(pool, layout);
    // More blocks than max_num_seqs sequences at full length can use would only take memory.
    const int64_t len = config::effective_max_model_len(cfg, m);
    const int64_t useful =
        int64_t{cfg.scheduler.max_num_seqs} * model::kv_blocks_for_tokens(len, layout);
    plan.source = fmt::format("kv.memory_fraction = {} of {} available", cfg.kv.memory_fraction,
                              gib(available_bytes));
    if (plan.num_blocks > useful) {
      plan.num_blocks = useful;
      plan.source += fmt::format(", capped at max_num_seqs x max_model_len = {} blocks", useful);
    }
  }
  require(plan.num_blocks >= 1,
          "KV pool: {} leaves room for no block of {} bytes (block_size {} x {} layers x {} KV "
          "heads/rank x head_dim {} x K,V x float32)",
          plan.source, plan.bytes_per_block, cfg.kv.block_size, layout.num_layers,
          layout.kv_heads_per_rank, layout.head_dim);
  return plan;
}

WorkerLoop::WorkerLoop(comm::MpiEnvironment& env, comm::ControlChannel& channel)
    : env_(env), channel_(channel) {}

WorkerLoop::~WorkerLoop() = default;

messages::Message WorkerLoop::next_message() {
  while (true) {
    auto r = channel_.receive_for(std::chrono::seconds(1));
    if (metrics_) metrics_->heartbeat();
    if (!r) continue;
    require(r->source == comm::WorldLayout::kCoordinator,
            "worker: message from world rank {}; only the coordinator (rank 0) sends to workers",
            r->source);
    return messages::decode(r->bytes);
  }
}

int WorkerLoop::run() {
  messages::Message first = next_message();
  if (auto* s = std::get_if<messages::Shutdown>(&first)) {
    spdlog::info("shutdown before start-up ({}); exiting", s->reason);
    return 0;
  }
  if (auto* a = std::get_if<messages::Abort>(&first)) {
    spdlog::info("start-up aborted: {}", a->reason);
    return 1;
  }
  auto* configure = std::get_if<messages::Configure>(&first);
  require(configure != nullptr, "worker: expected Configure first, got {}",
          messages::message_kind_name(messages::kind_of(first)));
  const auto hello = load(*configure);
  channel_.send(comm::WorldLayout::kCoordinator, messages::encode(hello));

  messages::Message second = next_message();
  if (auto* a = std::get_if<messages::Abort>(&second)) {
    spdlog::info("start-up aborted: {}", a->reason);
    return 1;
  }
  if (auto* s = std::get_if<messages::Shutdown>(&second)) {
    spdlog::info("shutdown during start-up ({}); exiting", s->reason);
    return 0;
  }
  auto* init = std::get_if<messages::InitCache>(&second);
  require(init != nullptr, "worker: expected InitCache, got {}",
          messages::message_kind_name(messages::kind_of(second)));
  require(init->num_kv_blocks >= 1 && init->num_kv_blocks <= hello.num_kv_blocks,
          "worker: InitCache asks for {} KV blocks; this rank has room for {}", init->num_kv_blocks,
          hello.num_kv_blocks);
  runner_ = std::make_unique<ModelRunner>(model_, *shard_, std::move(*weights_),
                                          init->num_kv_blocks, cfg_.kv.block_size, *timed_group_);
  weights_.reset();
  if (metrics_) {
    const int64_t kv = runner_->kv_cache().bytes();
    metrics_->set_memory(weight_bytes_ + kv,
                         monitoring::host_memory_total_bytes() / std::max(1, env_.local_size()),
                         weight_bytes_, kv);
  }
  channel_.send(comm::WorldLayout::kCoordinator,
                messages::encode(messages::WorkerReady{env_.world_rank(), runner_->kv_cache().bytes()}));
  spdlog::info("ready: KV pool {} blocks x {} tokens ({:.1f} MiB)", init->num_kv_blocks,
               cfg_.kv.block_size, runner_->kv_cache().bytes() / 1048576.0);

  while (true) {
    messages::Message m = next_message();
    if (auto* plan = std::get_if<messages::StepPlan>(&m)) {
      step(*plan);
    } else if (auto* s = std::get_if<messages::Shutdown>(&m)) {
      spdlog::info("shutdown ({}) after {} steps; exiting", s->reason, steps_);
      return 0;
    } else if (auto* a = std::get_if<messages::Abort>(&m)) {
      spdlog::error("aborted by the coordinator: {}", a->reason);
      return 1;
    } else {
      fail("worker: unexpected {} message while serving",
           messages::message_kind_name(messages::kind_of(m)));
    }
  }
}

messages::WorkerHello WorkerLoop::load(const messages::Configure& configure) {
  cfg_ = config::parse_toml(configure.config_toml, "the coordinator's Configure message");
  tp_ = configure.tp;
  const comm::WorldLayout layout{configure.tp, configure.replicas};
  require(env_.world_size() == layout.world_size(),
          "worker: the coordinator's layout ({} replicas x tp {}) needs {} ranks; the job has {}",
          configure.replicas, configure.tp, layout.world_size(), env_.world_size());
  const int w = env_.world_rank();
  replica_ = layout.replica_of(w);
  tp_rank_ = layout.tp_rank_of(w);
  spdlog::set_level(spdlog::level::from_str(cfg_.log_level));
  // Collective with every rank of the world (the coordinator joins no group).
  group_ = std::make_unique<comm::MpiCollective>(MPI_COMM_WORLD, replica_, tp_rank_);
  require(group_->size() == tp_ && group_->rank() == tp_rank_,
          "worker: tensor-parallel group of replica {} has {} ranks (rank {}); expected {} (rank {})",
          replica_, group_->size(), group_->rank(), tp_, tp_rank_);
  timed_group_ = std::make_unique<monitoring::TimedCollective>(*group_);
  // Prometheus /metrics on ports.metrics + world rank (docs/metrics.md), up while loading.
  if (auto port = monitoring::metrics_port_for_rank(cfg_.ports.metrics, w)) {
    metrics_endpoint_ = std::make_unique<monitoring::MetricsEndpoint>(monitoring::BuildInfo{
        config::effective_model_name(cfg_), configure.tp, configure.replicas, "worker"});
    metrics_ = std::make_unique<monitoring::WorkerMetrics>(
        *metrics_endpoint_, monitoring::WorkerIdentity{w, replica_, tp_rank_, "cpu"});
    metrics_endpoint_->serve(cfg_.ports.metrics_host, *port);
    spdlog::info("metrics: {}", metrics_endpoint_->url());
  }

  const auto t0 = std::chrono::steady_clock::now();
  model_ = model::load_model_config(cfg_.model);
  shard_ = make_shard(model_, tp_rank_, tp_);
  {
    const auto checkpoint = model::Checkpoint::open(cfg_.model);
    weights_ = load_llama_weights(checkpoint, model_, *shard_);
  }
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t wbytes = weight_bytes(*weights_);
  weight_bytes_ = wbytes;
  const int64_t available = host_available_memory() / std::max(1, env_.local_size());
  const KvPoolPlan kv = plan_kv_pool(cfg_, model_, available);
  spdlog::info("loaded {} shard {}/{} in {:.2f} s: {:.1f} MiB of weights; KV room {} blocks ({})",
               cfg_.model, tp_rank_, tp_, load_s, wbytes / 1048576.0, kv.num_blocks, kv.source);

  messages::WorkerHello h;
  h.world_rank = w;
  h.replica = replica_;
  h.tp_rank = tp_rank_;
  h.tp_size = tp_;
  h.host = env_.host();
  h.pid = static_cast<int32_t>(getpid());
  h.model_name = config::effective_model_name(cfg_);
  h.model_type = model_.model_type;
  h.num_layers = model_.num_hidden_layers;
  h.hidden_size = model_.hidden_size;
  h.vocab_size = model_.vocab_size;
  h.num_heads_per_rank = shard_->heads;
  h.num_kv_heads_per_rank = shard_->kv_heads;
  h.head_dim = model_.head_dim;
  h.max_position_embeddings = model_.max_position_embeddings;
  h.weight_bytes = wbytes;
  h.num_kv_blocks = kv.num_blocks;
  h.block_size = cfg_.kv.block_size;
  h.kv_bytes_per_block = kv.bytes_per_block;
  h.kv_source = kv.source;
  return h;
}

void WorkerLoop::step(const messages::StepPlan& plan) {
  // Only the sampling rank keeps per-sequence sampler state.
  if (tp_rank_ == 0) sampler_.observe(plan);
  if (plan.seqs.empty()) return;  // only releases finished sequences; no reply expected
  ++steps_;
  const auto t0 = std::chrono::steady_clock::now();
  const StepLogits logits = runner_->forward(plan);
  if (metrics_) {
    metrics_->on_forward(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
        timed_group_->take_allreduce_seconds(), plan.total_tokens());
    metrics_->heartbeat();
  }
  if (tp_rank_ != 0) return;
  const messages::StepResult result = sampler_.sample(plan, logits);
  channel_.send(comm::WorldLayout::kCoordinator, messages::encode(result));
}

}  // namespace shardserve::worker
