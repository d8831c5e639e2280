#pragma once
// ReplicaTransport over the MPI control channel: replica r is world ranks
// layout.ranks_of(r); its plans go to each of them, its results come from its first rank.
#include "comm/control_channel.h"
#include "comm/world_layout.h"
#include "coordinator/runtime/replica_transport.h"

namespace shardserve::runtime {

class MpiTransport final : public ReplicaTransport {
 public:
  MpiTransport(comm::ControlChannel& channel, comm::WorldLayout layout)
      : channel_(channel), layout_(layout) {}

  int num_replicas() const override { return layout_.replicas; }
  void send_plan(int replica, const messages::StepPlan& plan) override;
  // A message other than a result or an error, or from a rank that is not a worker, is an Error.
  std::optional<ReplicaEvent> poll(std::chrono::milliseconds timeout) override;
  std::string describe(int replica) const override;

 private:
  comm::ControlChannel& channel_;
  comm::WorldLayout layout_;
};

// "world rank 3 (replica 1, tp rank 0 of 2)".
std::string describe_rank(const comm::WorldLayout& layout, int world_rank);

}  // namespace shardserve::runtime
