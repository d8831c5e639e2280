#include "gateway/backend.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "api/client.h"

namespace shardserve::gateway {

std::optional<api::ServerMessage> Backend::Stream::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !queue_.empty(); })) return std::nullopt;
  api::ServerMessage m = std::move(queue_.front());
  queue_.pop_front();
  return m;
}

bool Backend::Stream::push(api::ServerMessage m, std::size_t cap) {
  {
    std::lock_guard lock(mu_);
    if (overflowed_) return false;
    if (queue_.size() >= cap) {
      // What the client has not read is dropped: it is not reading, and the answer is an error.
      overflowed_ = true;
      queue_.clear();
      queue_.push_back(api::ErrorReply{
          std::nullopt, api::ErrorCode::kOverloaded, "",
          fmt::format("the client read too slowly: {} messages of this response waited unread "
                      "at the gateway (its --max-stream-messages); the request is cancelled",
                      cap),
          std::nullopt});
    } else {
      queue_.push_back(std::move(m));
    }
  }
  cv_.notify_all();
  return !overflowed_;
}

Backend::Backend(BackendOptions options)
    : options_(std::move(options)), curve_keys_(api::load_curve_client_keys(options_.curve)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  require(wake_fd_ >= 0, "gateway: eventfd failed");
  thread_ = std::thread([this] { run(); });
}

Backend::~Backend() {
  stop_.store(true);
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  close(wake_fd_);
}

std::string Backend::next_id() { return "gw-" + std::to_string(counter_.fetch_add(1) + 1); }

void Backend::enqueue(Outgoing out) {
  {
    std::lock_guard lock(mu_);
    outbox_.push_back(std::move(out));
  }
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
}

std::shared_ptr<Backend::Stream> Backend::submit(std::vector<api::SubmitRequest> submits) {
  auto stream = std::make_shared<Stream>();
  {
    std::lock_guard lock(mu_);
    for (const auto& s : submits) {
      stream->ids_.push_back(s.id);
      streams_[s.id] = stream;
    }
  }
  for (const auto& s : submits) enqueue(Outgoing{api::encode(api::ClientMessage{s}), {s.id}});
  return stream;
}

void Backend::cancel(const Stream& stream) {
  // Only ids still registered: a stream the I/O thread already cancelled (its client left
  // max_stream_messages unread) is not cancelled again when its handler gives up on it.
  std::vector<std::string> live;
  {
    std::lock_guard lock(mu_);
    for (const auto& id : stream.ids())
      if (streams_.erase(id) > 0) live.push_back(id);
  }
  for (const auto& id : live)
    enqueue(Outgoing{api::encode(api::ClientMessage{api::CancelRequest{id, std::nullopt}}), {}});
}

void Backend::release(const Stream& stream) {
  std::lock_guard lock(mu_);
  for (const auto& id : stream.ids()) streams_.erase(id);
}

template <typename T>
std::optional<T> Backend::control(const api::ClientMessage& request,
                                  std::chrono::milliseconds timeout) {
  auto wait = std::make_shared<ControlWait>();
  const std::string type(api::type_name(api::ServerMessage{T{}}));
  {
    std::lock_guard lock(mu_);
    waiting_[type].push_back(wait);
  }
  enqueue(Outgoing{api::encode(request), {}});
  std::unique_lock lock(wait->mu);
  wait->cv.wait_for(lock, timeout, [&] { return wait->reply.has_value(); });
  std::optional<T> result;
  if (wait->reply) result = std::get<T>(*wait->reply);
  lock.unlock();
  std::lock_guard g(mu_);
  auto& list = waiting_[type];
  list.erase(std::remove(list.begin(), list.end(), wait), list.end());
  return result;
}

std::optional<api::HealthReply> Backend::health(std::chrono::milliseconds timeout) {
  return control<api::HealthReply>(api::HealthRequest{}, timeout);
}
std::optional<api::ModelInfo> Backend::model_info(std::chrono::milliseconds timeout) {
  return control<api::ModelInfo>(api::ModelInfoRequest{}, timeout);
}
std::optional<api::StatusReply> Backend::status(std::chrono::milliseconds timeout) {
  return control<api::StatusReply>(api::StatusRequest{}, timeout);
}

