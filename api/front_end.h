#pragma once
// The ZeroMQ front end: a ROUTER socket that clients (DEALER sockets) talk to with the messages
// of api/protocol.h (docs/protocol.md), in front of an Engine.
//
// Threads. The socket belongs to the front end's own thread, which decodes and validates
// (tokenizes, renders chats) every message, answers status / health / model_info itself, and
// encodes and sends the outputs. The engine is driven by the host's thread (the engine thread)
// through pump(): it takes the accepted submits and cancels from a queue, runs the engine for a
// while and hands the outputs back. The queue is bounded by admission: at most
// ModelInfo::max_num_seqs + FrontEndOptions::max_waiting requests are live (accepted and not
// finished); a submit past that is answered "overloaded" at once.
//
// Vanished clients. The socket sets ZMQ_ROUTER_MANDATORY, so a send to a client whose
// connection is gone fails (EHOSTUNREACH) instead of being dropped; every client with live
// requests gets a message at least every probe_interval (a delta, or a "heartbeat" when it has
// nothing else), so a client that closes its socket or dies is noticed within probe_interval,
// and a peer that stops answering (network loss) within ZMQ_HEARTBEAT_TIMEOUT after libzmq's
// heartbeats give up on it. Its requests are then cancelled (their KV blocks freed). A client
// that does not read (its queue reaches the send high-water mark) is treated the same way.
//
// Time limits (docs/protocol.md#time-limits). A request whose deadline passes (its timeout_s, or
// limits.max_request_seconds) is answered at once with a final "timeout" / "deadline" carrying
// what it produced so far, and cancelled in the engine; one that gets no new token for
// stream_idle_timeout_s is answered error "timeout" and cancelled. The front end's thread checks
// them on the steady clock when the nearest one is due (its poll timeout is bounded by it), so
// the answer does not wait for the engine: a stuck replica cannot hold it back.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/chat_template.h"
#include "api/curve.h"
#include "api/engine.h"
#include "api/protocol.h"
#include "api/validate.h"
#include "model/tokenizer/tokenizer.h"

namespace shardserve::api {

struct FrontEndOptions {
  // "tcp://127.0.0.1:5555"; "tcp://127.0.0.1:*" picks a free port (see FrontEnd::endpoint()).
  std::string endpoint = "tcp://127.0.0.1:5555";
  int32_t max_waiting = 256;  // live requests allowed beyond the running capacity
  std::chrono::milliseconds probe_interval{200};
  std::chrono::milliseconds zmq_heartbeat_ivl{1000};
  std::chrono::milliseconds zmq_heartbeat_timeout{5000};
  int32_t max_frame_bytes = 4 << 20;
  int32_t send_hwm = 100000;   // messages queued for one client before it counts as gone
  double retry_after_s = 1.0;  // suggested in "overloaded" errors
  // Chats: forced format; unset = recognised from the tokenizer's chat template.
  std::optional<ChatFormat> chat_format;
  ValidationLimits limits;  // limits.max_request_seconds: the deadline (0: none)
  // A live request without a new token for this long is ended with error "timeout" (0: never).
  double stream_idle_timeout_s = 0.0;
  // CURVE (api/curve.h): off serves loopback only, unless curve.allow_plaintext.
  CurveServerOptions curve;
};

class FrontEnd {
 public:
  // Binds the socket (throws shardserve::Error naming the endpoint when it cannot) and starts
  // the front end's thread. `tokenizer` may be null (token-id prompts only); it must outlive
  // the front end. model.text / chat_format / chat_format_error are filled in here.
  FrontEnd(FrontEndOptions options, ModelInfo model, const model::Tokenizer* tokenizer);
  // Stops the thread; live requests are dropped without messages. Answers already sent reach
  // connected clients (the socket lingers up to 2 s on close).
  ~FrontEnd();
  FrontEnd(const FrontEnd&) = delete;
  FrontEnd& operator=(const FrontEnd&) = delete;

  // The bound endpoint, e.g. "tcp://127.0.0.1:40123".
  const std::string& endpoint() const { return endpoint_; }
  const ModelInfo& model_info() const { return model_; }

  // Engine thread: one round. Hands the queued submits and cancels to the engine, polls it
  // (up to `wait` when it has work; when it has none, waits up to `wait` for a command first)
  // and passes its outputs and status to the front end's thread. Exceptions from the engine
  // propagate (the host decides; the front end stays usable).
  void pump(Engine& engine, std::chrono::milliseconds wait);

  // Draining: later submits are answered "shutting_down"; health says "draining".
  void stop_admitting() { admitting_.store(false); }
  bool admitting() const { return admitting_.load(); }
  // Requests accepted and not yet finished (as the front end's thread last counted).
  int32_t live_requests() const { return live_.load(); }
  // The counters a status reply carries.
  StatusReply counters() const;

 private:
  struct Command {
    bool cancel = false;
    std::string engine_id;
    coordinator::RequestSpec spec;
    CancelReason reason = CancelReason::kClient;
  };
  struct EngineEvents {
    EnginePoll poll;
    Clock::time_point at;
  };
  struct Live;
  struct ClientState;
  struct Io;  // the front end thread's own state (socket, requests, clients)

  void run();

  FrontEndOptions options_;
  ModelInfo model_;
  const model::Tokenizer* tokenizer_;
  std::optional<ChatFormat> chat_format_;
  std::string endpoint_;
  Clock::time_point started_at_;

  std::mutex mu_;
  std::condition_variable commands_cv_;
  std::deque<Command> commands_;     // front end thread -> engine thread
  std::deque<EngineEvents> events_;  // engine thread -> front end thread
  std::vector<ReplicaStatus> replicas_;

  std::atomic<bool> admitting_{true};
  std::atomic<bool> stop_{false};
  std::atomic<int32_t> live_{0};
  int wake_fd_ = -1;  // eventfd: the engine thread wakes the front end thread
  std::unique_ptr<Io> io_;
  std::thread thread_;
};

// Runs `front.pump(engine, wait)` until `stop` is set (a convenience for hosts without a loop
// of their own).
void serve(Engine& engine, FrontEnd& front, const std::atomic<bool>& stop,
           std::chrono::milliseconds wait = std::chrono::milliseconds(20));

}  // namespace shardserve::api
