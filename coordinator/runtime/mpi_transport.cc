#include "coordinator/runtime/mpi_transport.h"

#include "common/error.h"
#include "messages/codec.h"

namespace shardserve::runtime {

std::string describe_rank(const comm::WorldLayout& layout, int world_rank) {
  if (world_rank == comm::WorldLayout::kCoordinator) return "world rank 0 (coordinator)";
  return fmt::format("world rank {} (replica {}, tp rank {} of {})", world_rank,
                     layout.replica_of(world_rank), layout.tp_rank_of(world_rank), layout.tp);
}

void MpiTransport::send_plan(int replica, const messages::StepPlan& plan) {
  require(replica >= 0 && replica < layout_.replicas, "send_plan: replica {} of {}", replica,
          layout_.replicas);
  channel_.send_to(layout_.ranks_of(replica), messages::encode(plan));
}

std::optional<ReplicaEvent> MpiTransport::poll(std::chrono::milliseconds timeout) {
  auto received = channel_.receive_for(timeout);
  if (!received) return std::nullopt;
  const int src = received->source;
  require(src >= 1 && src < layout_.world_size(), "control channel: message from rank {} outside "
          "the workers 1..{}", src, layout_.world_size() - 1);
  messages::Message m;
  try {
    m = messages::decode(received->bytes);
  } catch (const Error& e) {
    fail("{} sent an unreadable message: {}", describe_rank(layout_, src), e.what());
  }
  ReplicaEvent ev;
  ev.replica = layout_.replica_of(src);
  ev.world_rank = src;
  if (auto* r = std::get_if<messages::StepResult>(&m)) {
    require(layout_.tp_rank_of(src) == 0, "{} sent a step result; only tp rank 0 samples",
            describe_rank(layout_, src));
    ev.payload = std::move(*r);
  } else if (auto* e = std::get_if<messages::WorkerError>(&m)) {
    ev.payload = std::move(*e);
  } else {
    fail("{} sent an unexpected {} message while serving", describe_rank(layout_, src),
         messages::message_kind_name(messages::kind_of(m)));
  }
  return ev;
}

std::string MpiTransport::describe(int replica) const {
  const int first = layout_.rank_of(replica, 0);
  if (layout_.tp == 1) return fmt::format("replica {} (world rank {})", replica, first);
  return fmt::format("replica {} (world ranks {}-{})", replica, first, first + layout_.tp - 1);
}

}  // namespace shardserve::runtime
