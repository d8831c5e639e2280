#pragma once
// The coordinator's side of start-up (the worker's is worker/worker_loop.cc):
//   1. Configure (the effective configuration) to every worker;
//   2. a WorkerHello from every worker: model, shapes, KV capacity; checked for consistency
//      (every rank loaded the same model with the same shapes; each rank is where the layout
//      says) and logged;
//   3. InitCache to every rank of a replica with the replica's KV pool = the minimum over its
//      ranks (a block id must be valid on every rank of the replica);
//   4. a WorkerReady from every worker once its pool is allocated.
// Any failure (a worker's error report, an inconsistency, no answer within
// runtime.startup_timeout_s) throws a shardserve::Error naming the ranks and values.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/control_channel.h"
#include "comm/world_layout.h"
#include "messages/control.h"

namespace shardserve::runtime {

struct ReplicaCapacity {
  int replica = 0;
  std::vector<int> world_ranks;
  int64_t num_kv_blocks = 0;
  int64_t block_size = 0;
};

struct HandshakeResult {
  std::vector<messages::WorkerHello> hellos;  // by world rank - 1
  std::vector<ReplicaCapacity> replicas;
};

// Steps 2 and 3's checks, without MPI (unit-tested): throws on an inconsistency.
std::vector<ReplicaCapacity> check_hellos(const comm::WorldLayout& layout,
                                          const std::vector<messages::WorkerHello>& hellos,
                                          const std::string& expected_model_name);

// Steps 2-4 (the caller sends Configure and joins the tensor-parallel split first).
HandshakeResult run_handshake(comm::ControlChannel& channel, const comm::WorldLayout& layout,
                              const std::string& model_name, std::chrono::milliseconds timeout);

// Sends Abort to every worker and waits (bounded) for the sends: start-up failed, workers exit 1.
void abort_workers(comm::ControlChannel& channel, int world_size, const std::string& reason);

}  // namespace shardserve::runtime
