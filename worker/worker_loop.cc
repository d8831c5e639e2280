#include "worker/worker_loop.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "comm/world_layout.h"
#include "common/error.h"
#include "messages/codec.h"
#include "model/memory_plan.h"
#include "model/safetensors.h"
#include "monitoring/process_metrics.h"

#include "worker/gpu_backend.h"

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
                        int64_t available_bytes, const model::ModelConfig* draft, int draft_tp) {
  // The CPU pool is float32 (worker/kv_cache.h).
  const auto layout = model::kv_layout(m, cfg.tp, model::KvDtype::kFp32, cfg.kv.block_size);
  KvPoolPlan plan;
  plan.bytes_per_block = model::kv_bytes_per_block(layout);
  std::string draft_note;
  if (draft) {
    // One block id addresses a block in both pools: the budget per block is their sum.
    const auto d = model::kv_layout(*draft, draft_tp, model::KvDtype::kFp32, cfg.kv.block_size);
    const int64_t draft_bytes = model::kv_bytes_per_block(d);
    draft_note = fmt::format(" + the draft's {} bytes", draft_bytes);
    plan.bytes_per_block += draft_bytes;
  }
  if (cfg.kv.num_blocks > 0) {
    plan.num_blocks = cfg.kv.num_blocks;
    plan.source = fmt::format("kv.num_blocks = {}", cfg.kv.num_blocks);
  } else if (cfg.kv.memory_bytes > 0) {
    plan.num_blocks = cfg.kv.memory_bytes / plan.bytes_per_block;
    plan.source = fmt::format("kv.memory_bytes = {}", cfg.kv.memory_bytes);
  } else {
    const int64_t pool = model::kv_pool_bytes(std::max<int64_t>(available_bytes, 0),
                                              cfg.kv.memory_fraction);
    plan.num_blocks = pool / plan.bytes_per_block;
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
          "heads/rank x head_dim {} x K,V x float32{})",
          plan.source, plan.bytes_per_block, cfg.kv.block_size, m.num_hidden_layers,
          layout.kv_heads_per_rank, layout.head_dim, draft_note);
  return plan;
}

WorkerLoop::WorkerLoop(comm::MpiEnvironment& env, comm::ControlChannel& channel)
    : env_(env), channel_(channel) {}

WorkerLoop::~WorkerLoop() = default;

std::chrono::milliseconds WorkerLoop::silence_limit() const {
  const config::RuntimeSettings defaults;
  const config::RuntimeSettings& rt = configured_ ? cfg_.runtime : defaults;
  // Before serving the coordinator sends nothing while the other ranks load (it gives up itself
  // after startup_timeout_s and sends Abort): allow that, and a minute more.
  const double s = serving_ ? rt.coordinator_timeout_s : rt.startup_timeout_s + 60.0;
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0));
}

