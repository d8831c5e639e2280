#include "coordinator/runtime/mpi_transport.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "messages/codec.h"

namespace shardserve::runtime {

using Clock = std::chrono::steady_clock;

std::string describe_rank(const comm::WorldLayout& layout, int world_rank) {
  if (world_rank == comm::WorldLayout::kCoordinator) return "world rank 0 (coordinator)";
  return fmt::format("world rank {} (replica {}, tp rank {} of {})", world_rank,
                     layout.replica_of(world_rank), layout.tp_rank_of(world_rank), layout.tp);
}

MpiTransport::MpiTransport(comm::ControlChannel& channel, comm::WorldLayout layout,
                           MpiTransportOptions options)
    : channel_(channel),
      layout_(layout),
      options_(std::move(options)),
      failed_(layout.replicas, false),
      last_sent_(layout.replicas, Clock::now()) {
  require(options_.workers.empty() ||
              static_cast<int>(options_.workers.size()) == layout_.world_size() - 1,
          "MpiTransport: {} worker processes for {} worker ranks", options_.workers.size(),
          layout_.world_size() - 1);
  require(options_.heartbeat_interval.count() > 0, "MpiTransport: heartbeat interval {} ms",
          options_.heartbeat_interval.count());
}

void MpiTransport::send_plan(int replica, const messages::StepPlan& plan) {
  require(replica >= 0 && replica < layout_.replicas, "send_plan: replica {} of {}", replica,
          layout_.replicas);
  require(!failed_[replica], "send_plan: {} has failed", describe(replica));
  channel_.send_to(layout_.ranks_of(replica), messages::encode(plan));
  last_sent_[replica] = Clock::now();
}

bool MpiTransport::any_failed() const {
  return std::find(failed_.begin(), failed_.end(), true) != failed_.end();
}

void MpiTransport::send_heartbeats() {
  const auto now = Clock::now();
  std::string bytes;
  for (int r = 0; r < layout_.replicas; ++r) {
    if (failed_[r] || now - last_sent_[r] < options_.heartbeat_interval) continue;
    if (bytes.empty()) bytes = messages::encode(messages::Heartbeat{any_failed()});
    channel_.send_to(layout_.ranks_of(r), bytes);
    last_sent_[r] = now;
  }
}

namespace {

// Whether process `pid` has ended: no /proc entry, or a zombie not yet reaped by mpirun's daemon.
bool process_gone(int pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat;
  if (!std::getline(in, stat)) return true;
  // "pid (comm) S ...": the state follows the last ')' (comm may hold spaces and parentheses).
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  const char state = stat[close + 2];
  return state == 'Z' || state == 'X';
}

}  // namespace

std::optional<ReplicaEvent> MpiTransport::check_processes() {
  const auto now = Clock::now();
  if (options_.workers.empty() || now < next_process_check_) return std::nullopt;
  next_process_check_ = now + std::chrono::milliseconds(100);
  for (int r = 0; r < layout_.replicas; ++r) {
    if (failed_[r]) continue;
    for (int w : layout_.ranks_of(r)) {
      const RankProcess& p = options_.workers[static_cast<std::size_t>(w - 1)];
      if (p.host != options_.coordinator_host || p.pid <= 0 || !process_gone(p.pid)) continue;
      ReplicaEvent ev;
      ev.replica = r;
      ev.world_rank = w;
      ev.payload = messages::WorkerError{
          w, fmt::format("its process (pid {}, on this host) is gone: killed or crashed", p.pid)};
      return ev;
    }
  }
  return std::nullopt;
}

std::optional<ReplicaEvent> MpiTransport::poll(std::chrono::milliseconds timeout) {
  send_heartbeats();
  if (auto gone = check_processes()) return gone;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto received = channel_.receive_for(std::max(left, std::chrono::milliseconds(0)));
    if (!received) return std::nullopt;
    const int src = received->source;
    require(src >= 1 && src < layout_.world_size(), "control channel: message from rank {} outside "
            "the workers 1..{}", src, layout_.world_size() - 1);
    if (failed_[layout_.replica_of(src)]) continue;  // given up: what it still says is moot
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
}

std::string MpiTransport::describe(int replica) const {
  const int first = layout_.rank_of(replica, 0);
  if (layout_.tp == 1) return fmt::format("replica {} (world rank {})", replica, first);
  return fmt::format("replica {} (world ranks {}-{})", replica, first, first + layout_.tp - 1);
}

void MpiTransport::on_replica_failed(int replica, const std::string& cause) {
  require(replica >= 0 && replica < layout_.replicas, "on_replica_failed: replica {} of {}",
          replica, layout_.replicas);
  if (failed_[replica]) return;
  failed_[replica] = true;
  const std::vector<int> ranks = layout_.ranks_of(replica);
  // A rank that can still read (it reported the error itself, or is idle) exits on this.
  channel_.send_to(ranks, messages::encode(messages::Abort{cause}));
  for (int w : ranks) {
    if (options_.workers.empty()) break;
    const RankProcess& p = options_.workers[static_cast<std::size_t>(w - 1)];
    if (p.host != options_.coordinator_host || p.pid <= 0) {
      spdlog::warn("{} runs on {} (pid {}), not on this host: told to exit (Abort); if it is "
                   "stopped or stuck in a collective it stays until mpirun ends the job",
                   describe_rank(layout_, w), p.host, p.pid);
      continue;
    }
    // A stopped rank, or one inside a collective whose peer died, never reads the Abort.
    if (::kill(p.pid, SIGKILL) == 0)
      spdlog::warn("{} (pid {}) killed (SIGKILL): its replica failed", describe_rank(layout_, w),
                   p.pid);
    else if (errno != ESRCH)
      spdlog::error("kill({}, SIGKILL) for {} failed: {}", p.pid, describe_rank(layout_, w),
                    std::strerror(errno));
  }
  // Sends to dead ranks may never complete; the final flush must not wait for them.
  channel_.abandon(ranks);
  // The others must skip MPI_Finalize at their Shutdown (it can hang with a dead rank).
  const auto live = live_worker_ranks();
  if (!live.empty()) channel_.send_to(live, messages::encode(messages::Heartbeat{true}));
  for (int r = 0; r < layout_.replicas; ++r) last_sent_[r] = Clock::now();
}

std::vector<int> MpiTransport::live_worker_ranks() const {
  std::vector<int> ranks;
  for (int r = 0; r < layout_.replicas; ++r)
    if (!failed_[r])
      for (int w : layout_.ranks_of(r)) ranks.push_back(w);
  return ranks;
}

}  // namespace shardserve::runtime
