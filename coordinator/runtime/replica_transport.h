#pragma once
// How the engine reaches its replicas: send a step plan to every rank of a replica, and poll
// for what comes back from any of them (a step result from the replica's tensor-parallel rank 0,
// or a worker's report that it failed). The MPI implementation (mpi_transport.h) is the real
// one; tests plug in an in-process fake.
#include <chrono>
#include <optional>
#include <string>
#include <variant>

#include "messages/control.h"
#include "messages/step_plan.h"

namespace shardserve::runtime {

struct ReplicaEvent {
  int replica = -1;
  int world_rank = -1;  // the sender
  std::variant<messages::StepResult, messages::WorkerError> payload;
};

class ReplicaTransport {
 public:
  virtual ~ReplicaTransport() = default;
  virtual int num_replicas() const = 0;
  // The plan to every rank of `replica`: encoded once, one message per rank.
  virtual void send_plan(int replica, const messages::StepPlan& plan) = 0;
  // The next event from any replica, waiting up to `timeout` for one.
  virtual std::optional<ReplicaEvent> poll(std::chrono::milliseconds timeout) = 0;
  // "replica 1 (world ranks 3-4)", for messages.
  virtual std::string describe(int replica) const = 0;
  // The engine gave `replica` up (`cause` says why): nothing more is sent to it, what it still
  // sends is dropped, and its ranks are made to exit (they may be dead, stopped, or stuck in a
  // collective with a dead peer). Never blocks.
  virtual void on_replica_failed(int replica, const std::string& cause) = 0;
};

}  // namespace shardserve::runtime