messages::Message WorkerLoop::next_message() {
  auto last = std::chrono::steady_clock::now();
  while (true) {
    auto r = channel_.receive_for(std::chrono::milliseconds(200));
    if (metrics_) metrics_->heartbeat();
    if (!r) {
      const auto silent = std::chrono::steady_clock::now() - last;
      if (silent > silence_limit()) {
        spdlog::critical("no message from the coordinator (world rank 0) for {:.1f} s ({}): it is "
                         "gone; exiting 1 without MPI_Finalize",
                         std::chrono::duration<double>(silent).count(),
                         serving_ ? "runtime.coordinator_timeout_s"
                                  : "runtime.startup_timeout_s + 60 s, during start-up");
        spdlog::shutdown();
        std::_Exit(1);
      }
      continue;
    }
    require(r->source == comm::WorldLayout::kCoordinator,
            "worker: message from world rank {}; only the coordinator (rank 0) sends to workers",
            r->source);
    last = std::chrono::steady_clock::now();
    auto m = messages::decode(r->bytes);
    if (auto* hb = std::get_if<messages::Heartbeat>(&m)) {
      peers_failed_ = peers_failed_ || hb->peers_failed;
      continue;
    }
    return m;
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
  if (cfg_.device == "cuda") {
    build_cuda_draft();  // the target's runner was built (and sized its pool) at load
  } else {
    build_cpu_runners(init->num_kv_blocks);
  }
  const bool every_rank = cfg_.speculative.draft_placement == "every_rank";
  // Without a draft model on every rank only TP rank 0 needs to sample (as before speculation).
  executor_ = std::make_unique<StepExecutor>(
      *target_, draft_.get(),
      StepExecutorOptions{tp_rank_,
                          draft_model_ && every_rank ? DraftPlacement::kEveryRank
                                                     : DraftPlacement::kRankZero,
                          timed_group_.get()});
  if (metrics_)
    metrics_->set_memory(weight_bytes_ + kv_bytes_,
                         monitoring::host_memory_total_bytes() / std::max(1, env_.local_size()),
                         weight_bytes_, kv_bytes_);
  channel_.send(comm::WorldLayout::kCoordinator,
                messages::encode(messages::WorkerReady{env_.world_rank(), kv_bytes_}));
  serving_ = true;
  const auto stuck_after = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(cfg_.runtime.step_timeout_s + cfg_.runtime.coordinator_timeout_s));
  watchdog_ = std::jthread([this, stuck_after](std::stop_token stop) {
    while (!stop.stop_requested()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      const int64_t started = step_started_ns_.load();
      if (started == 0) continue;
      const auto now = std::chrono::steady_clock::now().time_since_epoch();
      if (now - std::chrono::nanoseconds(started) > stuck_after) {
        spdlog::critical("one step has run for over {:.1f} s (runtime.step_timeout_s + "
                         "runtime.coordinator_timeout_s): stuck (a collective peer is gone?) and "
                         "given up by the coordinator; exiting 1 without MPI_Finalize",
                         std::chrono::duration<double>(stuck_after).count());
        spdlog::shutdown();
        std::_Exit(1);
      }
    }
  });
  spdlog::info("ready ({}): KV pool {} blocks x {} tokens ({:.1f} MiB{}){}", cfg_.device,
               init->num_kv_blocks, cfg_.kv.block_size, kv_bytes_ / 1048576.0,
               draft_ ? ", target + draft" : "",
               cfg_.speculative.method == "none"
                   ? std::string()
                   : fmt::format("; speculative {} K = {}{}", cfg_.speculative.method,
                                 cfg_.speculative.num_speculative_tokens,
                                 cfg_.speculative.method == "draft"
                                     ? fmt::format(", draft on {}", draft_ ? "this rank" : "rank 0")
                                     : std::string()));

  while (true) {
    messages::Message m = next_message();
    if (auto* plan = std::get_if<messages::StepPlan>(&m)) {
      step(*plan);
    } else if (auto* s = std::get_if<messages::Shutdown>(&m)) {
      const ExecutorCounters& c = executor_->counters();
      if (c.verify_sequences > 0)
        // For bench/speculative (the seed's formula needs a, t_draft and t_target).
        spdlog::info("speculative: {} verifies, {} draft tokens proposed, {} accepted (per-token "
                     "acceptance {:.3f}, {:.2f} tokens/verify); target {:.3f} s in {} passes, draft "
                     "{:.3f} s in {} passes",
                     c.verify_sequences, c.proposed_tokens, c.accepted_tokens,
                     c.per_token_acceptance(), c.mean_accepted_length(), c.target_seconds,
                     c.target_passes, c.draft_seconds, c.draft_passes);
      // Busy against wall time: what the steps leave to the coordinator, the control channel
      // and idling (bench/serving reads it).
      const double since_first =
          steps_ == 0 ? 0.0
                      : std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                      first_step_start_).count();
      spdlog::info("shutdown ({}) after {} steps ({:.2f} s executing them, {:.2f} s since the "
                   "first began); exiting", s->reason, steps_, step_seconds_, since_first);
      return 0;
    } else if (auto* a = std::get_if<messages::Abort>(&m)) {
      // This replica failed: a peer may be dead, and MPI_Finalize may hang with a dead rank.
      spdlog::error("aborted by the coordinator: {}; exiting 1 without MPI_Finalize", a->reason);
      spdlog::shutdown();
      std::_Exit(1);
    } else {
      fail("worker: unexpected {} message while serving",
           messages::message_kind_name(messages::kind_of(m)));
    }
  }
}

