#pragma once
// One worker rank of the distributed runtime (world rank >= 1). Start-up: take the configuration
// from the coordinator, join the replica's tensor-parallel group, load this rank's slices of the
// checkpoint, size the KV pool, report (WorkerHello), allocate the pool the coordinator settles
// (InitCache, the replica's minimum) and say WorkerReady. Serving: for every StepPlan, every rank
// of the replica runs the StepExecutor (worker/speculative_executor.h: draft passes when the plan
// asks for draft-model drafts, the target's forward pass, sampling or verification; the
// collectives inside keep the ranks in step); tensor-parallel rank 0 returns the StepResult.
// Shutdown returns 0, Abort 1.
//
// Faults (docs/RELIABILITY.md "Faults"): Heartbeats are only noted. A worker that hears nothing
// from the coordinator for runtime.coordinator_timeout_s while serving (startup_timeout_s + 60 s
// before; the defaults before Configure) decides the coordinator is gone (under
// `mpirun --enable-recovery` nobody else ends it), logs why and _exits 1. An Abort while serving
// (its replica failed) _exits 1 too: its collective peers may be dead, and MPI_Finalize with a
// dead rank in the job can hang. After a Heartbeat with peers_failed, Shutdown also skips
// MPI_Finalize (exit_without_finalize()). A watchdog thread _exits 1 when one step has run for
// step_timeout_s + coordinator_timeout_s: by then the coordinator has given the replica up, and a
// rank stuck in a collective whose peer died (on another host, where the coordinator cannot kill
// it) can read no Abort.
//
// Backend (`device`): "cpu" runs worker::ModelRunner, "cuda" worker::cuda::CudaModelRunner from
// the GPU module the worker loads for it (worker/gpu_backend.h; only in a SHARDSERVE_HAVE_CUDA
// build, refused with the reason otherwise; on a host without a GPU refused naming the host), both
// behind StepRunner. On CUDA the rank takes GPU (local rank % visible devices) and, with tp > 1,
// an NCCL collective over its replica's group.
//
// Speculative decoding (speculative.method = "draft"): the draft model is loaded next to the
// target with its own paged KV pool of the target's number of blocks (the KV budget per block is
// target + draft). speculative.draft_placement: "every_rank" shards it over the replica's group,
// "rank_zero" keeps it whole on tensor-parallel rank 0, which broadcasts the drafts.
//
// The logits are gathered over the group inside ModelRunner::lm_head (every rank gets the full
// vocabulary). For greedy requests this could be avoided: each rank takes the argmax of its
// vocabulary slice and the group all-gathers (max, index) pairs, 8 bytes per row and rank
// instead of vocab / tp floats; left for when the GPU path makes it pay.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <optional>
#include <string>

#include "comm/control_channel.h"
#include "comm/mpi_collective.h"
#include "comm/mpi_util.h"
#include "config/service_config.h"
#include "messages/codec.h"
#include "messages/control.h"
#include "model/model_config.h"
#include "monitoring/endpoint.h"
#include "monitoring/timed_collective.h"
#include "monitoring/worker_metrics.h"
#include "worker/cuda/step_runner.h"
#include "worker/model_runner.h"
#include "worker/speculative_executor.h"

namespace shardserve::worker {

class GpuModule;  // worker/gpu_backend.h

struct KvPoolPlan {
  int64_t num_blocks = 0;
  int64_t bytes_per_block = 0;
  std::string source;  // how it was decided, for the log
};

// The KV pool one rank can hold (float32 blocks on the CPU path), from the configuration's
// kv settings (see config::KvSettings). `available_bytes`: memory free for the pool on this rank
// (MemAvailable / ranks on the host on the CPU path); used only for kv.memory_fraction.
// `draft`: the draft model this rank holds (nullptr: none), split over `draft_tp` ranks; each
// block then costs the target's and the draft's bytes. Throws when not one block fits.
KvPoolPlan plan_kv_pool(const config::ServiceConfig& cfg, const model::ModelConfig& model,
                        int64_t available_bytes, const model::ModelConfig* draft = nullptr,
                        int draft_tp = 1);

// MemAvailable from /proc/meminfo, in bytes (0 when unreadable).
int64_t host_available_memory();

class WorkerLoop {
 public:
  WorkerLoop(comm::MpiEnvironment& env, comm::ControlChannel& channel);
  ~WorkerLoop();
  // Start-up and serving; returns the exit status. Throws Error on failure.
  int run();
  // True once start-up is done (the pool is allocated and WorkerReady sent).
  bool serving() const { return serving_; }
  // A Heartbeat said a replica failed: MPI_Finalize may hang; the caller should _exit instead.
  bool exit_without_finalize() const { return peers_failed_; }

 private:
  // Waits for the next coordinator message other than a Heartbeat; _exits 1 after the silence
  // bound (see the top of this file).
  messages::Message next_message();
  std::chrono::milliseconds silence_limit() const;
  messages::WorkerHello load(const messages::Configure& configure);
  // The CPU runners (target, and draft if any) over a pool of num_blocks.
  void build_cpu_runners(int64_t num_blocks);
  // device = "cuda": the target's runner (at load, it sizes its own pool) and the draft's.
  void load_cuda_target(messages::WorkerHello& hello);
  void build_cuda_draft();
  bool holds_draft() const;
  void serve();
  void step(const messages::StepPlan& plan);

  comm::MpiEnvironment& env_;
  comm::ControlChannel& channel_;
  config::ServiceConfig cfg_;
  model::ModelConfig model_;
  int replica_ = 0;
  int tp_rank_ = 0;
  int tp_ = 1;
  std::unique_ptr<comm::MpiCollective> group_;
  // The forward pass calls the group through this, which times its all-reduces.
  std::unique_ptr<monitoring::TimedCollective> timed_group_;
  std::unique_ptr<monitoring::MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<monitoring::WorkerMetrics> metrics_;
  int64_t weight_bytes_ = 0;
  std::optional<TensorParallelShard> shard_;
  std::optional<LlamaWeights> weights_;
  // The draft model (speculative.method = "draft") where this rank holds one.
  std::optional<model::ModelConfig> draft_model_;
  std::optional<TensorParallelShard> draft_shard_;
  std::optional<LlamaWeights> draft_weights_;
  std::unique_ptr<comm::Collective> draft_group_;  // rank_zero: the draft alone, TP = 1
  // device = "cuda": the GPU runner module (worker/gpu_backend.h). Declared before everything it
  // makes (collective, runners), so that it is unloaded after them.
  std::unique_ptr<GpuModule> gpu_;
  // device = "cuda" with tp > 1: NCCL over the replica's group (device buffers).
  std::unique_ptr<comm::Collective> device_group_;
  std::unique_ptr<monitoring::TimedCollective> timed_device_group_;
  int cuda_device_ = 0;
  // CPU backend: the reference runners; target_ / draft_ adapt them (or are the CUDA runners).
  std::unique_ptr<ModelRunner> cpu_target_, cpu_draft_;
  std::unique_ptr<StepRunner> target_, draft_;
  int64_t kv_bytes_ = 0;  // target + draft pools of this rank
  std::unique_ptr<StepExecutor> executor_;
  uint64_t steps_ = 0;
  double step_seconds_ = 0;  // in step() for plans with work
  std::chrono::steady_clock::time_point first_step_start_;
  bool configured_ = false;
  bool serving_ = false;
  bool peers_failed_ = false;
  // Watchdog: when the current step started (steady clock, ns; 0: not in a step).
  std::atomic<int64_t> step_started_ns_{0};
  std::jthread watchdog_;
};

}  // namespace shardserve::worker
