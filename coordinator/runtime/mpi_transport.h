#pragma once
// ReplicaTransport over the MPI control channel: replica r is world ranks
// layout.ranks_of(r); its plans go to each of them, its results come from its first rank.
//
// Faults (docs/RELIABILITY.md "Faults"; Open MPI 4.1 under `mpirun --enable-recovery`): a send to
// a dead rank may "succeed" and a receive from it never completes, so nothing here waits on one
// rank: receives poll any source, sends are non-blocking. on_replica_failed() stops sending to
// the replica, drops its later messages, sends its ranks Abort (a rank that can read it exits
// without MPI_Finalize), SIGKILLs those of its ranks that run on this host (a stopped rank, or
// one stuck in a collective with a dead peer, reads nothing), abandons the sends to them, and
// tells every other worker (Heartbeat.peers_failed) to skip MPI_Finalize at its Shutdown.
// Ranks on other hosts get only the Abort: see the README's lifecycle section.
//
// Death is noticed fast on this host: poll() looks at the processes of the local worker ranks
// (their pids from the hellos; /proc, every 100 ms) and reports one that is gone (or a zombie) as
// that rank's WorkerError. A rank on another host, or a stopped or stuck one, is found by the
// engine's step timeout instead.
#include <chrono>
#include <string>
#include <vector>

#include "comm/control_channel.h"
#include "comm/world_layout.h"
#include "coordinator/runtime/replica_transport.h"

namespace shardserve::runtime {

// Where a worker rank runs, from its WorkerHello.
struct RankProcess {
  std::string host;
  int pid = 0;
};

struct MpiTransportOptions {
  // A Heartbeat goes to a replica's ranks when nothing was sent to them for this long.
  std::chrono::milliseconds heartbeat_interval{1000};
  // By world rank - 1 (empty: no rank is killed, only told). Ranks whose host equals
  // `coordinator_host` are SIGKILLed when their replica fails.
  std::vector<RankProcess> workers;
  std::string coordinator_host;
};

class MpiTransport final : public ReplicaTransport {
 public:
  MpiTransport(comm::ControlChannel& channel, comm::WorldLayout layout,
               MpiTransportOptions options = {});

  int num_replicas() const override { return layout_.replicas; }
  void send_plan(int replica, const messages::StepPlan& plan) override;
  // A message other than a result or an error, or from a rank that is not a worker, is an Error.
  // Sends the heartbeats that are due first.
  std::optional<ReplicaEvent> poll(std::chrono::milliseconds timeout) override;
  std::string describe(int replica) const override;
  void on_replica_failed(int replica, const std::string& cause) override;

  // The worker ranks of the replicas that have not failed (for the final Shutdown).
  std::vector<int> live_worker_ranks() const;
  bool any_failed() const;

 private:
  void send_heartbeats();
  // A local worker rank of a live replica whose process is gone, as its WorkerError.
  std::optional<ReplicaEvent> check_processes();

  comm::ControlChannel& channel_;
  comm::WorldLayout layout_;
  MpiTransportOptions options_;
  std::vector<bool> failed_;
  std::vector<std::chrono::steady_clock::time_point> last_sent_;
  std::chrono::steady_clock::time_point next_process_check_{};
};

// "world rank 3 (replica 1, tp rank 0 of 2)".
std::string describe_rank(const comm::WorldLayout& layout, int world_rank);

}  // namespace shardserve::runtime