messages::WorkerHello WorkerLoop::load(const messages::Configure& configure) {
  cfg_ = config::parse_toml(configure.config_toml, "the coordinator's Configure message");
  configured_ = true;
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
        *metrics_endpoint_, monitoring::WorkerIdentity{w, replica_, tp_rank_, cfg_.device});
    metrics_endpoint_->serve(cfg_.ports.metrics_host, *port);
    spdlog::info("metrics: {}", metrics_endpoint_->url());
  }

  const auto t0 = std::chrono::steady_clock::now();
  model_ = model::load_model_config(cfg_.model);
  shard_ = make_shard(model_, tp_rank_, tp_);
  if (cfg_.speculative.method == "draft") {
    // The coordinator checked the draft against the target; a host whose copy differs fails
    // here with the same message.
    const model::ModelConfig draft = model::load_model_config(cfg_.speculative.draft_model);
    config::check_draft_model(cfg_, model_, draft);
    if (cfg_.speculative.draft_placement == "every_rank") {
      draft_shard_ = make_shard(draft, tp_rank_, tp_);
      draft_model_ = draft;
    } else if (tp_rank_ == 0) {
      draft_shard_ = make_shard(draft, 0, 1);
      draft_model_ = draft;
    }
  }
  messages::WorkerHello h;
  KvPoolPlan kv;
  if (cfg_.device == "cuda") {
    load_cuda_target(h);
    kv.num_blocks = h.num_kv_blocks;
    kv.bytes_per_block = h.kv_bytes_per_block;
    kv.source = h.kv_source;
  } else {
    {
      const auto checkpoint = model::Checkpoint::open(cfg_.model);
      weights_ = load_llama_weights(checkpoint, model_, *shard_);
    }
    weight_bytes_ = weight_bytes(*weights_);
    if (draft_model_) {
      draft_weights_ = load_llama_weights(model::Checkpoint::open(cfg_.speculative.draft_model),
                                          *draft_model_, *draft_shard_);
      weight_bytes_ += weight_bytes(*draft_weights_);
    }
    const int64_t available = host_available_memory() / std::max(1, env_.local_size());
    kv = plan_kv_pool(cfg_, model_, available, draft_model_ ? &*draft_model_ : nullptr,
                      draft_shard_ ? draft_shard_->size : 1);
  }
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t wbytes = weight_bytes_;
  spdlog::info("loaded {} shard {}/{}{} on {} in {:.2f} s: {:.1f} MiB of weights; KV room {} "
               "blocks ({})",
               cfg_.model, tp_rank_, tp_,
               draft_model_ ? fmt::format(" and draft {} shard {}/{}", cfg_.speculative.draft_model,
                                          draft_shard_->rank, draft_shard_->size)
                            : std::string(),
               cfg_.device, load_s, wbytes / 1048576.0, kv.num_blocks, kv.source);

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
  // Every rank executes every plan (also release-only ones: the sampler's and the draft's state).
  const auto t0 = std::chrono::steady_clock::now();
  step_started_ns_.store(std::max<int64_t>(
      1, std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count()));
  struct StepDone {
    std::atomic<int64_t>& started;
    ~StepDone() { started.store(0); }
  } step_done{step_started_ns_};
  const messages::StepResult result = executor_->execute(plan);
  if (plan.seqs.empty()) return;  // only releases finished sequences; no reply expected
  if (steps_ == 0) first_step_start_ = t0;
  ++steps_;
  step_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (metrics_) {
    monitoring::TimedCollective& timed = timed_device_group_ ? *timed_device_group_ : *timed_group_;
    metrics_->on_forward(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
        timed.take_allreduce_seconds(), plan.total_tokens());
    metrics_->heartbeat();
  }
  if (tp_rank_ != 0) return;
  channel_.send(comm::WorldLayout::kCoordinator, messages::encode(result));
}

bool WorkerLoop::holds_draft() const { return draft_model_.has_value(); }

void WorkerLoop::build_cpu_runners(int64_t num_blocks) {
  cpu_target_ = std::make_unique<ModelRunner>(model_, *shard_, std::move(*weights_), num_blocks,
                                              cfg_.kv.block_size, *timed_group_);
  weights_.reset();
  target_ = std::make_unique<CpuStepRunner>(*cpu_target_);
  kv_bytes_ = cpu_target_->kv_cache().bytes();
  if (!holds_draft()) return;
  comm::Collective* group = timed_group_.get();
  if (draft_shard_->size == 1 && tp_ > 1) {
    draft_group_ = std::make_unique<comm::SingleRankCollective>();
    group = draft_group_.get();
  }
  cpu_draft_ = std::make_unique<ModelRunner>(*draft_model_, *draft_shard_, std::move(*draft_weights_),
                                             num_blocks, cfg_.kv.block_size, *group);
  draft_weights_.reset();
  draft_ = std::make_unique<CpuStepRunner>(*cpu_draft_);
  kv_bytes_ += cpu_draft_->kv_cache().bytes();
}

namespace {

// Step capacities of a GPU runner: every plan the scheduler can make (its token budget; at most
// one logit row per token), plus for the draft the catch-up tokens of pass 1 (up to K + 1 per
// sequence).
[[maybe_unused]] GpuRunnerOptions gpu_options(const config::ServiceConfig& cfg, int device,
                                              bool draft) {
  GpuRunnerOptions o;
  o.device = device;
  o.block_size = cfg.kv.block_size;
  o.max_tokens_per_step = cfg.scheduler.max_num_batched_tokens;
  if (draft)
    o.max_tokens_per_step += int64_t{cfg.scheduler.max_num_seqs} *
                             (cfg.speculative.num_speculative_tokens + 1);
  o.max_logits_per_step = o.max_tokens_per_step;
  o.kv_memory_fraction = cfg.kv.memory_fraction;
  if (!draft && cfg.weights == "random-w4g128") o.random_group_size = 128;
  if (!draft && cfg.weights == "random-bf16") o.random_group_size = 0;
  return o;
}

}  // namespace