void Backend::route(api::ServerMessage m) {
  last_heard_.store(Clock::now().time_since_epoch().count());
  std::optional<std::string> id;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, api::Accepted> || std::is_same_v<T, api::Delta> ||
                      std::is_same_v<T, api::Final>)
          id = x.id;
        else if constexpr (std::is_same_v<T, api::ErrorReply>)
          id = x.id;
      },
      m);
  if (std::holds_alternative<api::Heartbeat>(m)) return;
  std::shared_ptr<Stream> stream;
  std::vector<std::shared_ptr<ControlWait>> waiters;
  {
    std::lock_guard lock(mu_);
    if (id) {
      auto it = streams_.find(*id);
      if (it != streams_.end()) stream = it->second.lock();
    } else {
      auto it = waiting_.find(std::string(api::type_name(m)));
      if (it != waiting_.end()) waiters = it->second;
    }
  }
  if (stream) {
    if (!stream->push(std::move(m), options_.max_stream_messages)) {
      spdlog::warn("gateway: requests {} cancelled: their client left {} messages unread",
                   fmt::join(stream->ids(), ","), options_.max_stream_messages);
      cancel(*stream);
    }
  } else if (!waiters.empty()) {
    for (const auto& w : waiters) {
      {
        std::lock_guard lock(w->mu);
        w->reply = m;
      }
      w->cv.notify_all();
    }
  } else if (auto* e = std::get_if<api::ErrorReply>(&m); e && !e->id) {
    spdlog::warn("gateway: error from the coordinator: {} {}", api::to_string(e->code), e->message);
  }
}

void Backend::run() {
  zmq::context_t context(1);
  zmq::socket_t sock(context, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::immediate, 1);
  sock.set(zmq::sockopt::sndhwm, 100000);
  sock.set(zmq::sockopt::rcvhwm, 100000);
  sock.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(options_.heartbeat_ivl.count()));
  sock.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(options_.heartbeat_timeout.count()));
  sock.set(zmq::sockopt::heartbeat_ttl, static_cast<int>(options_.heartbeat_timeout.count()));
  api::apply_curve_client(sock, curve_keys_);
  api::HandshakeMonitor handshake(context, sock, options_.endpoint, curve_keys_.enabled());
  std::string last_failure;
  Clock::time_point last_failure_logged{};
  sock.connect(options_.endpoint);
  while (!stop_.load()) {
    zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, wake_fd_, ZMQ_POLLIN, 0},
                               {handshake.socket().handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 3, std::chrono::milliseconds(200));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::critical("gateway: zmq_poll failed: {}", e.what());
      return;
    }
    if (items[2].revents & ZMQ_POLLIN)
      if (const std::string why = handshake.read_failure(); !why.empty()) {
        // libzmq retries every reconnect interval; requests meanwhile get 503. Say it once a
        // minute, not ten times a second.
        if (why != last_failure || Clock::now() - last_failure_logged > std::chrono::minutes(1)) {
          spdlog::error("gateway: {}", why);
          last_failure = why;
          last_failure_logged = Clock::now();
        }
      }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t n;
      (void)!read(wake_fd_, &n, sizeof n);
    }
    std::deque<Outgoing> out;
    {
      std::lock_guard lock(mu_);
      out.swap(outbox_);
    }
    for (auto& o : out) {
      bool sent = false;
      try {
        sent = sock.send(zmq::buffer(o.payload), zmq::send_flags::dontwait).has_value();
      } catch (const zmq::error_t& e) {
        spdlog::warn("gateway: send to {} failed: {}", options_.endpoint, e.what());
      }
      if (!sent)
        for (const auto& id : o.ids)
          route(api::ErrorReply{
              id, api::ErrorCode::kUnavailable, "",
              fmt::format("the coordinator at {} is not connected", options_.endpoint),
              std::nullopt});
    }
    for (int i = 0; i < 1024; ++i) {
      std::vector<zmq::message_t> frames;
      std::optional<size_t> got;
      try {
        got = zmq::recv_multipart(sock, std::back_inserter(frames), zmq::recv_flags::dontwait);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        break;
      }
      if (!got) break;
      if (frames.empty()) continue;
      try {
        route(api::decode_server_message(frames.back().to_string_view()));
      } catch (const std::exception& e) {
        spdlog::warn("gateway: unreadable message from the coordinator: {}", e.what());
      }
    }
  }
}

}  // namespace shardserve::gateway
