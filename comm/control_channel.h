#pragma once
// The control channel between the coordinator (world rank 0) and the worker ranks: opaque
// messages (bytes from messages/codec.h) sent point to point over a private duplicate of the
// world communicator, so that control traffic never matches a collective's messages.
//
// Sends are non-blocking: the bytes are kept until MPI has taken them, and one encoded plan can
// go to all ranks of a replica without being copied or re-encoded (send_to). Receives poll
// (MPI_Improbe + MPI_Mrecv) from any rank, so one thread can wait for several replicas at once
// and give up after a deadline; between polls the caller sleeps briefly, leaving the core to
// ranks that compute. Messages between two ranks arrive in the order they were sent.
#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shardserve::comm {

class ControlChannel {
 public:
  // Collective over `world` (MPI_Comm_dup): every rank constructs it at the same point.
  explicit ControlChannel(MPI_Comm world);
  // Pending sends are left to MPI (MPI_Request_free): the bytes stay alive until then.
  ~ControlChannel();
  ControlChannel(const ControlChannel&) = delete;
  ControlChannel& operator=(const ControlChannel&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  void send(int dest, std::string bytes);
  // The same bytes to every rank in `dests`: one buffer, one MPI_Isend per destination.
  void send_to(const std::vector<int>& dests, std::string bytes);

  struct Received {
    int source = -1;
    std::string bytes;
  };
  // A message from any rank, if one has arrived; never blocks.
  std::optional<Received> try_receive();
  // Polls until a message arrives or `timeout` passes (nullopt).
  std::optional<Received> receive_for(std::chrono::milliseconds timeout);

  // Retires completed sends; returns how many are still in flight.
  std::size_t progress();
  // Waits until every send has completed; false when `timeout` passed first.
  bool flush(std::chrono::milliseconds timeout);
  // Stops tracking the sends to `dests` (dead or given-up ranks, whose sends may never complete
  // in Open MPI 4.1: see docs/RELIABILITY.md "Faults"): their requests are freed, their bytes kept
  // to the end of the process, and flush() no longer waits for them.
  void abandon(const std::vector<int>& dests);

 private:
  struct PendingSend {
    MPI_Request request;
    int dest;
    std::shared_ptr<const std::string> bytes;
  };
  void post(int dest, const std::shared_ptr<const std::string>& bytes);
  // Frees the requests of `sends` (MPI_Request_free) and keeps their bytes alive.
  static void release(std::vector<PendingSend>& sends);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::vector<PendingSend> pending_;
};

// Sleeps between polls, one per wait: none for the first 64 polls, then an eighth of the time
// waited so far, from 10 µs up to `max_sleep`. A reply is so noticed at most about an eighth of
// the wait late (after a 1.5 ms CPU step, under 0.2 ms; the doubling schedule this replaced
// could be 0.5 ms late at any wait past 0.6 ms), and an idle rank still polls every max_sleep.
class PollBackoff {
 public:
  explicit PollBackoff(std::chrono::microseconds max_sleep = std::chrono::microseconds(500))
      : max_(max_sleep), start_(std::chrono::steady_clock::now()) {}
  void wait();

 private:
  std::chrono::microseconds max_;
  std::chrono::steady_clock::time_point start_;
  int polls_ = 0;
};

}  // namespace shardserve::comm
