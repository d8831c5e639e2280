#pragma once
// The gateway's side of the ZeroMQ protocol: one DEALER socket to the coordinator's front end,
// owned by one I/O thread, shared by every HTTP handler thread. A handler submits its choices
// and reads their messages from a Stream (a queue the I/O thread fills by request id); the
// status/health/model_info calls wait for the reply of that type.
//
// The socket sets ZMQ_IMMEDIATE: while the coordinator is not connected a submit fails at once
// (the handler answers 503) rather than queueing. The front end sends a heartbeat at least every
// probe interval while requests are live, so a Stream that hears nothing for silence_timeout
// means the coordinator is gone.
//
// A Stream holds at most max_stream_messages unread messages: a client that reads its SSE
// stream more slowly than tokens come (or not at all) fills it, and then the stream's requests
// are cancelled and its last message is an "overloaded" error saying why. So a stalled client
// costs the gateway a bounded amount of memory, not its whole generation.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/curve.h"
#include "api/protocol.h"

namespace shardserve::gateway {

using Clock = std::chrono::steady_clock;

struct BackendOptions {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::chrono::milliseconds heartbeat_ivl{1000};
  std::chrono::milliseconds heartbeat_timeout{5000};
  std::size_t max_stream_messages = 4096;  // unread messages a Stream holds at most
  api::CurveClientOptions curve;  // key files; read (and checked) when the Backend is made
};

class Backend {
 public:
  class Stream {
   public:
    // The next message of this stream's requests (accepted, delta, final, error), waiting up to
    // `timeout`; nullopt on timeout.
    std::optional<api::ServerMessage> next(std::chrono::milliseconds timeout);
    const std::vector<std::string>& ids() const { return ids_; }

   private:
    friend class Backend;
    // Queues m; false (m dropped) once `cap` messages wait unread: the stream then ends with
    // an error in their place and takes nothing more.
    bool push(api::ServerMessage m, std::size_t cap);
    std::vector<std::string> ids_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<api::ServerMessage> queue_;
    bool overflowed_ = false;
  };

  explicit Backend(BackendOptions options);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // Sends the submits (their ids must be unique: use next_id()). A submit that cannot be sent
  // (the coordinator is not connected) comes back on the stream as an "unavailable" error.
  std::shared_ptr<Stream> submit(std::vector<api::SubmitRequest> submits);
  // Cancels those of the stream's requests that are still live and forgets the stream.
  void cancel(const Stream& stream);
  // Forgets a stream whose requests have all ended.
  void release(const Stream& stream);

  std::optional<api::HealthReply> health(std::chrono::milliseconds timeout);
  std::optional<api::ModelInfo> model_info(std::chrono::milliseconds timeout);
  std::optional<api::StatusReply> status(std::chrono::milliseconds timeout);

  // When the coordinator was last heard from (any message, heartbeats included).
  Clock::time_point last_heard() const {
    return Clock::time_point(Clock::duration(last_heard_.load()));
  }
  std::string next_id();
  const std::string& endpoint() const { return options_.endpoint; }

 private:
  struct Outgoing {
    std::string payload;
    std::vector<std::string> ids;  // submits: answered "unavailable" when the send fails
  };
  struct ControlWait {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<api::ServerMessage> reply;
  };
  template <typename T>
  std::optional<T> control(const api::ClientMessage& request, std::chrono::milliseconds timeout);
  void enqueue(Outgoing out);
  void run();
  void route(api::ServerMessage m);

  BackendOptions options_;
  api::CurveClientKeys curve_keys_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> last_heard_{0};
  std::atomic<uint64_t> counter_{0};
  int wake_fd_ = -1;
  std::mutex mu_;
  std::deque<Outgoing> outbox_;
  std::unordered_map<std::string, std::weak_ptr<Stream>> streams_;  // request id -> stream
  std::unordered_map<std::string, std::vector<std::shared_ptr<ControlWait>>>
      waiting_;  // type -> waiters
  std::thread thread_;
};

}  // namespace shardserve::gateway