// The GPU runner comes from the module worker/gpu_backend.h describes, loaded here and only here:
// a device = "cpu" worker never loads a CUDA library.
void WorkerLoop::load_cuda_target(messages::WorkerHello& hello) {
#if !SHARDSERVE_HAVE_CUDA
  (void)hello;
  fail("device = \"cuda\": this worker was built without CUDA (configure with "
       "-DSHARDSERVE_ENABLE_CUDA=ON where nvcc is installed); use device = \"cpu\"");
#else
  gpu_ = GpuModule::load();
  GpuBackend& gpu = gpu_->backend();
  const GpuDevices devices = gpu.devices();
  require(devices.count > 0,
          "device = \"cuda\": no GPU found on host {} (world rank {}; {}): use device = \"cpu\" "
          "on this host",
          env_.host(), env_.world_rank(), devices.why_none);
  cuda_device_ = env_.local_rank() % devices.count;
  comm::Collective* group = timed_group_.get();  // never called with one rank
  if (tp_ > 1) {
    device_group_ = gpu.device_collective(group_->communicator(), cuda_device_);
    timed_device_group_ = std::make_unique<monitoring::TimedCollective>(*device_group_);
    group = timed_device_group_.get();
  }
  GpuRunnerOptions o = gpu_options(cfg_, cuda_device_, false);
  const std::size_t target_block = gpu.kv_bytes_per_block(model_, *shard_, cfg_.kv.block_size);
  const std::size_t draft_block =
      draft_model_ ? gpu.kv_bytes_per_block(*draft_model_, *draft_shard_, cfg_.kv.block_size) : 0;
  const std::size_t per_block = target_block + draft_block;
  std::string source;
  if (cfg_.kv.num_blocks > 0) {
    o.num_kv_blocks = cfg_.kv.num_blocks;
    source = fmt::format("kv.num_blocks = {}", cfg_.kv.num_blocks);
  } else if (cfg_.kv.memory_bytes > 0) {
    o.num_kv_blocks = cfg_.kv.memory_bytes / static_cast<int64_t>(per_block);
    source = fmt::format("kv.memory_bytes = {}", cfg_.kv.memory_bytes);
    require(o.num_kv_blocks >= 1, "KV pool: {} leaves room for no block of {} bytes", source,
            per_block);
  } else {
    // The target's pool takes its share of the fraction; the draft's pool (built after the
    // InitCache) the rest.
    o.kv_memory_fraction = cfg_.kv.memory_fraction * double(target_block) / double(per_block);
    source = fmt::format("kv.memory_fraction = {} of the free device memory{}",
                         cfg_.kv.memory_fraction, draft_block ? " (target + draft)" : "");
  }
  {
    std::optional<model::Checkpoint> checkpoint;
    if (!o.random_group_size) checkpoint = model::Checkpoint::open(cfg_.model);
    GpuRunner r = gpu.make_runner(model_, *shard_, checkpoint ? &*checkpoint : nullptr, o, *group);
    weight_bytes_ = static_cast<int64_t>(r.weights_bytes);
    kv_bytes_ = static_cast<int64_t>(r.kv_bytes);
    hello.num_kv_blocks = r.num_kv_blocks;
    hello.kv_bytes_per_block = static_cast<int64_t>(per_block);
    target_ = std::move(r.runner);
  }
  hello.kv_source = fmt::format("{} on GPU {}", source, cuda_device_);
#endif
}

void WorkerLoop::build_cuda_draft() {
  if (!holds_draft()) return;
  require(gpu_ != nullptr, "device = \"cuda\": the draft runner needs the GPU module loaded "
          "with the target's");
  comm::Collective* group = timed_device_group_ ? static_cast<comm::Collective*>(timed_device_group_.get())
                                                : timed_group_.get();
  if (draft_shard_->size == 1 && tp_ > 1) {
    draft_group_ = std::make_unique<comm::SingleRankCollective>();
    group = draft_group_.get();
  }
  GpuRunnerOptions o = gpu_options(cfg_, cuda_device_, true);
  o.num_kv_blocks = target_->num_kv_blocks();  // the coordinator's block ids address both
  const auto checkpoint = model::Checkpoint::open(cfg_.speculative.draft_model);
  GpuRunner r = gpu_->backend().make_runner(*draft_model_, *draft_shard_, &checkpoint, o, *group);
  weight_bytes_ += static_cast<int64_t>(r.weights_bytes);
  kv_bytes_ += static_cast<int64_t>(r.kv_bytes);
  draft_ = std::move(r.runner);
}

}  // namespace shardserve::worker
