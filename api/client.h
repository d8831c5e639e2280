#pragma once
// A client of the ZeroMQ front end: one DEALER socket, any number of requests in flight on it
// (messages carry the request id). Not thread-safe: one thread owns a Client. Used by `llmctl`,
// the HTTP gateway and the tests; client/python is the same thing in Python.
#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "api/curve.h"
#include "api/protocol.h"

namespace shardserve::api {

struct ClientOptions {
  std::chrono::milliseconds heartbeat_ivl{1000};  // libzmq heartbeats (ZMTP PING)
  std::chrono::milliseconds heartbeat_timeout{5000};
  std::string routing_id;  // "": libzmq picks one (the usual case)
  CurveClientOptions curve;  // key files; off: plain ZMTP (a loopback server without CURVE)
};

class Client {
 public:
  explicit Client(const std::string& endpoint, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void send(const ClientMessage& message);
  // Sends frames as given (tests of malformed input).
  void send_frames(const std::vector<std::string>& frames);

  // The next message, waiting up to `timeout`; heartbeats are skipped; nullopt on timeout.
  // Throws ProtocolError(kMalformed) for a frame that is not a server message, and
  // ProtocolError(kUnavailable) naming the cause when the handshake fails (the server refused
  // this client's CURVE key, or one side has CURVE and the other not).
  std::optional<ServerMessage> receive(std::chrono::milliseconds timeout);

  // Request/reply helpers: send and wait for the reply of that type; messages of other types
  // received meanwhile are kept for receive(). Throw ProtocolError(kUnavailable) on timeout and
  // rethrow an error reply as ProtocolError.
  StatusReply status(bool requests = false,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5));
  HealthReply health(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ModelInfo model_info(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  zmq::socket_t& socket() { return socket_; }
  const std::string& endpoint() const { return endpoint_; }

 private:
  template <typename T>
  T request(const ClientMessage& message, std::chrono::milliseconds timeout);
  std::optional<ServerMessage> read(std::chrono::milliseconds timeout);

  std::string endpoint_;
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::optional<HandshakeMonitor> handshake_;  // after socket_: destroyed before it
  bool curve_ = false;
  std::deque<ServerMessage> backlog_;
};

// A client message's or server message's "type" spelling, for logs.
std::string_view type_name(const ServerMessage& message);

}  // namespace shardserve::api
