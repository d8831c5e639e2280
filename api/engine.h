#pragma once
// What the front end needs from the engine that hosts it. The coordinator process implements it
// over its EngineCore (api/runtime/core_engine.h is that adapter); the tests and `llm-local`
// implement it over an in-process Scheduler + ModelRunner + Sampler (api/local/local_engine.h).
//
// Threading: every method is called from one thread, the engine thread (the one that calls
// FrontEnd::pump); the engine need not be thread-safe. The front end's own thread never touches
// it.
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "api/protocol.h"
#include "coordinator/request.h"
#include "coordinator/request_output.h"

namespace shardserve::api {

using Clock = std::chrono::steady_clock;

struct EnginePoll {
  // Every output produced since the last poll: new tokens, finishes, rejections, cancellations.
  std::vector<coordinator::RequestOutput> outputs;
  // Requests whose first step was scheduled since the last poll, with when it was (for the
  // queue time). An engine that cannot tell leaves it empty: queue_s is then null.
  std::vector<std::pair<std::string, Clock::time_point>> started;
};

// Why the front end cancels a request: the client asked (or vanished), or one of the service's
// time limits ended it. The engine ends the request the same way for each (a final kCancelled
// output, KV freed); the reason is for its metrics (requests_finished_total's label).
enum class CancelReason { kClient, kDeadline, kStreamIdle };

class Engine {
 public:
  virtual ~Engine() = default;
  // Takes a validated request (request_id unique among live requests). A refusal is not
  // thrown: it comes back from poll() as a finished output with reason kRejected.
  virtual void submit(coordinator::RequestSpec spec) = 0;
  // Cancels a live request; its final kCancelled output comes from poll() and its KV blocks are
  // freed. False when the request is not live (it finished already).
  virtual bool cancel(std::string_view request_id, CancelReason reason) = 0;
  // Runs the engine for up to about `wait` (a step, or waiting for a replica's result) and
  // returns what it produced. Throws shardserve::Error when the engine failed.
  virtual EnginePoll poll(std::chrono::milliseconds wait) = 0;
  // Live requests anywhere, or a step in flight.
  virtual bool has_unfinished() const = 0;
  // Queue, running and KV figures per replica.
  virtual std::vector<ReplicaStatus> status() const = 0;
};

}  // namespace shardserve::api
