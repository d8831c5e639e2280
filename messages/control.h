#pragma once
// The control messages between the coordinator (world rank 0) and the worker ranks, besides the
// step plans and results of messages/step_plan.h. Value types; messages/codec.h serialises them.
//
// Start-up (see docs/runtime.md):
//   coordinator -> every worker   Configure     the validated service configuration
//   worker -> coordinator         WorkerHello   model, shapes and KV capacity of the rank
//   coordinator -> every worker   InitCache     the replica's KV pool size (min over its ranks)
//   worker -> coordinator         WorkerReady   KV pool allocated; serving
// Serving:     StepPlan to every rank of a replica, StepResult from its tensor-parallel rank 0;
//              Heartbeat to a replica's ranks when nothing else was sent to them for
//              runtime.heartbeat_interval_s (a worker that hears nothing for
//              runtime.coordinator_timeout_s exits: the coordinator is gone), and to every live
//              rank at once when a replica fails. Abort to a failed replica's ranks.
// End:         Shutdown (exit 0) or Abort (start-up failed elsewhere: exit 1) to every worker;
//              WorkerError from a worker that failed (the coordinator then ends the job).
#include <cstdint>
#include <string>

namespace shardserve::messages {

struct Configure {
  std::string config_toml;  // the effective ServiceConfig (config::to_toml), validated
  int32_t tp = 1;           // tensor-parallel size: world rank w >= 1 is replica (w-1)/tp,
  int32_t replicas = 1;     // tensor-parallel rank (w-1)%tp
};

struct WorkerHello {
  int32_t world_rank = 0;
  int32_t replica = 0;
  int32_t tp_rank = 0;
  int32_t tp_size = 1;
  std::string host;
  int32_t pid = 0;
  std::string model_name;     // served model name (config)
  std::string model_type;     // config.json's model_type
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t vocab_size = 0;
  int64_t num_heads_per_rank = 0;
  int64_t num_kv_heads_per_rank = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  int64_t weight_bytes = 0;        // this rank's weight shard as loaded (float32 on the CPU path)
  int64_t num_kv_blocks = 0;       // blocks this rank can hold
  int64_t block_size = 0;          // tokens per block
  int64_t kv_bytes_per_block = 0;  // this rank's bytes of one block (all layers, K and V)
  std::string kv_source;           // how num_kv_blocks was decided, for the log
};

struct InitCache {
  int64_t num_kv_blocks = 0;  // the replica's pool: the same on every one of its ranks
};

struct WorkerReady {
  int32_t world_rank = 0;
  int64_t kv_cache_bytes = 0;  // allocated
};

struct Shutdown {
  std::string reason;
};

struct Abort {
  std::string reason;
};

struct Heartbeat {
  // A replica has failed in this job: a rank must not call MPI_Finalize at its Shutdown (with a
  // dead rank in the job, Open MPI 4.1's MPI_Finalize hangs over tcp; docs/RELIABILITY.md).
  bool peers_failed = false;
};

struct WorkerError {
  int32_t world_rank = 0;
  std::string message;
};

}  // namespace shardserve::messages
