#pragma once
// The coordinator's engine: one Scheduler per replica, requests spread over the replicas, every
// replica's steps driven concurrently from one thread. The request front end (a JSON-lines file
// today, ZeroMQ later) talks only to this class: submit / cancel / poll.
//
// Placement: a new request goes to the replica with the smallest outstanding load relative to
// its KV capacity, load = the tokens its live requests may still occupy (prompt + max_tokens,
// or up to max_model_len when max_tokens is unset), capacity = KV blocks x block size. Ties go
// to the replica with fewer live requests, then the lowest index. Free KV blocks alone would
// send a burst of simultaneous arrivals to one replica (nothing is allocated until a step is
// scheduled); outstanding tokens see the burst.
//
// Concurrency: poll() starts a step on every replica that has none in flight and has work,
// then waits for results; a replica whose result arrives is given its next step at once, while
// the others are still computing. A plan that only releases finished sequences is sent without
// waiting for a reply.
//
// Failure (docs/RELIABILITY.md "Faults"): a worker's error report, or a replica that returns
// nothing within the step timeout, marks that replica failed: it gets no more plans and no new
// requests, and the transport is told (ReplicaTransport::on_replica_failed: its ranks are made to
// exit). With FailurePolicy::kFailover each of its live requests moves, in queue order, to the
// surviving replica with the least load (Scheduler::adopt: recomputed from prompt + the tokens
// already streamed, same request id, so the client's stream just goes on). With no surviving
// replica, or with kAbort, every live request ends as unavailable (FinishReason::kUnavailable: the
// service failed, not the request) with a detail naming the failure, as does one the survivor
// cannot adopt, and later submits; failure() says why serving cannot go on (the caller then ends
// the job). poll() throws only
// for a bug (an event from an unknown replica).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coordinator/request.h"
#include "coordinator/request_output.h"
#include "coordinator/scheduler.h"
#include "coordinator/runtime/replica_transport.h"
#include "monitoring/coordinator_metrics.h"

namespace shardserve::runtime {

// runtime.on_replica_failure (config/service_config.h).
enum class FailurePolicy {
  kFailover,  // move the failed replica's requests to the others; end them only if none is left
  kAbort,     // end every live request with the failure and stop serving
};

struct EngineOptions {
  std::chrono::milliseconds step_timeout{120000};
  // Prometheus metrics (monitoring/README.md); null: none. Must outlive the engine.
  monitoring::CoordinatorMetrics* metrics = nullptr;
  FailurePolicy on_replica_failure = FailurePolicy::kFailover;
};

struct ReplicaStats {
  int32_t live_requests = 0;
  int64_t outstanding_tokens = 0;
  int64_t steps = 0;
  int64_t tokens_sampled = 0;
  bool failed = false;
  coordinator::SchedulerStats scheduler;
};

class EngineCore {
 public:
  // One SchedulerConfig per replica (their num_blocks from the handshake).
  EngineCore(ReplicaTransport& transport, std::vector<coordinator::SchedulerConfig> replicas,
             EngineOptions options);
  ~EngineCore();

  // Places the request on a replica and returns its index; -1 when it was refused at once
  // (admission stopped, or the scheduler rejected it): its final output comes from poll().
  int submit(coordinator::RequestSpec spec);
  // Cancels a live request; its final "cancelled" output comes from poll(). False if unknown.
  bool cancel(std::string_view request_id);
  // Cancels every live request (the end of a drain).
  void cancel_all();
  // Later submits are rejected with reason "shutting down" (or, once there is a failure, end
  // unavailable with it).
  void stop_admitting() { admitting_ = false; }
  bool admitting() const { return admitting_; }

  // Starts steps, waits up to `wait` for a result, applies it and the results that have
  // already arrived (at most one per replica), and returns every output produced since the last
  // call (new tokens, finishes, rejections, cancellations). A replica's failure is handled here
  // (see the top of this file); its requests' errors are among the outputs.
  std::vector<coordinator::RequestOutput> poll(std::chrono::milliseconds wait);

  // Live requests anywhere, or a step still in flight.
  bool has_unfinished() const;
  bool steps_in_flight() const;
  int num_replicas() const { return static_cast<int>(replicas_.size()); }
  int num_live_replicas() const;
  bool replica_failed(int replica) const { return replicas_.at(replica).failed; }
  // Non-empty once serving cannot go on (no replica left, or a failure under kAbort): why.
  const std::string& failure() const { return failure_; }
  // Requests moved off failed replicas so far.
  int64_t requeued() const { return requeued_; }
  int replica_of(std::string_view request_id) const;  // -1 when not live
  ReplicaStats stats(int replica) const;
  // The requests whose first step was sent during the last poll(), with when it was sent: the
  // end of their queue time. A recompute after preemption is not a first step.
  const std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>>& started() const {
    return started_;
  }

 private:
  struct InFlight {
    uint64_t step_id;
    std::chrono::steady_clock::time_point sent;
  };
  struct Replica {
    std::unique_ptr<coordinator::Scheduler> scheduler;
    std::optional<InFlight> in_flight;
    int64_t capacity_tokens = 0;
    int64_t outstanding_tokens = 0;
    int32_t live = 0;
    int64_t steps = 0;
    int64_t tokens_sampled = 0;
    std::unordered_map<uint64_t, std::string> unscheduled;  // seq id -> request id, not yet stepped
    bool failed = false;
  };
  struct Placement {
    int replica;
    int64_t tokens;
  };

  int choose_replica() const;  // -1 when every replica failed
  // Marks replica r failed (cause: what happened, naming the replica) and moves or ends its
  // requests; outputs go to pending_.
  void fail_replica(int r, const std::string& cause);
  // A request taken from a failed replica, ended with `detail`.
  void end_with_failure(int r, const coordinator::Request& req, const std::string& detail);
  void start_step(int r);
  void apply(ReplicaEvent event, std::vector<coordinator::RequestOutput>& outputs);
  void check_deadlines();
  void retire(const coordinator::RequestOutput& out);

  ReplicaTransport& transport_;
  EngineOptions options_;
  monitoring::CoordinatorMetrics* metrics_;
  std::vector<Replica> replicas_;
  std::unordered_map<std::string, Placement> placement_;  // live request id -> replica
  std::vector<coordinator::RequestOutput> pending_;       // produced outside poll()
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> started_;
  bool admitting_ = true;
  std::string failure_;
  int64_t requeued_ = 0;
};

}  // namespace shardserve::runtime
