#include "api/client.h"

#include <fmt/format.h>

#include <zmq_addon.hpp>

namespace shardserve::api {

using Clock = std::chrono::steady_clock;

Client::Client(const std::string& endpoint, ClientOptions options)
    : endpoint_(endpoint), socket_(context_, zmq::socket_type::dealer) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(options.heartbeat_ivl.count()));
  socket_.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(options.heartbeat_timeout.count()));
  socket_.set(zmq::sockopt::heartbeat_ttl, static_cast<int>(options.heartbeat_timeout.count()));
  socket_.set(zmq::sockopt::sndhwm, 100000);
  socket_.set(zmq::sockopt::rcvhwm, 100000);
  if (!options.routing_id.empty()) socket_.set(zmq::sockopt::routing_id, options.routing_id);
  const CurveClientKeys keys = load_curve_client_keys(options.curve);
  apply_curve_client(socket_, keys);
  curve_ = keys.enabled();
  handshake_.emplace(context_, socket_, endpoint, curve_);
  try {
    socket_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    fail("cannot connect to {}: {}", endpoint, e.what());
  }
}

Client::~Client() = default;

void Client::send(const ClientMessage& message) {
  const std::string payload = encode(message);
  socket_.send(zmq::buffer(payload), zmq::send_flags::none);
}

void Client::send_frames(const std::vector<std::string>& frames) {
  for (std::size_t i = 0; i < frames.size(); ++i)
    socket_.send(zmq::buffer(frames[i]),
                 i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

std::optional<ServerMessage> Client::read(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                               {handshake_->socket().handle(), 0, ZMQ_POLLIN, 0}};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    zmq::poll(items, 2, std::max(left, std::chrono::milliseconds(0)));
    if (items[1].revents & ZMQ_POLLIN) {
      if (std::string why = handshake_->read_failure(); !why.empty())
        throw ProtocolError(ErrorCode::kUnavailable, "", why);
      continue;
    }
    if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait))
      continue;
    if (frames.empty()) continue;
    ServerMessage m = decode_server_message(frames.back().to_string_view());
    if (std::holds_alternative<Heartbeat>(m)) {
      if (Clock::now() >= deadline) return std::nullopt;
      continue;
    }
    return m;
  }
}

std::optional<ServerMessage> Client::receive(std::chrono::milliseconds timeout) {
  if (!backlog_.empty()) {
    ServerMessage m = std::move(backlog_.front());
    backlog_.pop_front();
    return m;
  }
  return read(timeout);
}

template <typename T>
T Client::request(const ClientMessage& message, std::chrono::milliseconds timeout) {
  send(message);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    auto m = read(left);
    if (!m) break;
    if (auto* t = std::get_if<T>(&*m)) return std::move(*t);
    if (auto* e = std::get_if<ErrorReply>(&*m); e && !e->id)
      throw ProtocolError(e->code, e->field, e->message);
    backlog_.push_back(std::move(*m));
  }
  throw ProtocolError(ErrorCode::kUnavailable, "",
                      fmt::format("no answer from {} within {} ms{}", endpoint_, timeout.count(),
                                  curve_ ? " (CURVE on: is the server's public key file the "
                                           "right one?)"
                                         : ""));
}

StatusReply Client::status(bool requests, std::chrono::milliseconds timeout) {
  return request<StatusReply>(StatusRequest{requests}, timeout);
}
HealthReply Client::health(std::chrono::milliseconds timeout) {
  return request<HealthReply>(HealthRequest{}, timeout);
}
ModelInfo Client::model_info(std::chrono::milliseconds timeout) {
  return request<ModelInfo>(ModelInfoRequest{}, timeout);
}

std::string_view type_name(const ServerMessage& message) {
  static constexpr std::string_view kNames[] = {"accepted", "delta",  "final",      "error",
                                                "status",   "health", "model_info", "heartbeat"};
  return kNames[message.index()];
}

}  // namespace shardserve::api
