#include "api/front_end.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>
#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace shardserve::api {
namespace {

// How long closing the socket may wait for connected clients to take the answers already queued
// (~FrontEnd). Bounded: a client that stopped reading cannot hold a shutdown for longer.
constexpr std::chrono::milliseconds kCloseLinger{2000};

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

Clock::duration from_seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

// One request accepted and not yet finished.
struct FrontEnd::Live {
  std::string routing_id;  // the owner
  std::string client_hex;
  std::string id;  // the client's id
  bool stream = true;
  bool logprobs = false;
  bool cancelling = false;
  bool orphaned = false;  // the owner vanished: nothing more is sent
  // A time limit ended it: its final / error went out already; the engine's outputs that still
  // come (until its cancellation lands) are dropped.
  bool answered = false;
  Clock::time_point received;
  double timeout_s = 0.0;                   // 0: no deadline
  std::optional<Clock::time_point> deadline;
  Clock::time_point last_token;  // arrival, then each new token: the idle timeout runs from it
  int32_t cached_tokens = 0;
  std::optional<Clock::time_point> started;
  std::optional<Clock::time_point> first_token;
  int32_t prompt_tokens = 0;
  int32_t output_tokens = 0;
  std::vector<std::string> watchers;  // other clients that cancelled it: they get the final too
  // stream = false: the whole output, sent in the final message.
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprob_list;
};

struct FrontEnd::ClientState {
  std::unordered_set<std::string> requests;  // engine ids
  bool delimiter = false;  // it sends an empty frame before the payload (REQ-style envelope)
  bool gone = false;
  Clock::time_point last_sent;
};

struct FrontEnd::Io {
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  std::unordered_map<std::string, Live> requests;        // engine id -> request
  std::unordered_map<std::string, ClientState> clients;  // routing id -> state
  Clock::time_point next_probe;
  // The earliest time limit (deadline or idle timeout) of a live request; max: none. A lower
  // bound: output only moves a request's idle limit later, so it may fire early (and finds
  // nothing), never late.
  Clock::time_point next_limit = Clock::time_point::max();
  std::atomic<int64_t> submitted{0}, finished{0}, cancelled{0}, rejected{0}, unavailable{0},
      overloaded{0}, invalid{0}, disconnect_cancels{0}, deadline_timeouts{0}, idle_timeouts{0};
  std::atomic<int32_t> clients_with_requests{0};
  std::unique_ptr<ZapHandler> zap;  // after the socket: destroyed before it
};

FrontEnd::FrontEnd(FrontEndOptions options, ModelInfo model, const model::Tokenizer* tokenizer)
    : options_(std::move(options)),
      model_(std::move(model)),
      tokenizer_(tokenizer),
      started_at_(Clock::now()),
      io_(std::make_unique<Io>()) {
  model_.text = tokenizer_ != nullptr;
  model_.chat_format.clear();
  model_.chat_format_error.clear();
  if (tokenizer_) {
    try {
      chat_format_ = resolve_chat_format(*tokenizer_, options_.chat_format);
      model_.chat_format = std::string(to_string(*chat_format_));
    } catch (const Error& e) {
      model_.chat_format_error = e.what();
      spdlog::warn("front end: chats are refused: {}", e.what());
    }
  } else {
    model_.chat_format_error = "no tokenizer loaded";
  }
  require(options_.max_waiting >= 0, "front end: max_waiting must be >= 0, got {}",
          options_.max_waiting);
  for (const auto& [name, t] :
       {std::pair{"max_request_seconds", options_.limits.max_request_seconds},
        std::pair{"stream_idle_timeout_s", options_.stream_idle_timeout_s}})
    require(std::isfinite(t) && t >= 0 && t <= kMaxTimeoutSeconds,
            "front end: {} = {} must be in [0, {}] seconds (0: none)", name, t, kMaxTimeoutSeconds);
  model_.max_request_seconds = options_.limits.max_request_seconds;
  model_.stream_idle_timeout_s = options_.stream_idle_timeout_s;
  zmq::socket_t& s = io_->socket;
  s.set(zmq::sockopt::router_mandatory, 1);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, options_.send_hwm);
  s.set(zmq::sockopt::rcvhwm, options_.send_hwm);
  s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.max_frame_bytes) * 4 + 4096);
  s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(options_.zmq_heartbeat_ivl.count()));
  s.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(options_.zmq_heartbeat_timeout.count()));
  s.set(zmq::sockopt::heartbeat_ttl, static_cast<int>(options_.zmq_heartbeat_timeout.count()));
  io_->zap = secure_server_socket(io_->context, s, options_.curve, options_.endpoint);
  try {
    s.bind(options_.endpoint);
  } catch (const zmq::error_t& e) {
    fail("front end: cannot bind the ZeroMQ endpoint {}: {}", options_.endpoint, e.what());
  }
  endpoint_ = s.get(zmq::sockopt::last_endpoint);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  require(wake_fd_ >= 0, "front end: eventfd failed");
  io_->next_probe = Clock::now() + options_.probe_interval;
  thread_ = std::thread([this] { run(); });
  spdlog::info("front end: listening on {} (model {}, max {} live requests)", endpoint_,
               model_.name, model_.max_num_seqs + options_.max_waiting);
}

FrontEnd::~FrontEnd() {
  stop_.store(true);
  const uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!write(wake_fd_, &one, sizeof one);
  commands_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The socket lingers 0 while serving (a vanished client must not hold anything), but the last
  // answers the thread queued — the errors of a replica's failure, sent just before the
  // coordinator exits, or a drain's finals — would then be dropped unsent. Closing, give
  // connected clients kCloseLinger to take them (the thread is gone: the socket is ours now).
  try {
    io_->socket.set(zmq::sockopt::linger, static_cast<int>(kCloseLinger.count()));
  } catch (const zmq::error_t& e) {
    spdlog::warn("front end: cannot set the closing linger: {}", e.what());
  }
  io_.reset();
  if (wake_fd_ >= 0) close(wake_fd_);
}

StatusReply FrontEnd::counters() const {
  StatusReply s;
  s.submitted = io_->submitted.load();
  s.finished = io_->finished.load();
  s.cancelled = io_->cancelled.load();
  s.rejected = io_->rejected.load();
  s.unavailable = io_->unavailable.load();
  s.overloaded = io_->overloaded.load();
  s.invalid = io_->invalid.load();
  s.disconnect_cancels = io_->disconnect_cancels.load();
  s.deadline_timeouts = io_->deadline_timeouts.load();
  s.idle_timeouts = io_->idle_timeouts.load();
  s.live_requests = live_.load();
  s.clients = io_->clients_with_requests.load();
  s.max_live_requests = model_.max_num_seqs + options_.max_waiting;
  s.admitting = admitting_.load();
  return s;
}

// ----- engine thread ---------------------------------------------------------------------------

void FrontEnd::pump(Engine& engine, std::chrono::milliseconds wait) {
  std::deque<Command> commands;
  auto before = engine.status();
  {
    std::unique_lock lock(mu_);
    replicas_ = std::move(before);
    if (commands_.empty() && !engine.has_unfinished())
      commands_cv_.wait_for(lock, wait, [&] { return !commands_.empty() || stop_.load(); });
    commands.swap(commands_);
  }
  for (auto& c : commands) {
    if (c.cancel)
      engine.cancel(c.engine_id, c.reason);  // false: it finished meanwhile; its final is on its way
    else
      engine.submit(std::move(c.spec));
  }
  EngineEvents events;
  events.poll = engine.poll(engine.has_unfinished() ? wait : std::chrono::milliseconds(0));
  events.at = Clock::now();
  auto status = engine.status();
  const bool any = !events.poll.outputs.empty() || !events.poll.started.empty();
  {
    std::lock_guard lock(mu_);
    if (any) events_.push_back(std::move(events));
    replicas_ = std::move(status);
  }
  if (any) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
}

void serve(Engine& engine, FrontEnd& front, const std::atomic<bool>& stop,
           std::chrono::milliseconds wait) {
  while (!stop.load()) front.pump(engine, wait);
}

// ----- the front end's thread ------------------------------------------------------------------

void FrontEnd::run() {
  Io& io = *io_;
  zmq::socket_t& sock = io.socket;
  const int32_t max_live = model_.max_num_seqs + options_.max_waiting;
  ValidationContext vctx{&model_, tokenizer_, chat_format_, options_.limits};

  auto update_live = [&] {
    live_.store(static_cast<int32_t>(io.requests.size()));
    int32_t n = 0;
    for (const auto& [rid, c] : io.clients) n += c.requests.empty() ? 0 : 1;
    io.clients_with_requests.store(n);
  };

  std::function<void(const std::string&)> client_gone;

  // Sends one message; false (and the client is treated as gone) when it cannot be delivered.
  auto send_to = [&](const std::string& rid, const ServerMessage& message) -> bool {
    auto cit = io.clients.find(rid);
    if (cit != io.clients.end() && cit->second.gone) return false;
    const bool delimiter = cit != io.clients.end() && cit->second.delimiter;
    const std::string payload = encode(message);
    bool ok = false;
    try {
      ok = sock.send(zmq::buffer(rid), zmq::send_flags::sndmore | zmq::send_flags::dontwait)
               .has_value();
      if (ok && delimiter)
        sock.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      if (ok) sock.send(zmq::buffer(payload), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EHOSTUNREACH)
        spdlog::warn("front end: send to client {} failed: {}", hex(rid), e.what());
      ok = false;
    }
    if (!ok) {
      if (cit != io.clients.end()) client_gone(rid);
      return false;
    }
    if (cit != io.clients.end()) cit->second.last_sent = Clock::now();
    return true;
  };

  auto push_command = [&](Command c) {
    {
      std::lock_guard lock(mu_);
      commands_.push_back(std::move(c));
    }
    commands_cv_.notify_one();
  };

  auto cancel_live = [&](const std::string& engine_id, Live& r,
                         CancelReason reason = CancelReason::kClient) {
    if (r.cancelling) return;
    r.cancelling = true;
    push_command(Command{true, engine_id, {}, reason});
  };

  // When the request's nearest time limit falls (max: none).
  const auto idle_limit = from_seconds(options_.stream_idle_timeout_s);
  auto limit_of = [&](const Live& r) {
    Clock::time_point t = Clock::time_point::max();
    if (r.deadline) t = *r.deadline;
    if (options_.stream_idle_timeout_s > 0) t = std::min(t, r.last_token + idle_limit);
    return t;
  };

  client_gone = [&](const std::string& rid) {
    auto cit = io.clients.find(rid);
    if (cit == io.clients.end() || cit->second.gone) return;
    cit->second.gone = true;
    int n = 0;
    for (const auto& engine_id : cit->second.requests) {
      auto it = io.requests.find(engine_id);
      if (it == io.requests.end()) continue;
      it->second.orphaned = true;
      if (!it->second.cancelling) {
        cancel_live(engine_id, it->second);
        ++n;
      }
    }
    io.disconnect_cancels += n;
    spdlog::info("front end: client {} is gone; cancelling its {} live request(s)", hex(rid), n);
  };

  auto send_error = [&](const std::string& rid, std::optional<std::string> id, ErrorCode code,
                        std::string field, std::string message,
                        std::optional<double> retry = std::nullopt) {
    ErrorReply e{std::move(id), code, std::move(field), std::move(message), retry};
    if (code == ErrorCode::kInvalidRequest || code == ErrorCode::kMalformed ||
        code == ErrorCode::kUnsupportedVersion)
      ++io.invalid;
    spdlog::debug("front end: error to client {}: {} {}", hex(rid), to_string(e.code), e.message);
    send_to(rid, e);
  };

  auto token_logprobs = [&](const messages::SampledToken& t) {
    TokenLogprob out;
    out.token_id = t.token_id;
    out.logprob = t.logprob;
    auto text_of = [&](int32_t id) -> std::string {
      if (!tokenizer_) return {};
      const int32_t ids[1] = {id};
      return tokenizer_->decode(ids, /*skip_special_tokens=*/false);
    };
    out.token = text_of(t.token_id);
    if (tokenizer_)
      if (auto tt = tokenizer_->token_text(t.token_id))
        out.bytes.assign(tt->text.begin(), tt->text.end());
    for (std::size_t i = 0; i < t.top_ids.size(); ++i)
      out.top.push_back({t.top_ids[i], i < t.top_logprobs.size() ? t.top_logprobs[i] : 0.0f,
                         text_of(t.top_ids[i])});
    return out;
  };

  auto handle_submit = [&](const std::string& rid, const std::string& client_hex, SubmitRequest s) {
    if (!admitting_.load())
      return send_error(rid, s.id, ErrorCode::kShuttingDown, "",
                        "the service is shutting down: no new requests");
    const std::string engine_id = client_hex + ":" + s.id;
    if (io.requests.count(engine_id))
      return send_error(rid, s.id, ErrorCode::kDuplicateRequest, "id",
                        fmt::format("request id '{}' is already live for this client", s.id));
    if (static_cast<int32_t>(io.requests.size()) >= max_live) {
      ++io.overloaded;
      return send_error(
          rid, s.id, ErrorCode::kOverloaded, "",
          fmt::format("overloaded: {} requests are live (at most {}: {} running + {} "
                      "waiting); retry later",
                      io.requests.size(), max_live, model_.max_num_seqs, options_.max_waiting),
          options_.retry_after_s);
    }
    ValidatedRequest v;
    try {
      v = validate_submit(s, vctx);
    } catch (const ProtocolError& e) {
      return send_error(rid, s.id, e.code(), e.field(), e.what());
    } catch (const Error& e) {
      return send_error(rid, s.id, ErrorCode::kInvalidRequest, "", e.what());
    }
    v.spec.request_id = engine_id;
    const auto now = Clock::now();
    v.spec.arrival_time = seconds(now - started_at_);
    Live r;
    r.routing_id = rid;
    r.client_hex = client_hex;
    r.id = s.id;
    r.stream = s.stream;
    r.logprobs = s.logprobs > 0;
    r.received = now;
    r.last_token = now;
    r.timeout_s = v.timeout_s;
    if (v.timeout_s > 0) r.deadline = now + from_seconds(v.timeout_s);
    r.prompt_tokens = v.prompt_tokens;
    io.next_limit = std::min(io.next_limit, limit_of(r));
    io.requests.emplace(engine_id, std::move(r));
    io.clients[rid].requests.insert(engine_id);
    ++io.submitted;
    update_live();
    push_command(Command{false, engine_id, std::move(v.spec)});
    send_to(rid, Accepted{s.id, client_hex, v.prompt_tokens, v.max_tokens});
  };

  auto handle_cancel = [&](const std::string& rid, const std::string& client_hex,
                           const CancelRequest& c) {
    const std::string owner = c.client.value_or(client_hex);
    const std::string engine_id = owner + ":" + c.id;
    auto it = io.requests.find(engine_id);
    if (it == io.requests.end() || it->second.orphaned)
      return send_error(rid, c.id, ErrorCode::kUnknownRequest, "id",
                        c.client ? fmt::format("no live request '{}' of client {}", c.id, owner)
                                 : fmt::format("no live request '{}' for this client", c.id));
    if (rid != it->second.routing_id &&
        std::find(it->second.watchers.begin(), it->second.watchers.end(), rid) ==
            it->second.watchers.end())
      it->second.watchers.push_back(rid);
    cancel_live(engine_id, it->second);
  };

  auto status_reply = [&](bool with_requests) {
    StatusReply s = counters();
    {
      std::lock_guard lock(mu_);
      s.replicas = replicas_;
    }
    for (const auto& r : s.replicas) {
      s.waiting += r.waiting;
      s.running += r.running;
      s.kv_blocks_used += r.kv_blocks_used;
      s.kv_blocks_total += r.kv_blocks_total;
    }
    s.kv_usage = s.kv_blocks_total > 0 ? double(s.kv_blocks_used) / s.kv_blocks_total : 0.0;
    if (with_requests) {
      s.requests.emplace();
      const auto now = Clock::now();
      for (const auto& [engine_id, r] : io.requests)
        s.requests->push_back({r.client_hex, r.id,
                               r.cancelling                 ? "cancelling"
                               : r.started || r.first_token ? "running"
                                                            : "queued",
                               r.prompt_tokens, r.output_tokens, seconds(now - r.received)});
      std::sort(s.requests->begin(), s.requests->end(),
                [](const auto& a, const auto& b) { return a.age_s > b.age_s; });
    }
    return s;
  };

  auto handle_frames = [&](std::vector<zmq::message_t>& frames) {
    const std::string rid = frames[0].to_string();
    const std::string client_hex = hex(rid);
    auto& client = io.clients[rid];
    client.gone = false;  // it is talking: it is there (a reconnect with a fixed routing id)
    std::string_view payload;
    bool bad_envelope = false;
    if (frames.size() == 3 && frames[1].size() == 0) {
      client.delimiter = true;
      payload = frames[2].to_string_view();
    } else if (frames.size() == 2) {
      payload = frames[1].to_string_view();
    } else {
      send_error(
          rid, std::nullopt, ErrorCode::kMalformed, "",
          fmt::format("a message is one frame (after an optional empty delimiter), got {} frames",
                      frames.size() - 1));
      bad_envelope = true;
    }
    if (bad_envelope) {
      // answered above
    } else if (static_cast<int64_t>(payload.size()) > options_.max_frame_bytes) {
      send_error(rid, std::nullopt, ErrorCode::kMalformed, "",
                 fmt::format("the frame has {} bytes; at most {} (limit max_frame_bytes)",
                             payload.size(), options_.max_frame_bytes));
    } else {
      try {
        ClientMessage m = decode_client_message(payload);
        if (auto* s = std::get_if<SubmitRequest>(&m)) {
          handle_submit(rid, client_hex, std::move(*s));
        } else if (auto* c = std::get_if<CancelRequest>(&m)) {
          handle_cancel(rid, client_hex, *c);
        } else if (auto* st = std::get_if<StatusRequest>(&m)) {
          send_to(rid, status_reply(st->requests));
        } else if (std::holds_alternative<HealthRequest>(m)) {
          send_to(rid, HealthReply{admitting_.load() ? "ok" : "draining",
                                   seconds(Clock::now() - started_at_)});
        } else {
          send_to(rid, model_);
        }
      } catch (const ProtocolError& e) {
        send_error(rid, peek_request_id(payload), e.code(), e.field(), e.what());
      } catch (const std::exception& e) {
        spdlog::error("front end: handling a message from client {} failed: {}", client_hex,
                      e.what());
        send_error(rid, peek_request_id(payload), ErrorCode::kInternal, "", e.what());
      }
    }
    auto cit = io.clients.find(rid);
    if (cit != io.clients.end() && cit->second.requests.empty()) io.clients.erase(cit);
  };

  auto finish = [&](std::unordered_map<std::string, Live>::iterator it) {
    auto cit = io.clients.find(it->second.routing_id);
    if (cit != io.clients.end()) {
      cit->second.requests.erase(it->first);
      if (cit->second.requests.empty()) io.clients.erase(cit);
    }
    io.requests.erase(it);
    update_live();
  };

  // The final of `f` at `at` with the output it has (its text and ids when not streamed); the
  // usage from the engine's counts when given, else the front end's own.
  auto make_final = [&](Live& f, Clock::time_point at, int32_t engine_prompt_tokens,
                        int32_t engine_output_tokens) {
    Final m;
    m.id = f.id;
    if (!f.stream) {
      m.text = std::move(f.text);
      m.token_ids = std::move(f.token_ids);
      if (f.logprobs) m.logprobs = std::move(f.logprob_list);
    }
    m.usage.prompt_tokens = engine_prompt_tokens > 0 ? engine_prompt_tokens : f.prompt_tokens;
    m.usage.completion_tokens = std::max(engine_output_tokens, f.output_tokens);
    m.usage.cached_tokens = f.cached_tokens;
    m.timings.total_s = seconds(at - f.received);
    if (f.started) m.timings.queue_s = seconds(*f.started - f.received);
    if (f.first_token) {
      m.timings.ttft_s = seconds(*f.first_token - f.received);
      if (m.usage.completion_tokens > 1)
        m.timings.tpot_s = seconds(at - *f.first_token) / (m.usage.completion_tokens - 1);
    }
    return m;
  };

  auto answer = [&](Live& f, const ServerMessage& m) {
    if (!f.orphaned) send_to(f.routing_id, m);
    for (const auto& w : f.watchers) send_to(w, m);
  };

  // A time limit fell: answer now (the engine may be stuck) and cancel it in the engine.
  auto expire = [&](const std::string& engine_id, Live& r, Clock::time_point now) {
    const bool deadline = r.deadline && *r.deadline <= now;
    r.answered = true;
    if (deadline) {
      ++io.deadline_timeouts;
      Final m = make_final(r, now, 0, 0);
      m.finish_reason = "timeout";
      m.finish_detail = "deadline";
      spdlog::info("front end: request {} of client {}: its deadline of {} s passed after {} "
                   "token(s); cancelling it",
                   r.id, r.client_hex, r.timeout_s, r.output_tokens);
      answer(r, m);
    } else {
      ++io.idle_timeouts;
      ErrorReply e{r.id, ErrorCode::kTimeout, "",
                   fmt::format("no output for {} s (limit stream_idle_timeout_s) after {} "
                               "token(s); the request was cancelled",
                               options_.stream_idle_timeout_s, r.output_tokens),
                   std::nullopt};
      spdlog::warn("front end: request {} of client {}: {}", r.id, r.client_hex, e.message);
      answer(r, e);
    }
    cancel_live(engine_id, r, deadline ? CancelReason::kDeadline : CancelReason::kStreamIdle);
  };

  auto check_limits = [&](Clock::time_point now) {
    io.next_limit = Clock::time_point::max();
    for (auto& [engine_id, r] : io.requests) {
      if (r.answered || r.cancelling) continue;  // cancelled: its final is on its way
      const auto t = limit_of(r);
      if (t <= now)
        expire(engine_id, r, now);
      else
        io.next_limit = std::min(io.next_limit, t);
    }
  };

  auto handle_output = [&](coordinator::RequestOutput& out, Clock::time_point at) {
    auto it = io.requests.find(out.request_id);
    if (it == io.requests.end()) {
      spdlog::warn("front end: output for unknown request {}", out.request_id);
      return;
    }
    Live& r = it->second;
    if (r.answered) {  // a time limit answered it: only its end matters
      if (out.finished) finish(it);
      return;
    }
    if (out.num_cached_tokens > 0) r.cached_tokens = out.num_cached_tokens;
    if (!out.new_tokens.empty()) {
      if (!r.first_token) r.first_token = at;
      r.last_token = at;
      r.output_tokens += static_cast<int32_t>(out.new_tokens.size());
    }
    // An engine refusal, or the service failing under it (a replica failed and the request could
    // not be moved): an error, not a final. Unavailable is the service's fault, so the gateway
    // answers 503 (retry later) for it where a refusal is 400.
    const bool rejected = out.finished && out.finish_reason == coordinator::FinishReason::kRejected;
    const bool unavailable =
        out.finished && out.finish_reason == coordinator::FinishReason::kUnavailable;
    if (!rejected && !unavailable && (!out.new_tokens.empty() || !out.new_text.empty())) {
      if (r.stream) {
        Delta d;
        d.id = r.id;
        d.text = std::move(out.new_text);
        for (const auto& t : out.new_tokens) {
          d.token_ids.push_back(t.token_id);
          if (r.logprobs) d.logprobs.push_back(token_logprobs(t));
        }
        if (!r.orphaned) send_to(r.routing_id, d);
      } else {
        r.text += out.new_text;
        for (const auto& t : out.new_tokens) {
          r.token_ids.push_back(t.token_id);
          if (r.logprobs) r.logprob_list.push_back(token_logprobs(t));
        }
      }
    }
    if (!out.finished) return;
    Live& f = r;  // (client_gone never erases requests or clients: `it` is still valid)
    if (rejected) {
      ++io.rejected;
      ErrorReply e{f.id, ErrorCode::kRejected, "", fmt::format("rejected: {}", out.finish_detail),
                   std::nullopt};
      answer(f, e);
      finish(it);
      return;
    }
    if (unavailable) {
      ++io.unavailable;
      ErrorReply e{f.id, ErrorCode::kUnavailable, "",
                   fmt::format("unavailable: {}; the request was ended after {} token(s)",
                               out.finish_detail, f.output_tokens),
                   std::nullopt};
      spdlog::warn("front end: request {} of client {}: {}", f.id, f.client_hex, e.message);
      answer(f, e);
      finish(it);
      return;
    }
    const bool cancelled = out.finish_reason == coordinator::FinishReason::kCancelled;
    cancelled ? ++io.cancelled : ++io.finished;
    f.cached_tokens = out.num_cached_tokens;
    Final m = make_final(f, at, out.num_prompt_tokens, out.num_output_tokens);
    m.finish_reason = out.finish_reason_string();
    m.finish_detail = out.finish_detail;
    m.stop_token_id = out.stop_token_id;
    m.stop_string = out.stop_string;
    answer(f, m);
    finish(it);
  };

  auto probe = [&] {
    const auto now = Clock::now();
    std::vector<std::string> due;
    for (const auto& [rid, c] : io.clients)
      if (!c.gone && !c.requests.empty() && now - c.last_sent >= options_.probe_interval)
        due.push_back(rid);
    for (const auto& rid : due) send_to(rid, Heartbeat{});
  };

  while (!stop_.load()) {
    zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    // Wakes for the next probe or the nearest time limit, whichever is first (rounded up, so it
    // does not spin on a limit less than a millisecond away).
    const auto now = Clock::now();
    auto until = std::chrono::ceil<std::chrono::milliseconds>(io.next_probe - now);
    if (io.next_limit != Clock::time_point::max())
      until = std::min(until, std::chrono::ceil<std::chrono::milliseconds>(io.next_limit - now));
    try {
      zmq::poll(items, 2, std::max(std::chrono::milliseconds(1), until));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::critical("front end: zmq_poll failed: {}", e.what());
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t n;
      (void)!read(wake_fd_, &n, sizeof n);
    }
    try {
      // Outputs first: they free room that waiting submits may take.
      std::deque<EngineEvents> events;
      {
        std::lock_guard lock(mu_);
        events.swap(events_);
      }
      for (auto& ev : events) {
        for (const auto& [engine_id, at] : ev.poll.started) {
          auto it = io.requests.find(engine_id);
          if (it != io.requests.end() && !it->second.started) it->second.started = at;
        }
        for (auto& out : ev.poll.outputs) handle_output(out, ev.at);
      }
      if (items[0].revents & ZMQ_POLLIN) {
        for (int i = 0; i < 512; ++i) {
          std::vector<zmq::message_t> frames;
          std::optional<size_t> got;
          try {
            got = zmq::recv_multipart(sock, std::back_inserter(frames), zmq::recv_flags::dontwait);
          } catch (const zmq::error_t& e) {
            if (e.num() == EINTR) continue;
            spdlog::error("front end: receive failed: {}", e.what());
            break;
          }
          if (!got) break;
          if (frames.size() < 2) continue;  // a routing id alone cannot be answered usefully
          handle_frames(frames);
        }
      }
      if (Clock::now() >= io.next_limit) check_limits(Clock::now());
      if (Clock::now() >= io.next_probe) {
        probe();
        io.next_probe = Clock::now() + options_.probe_interval;
      }
    } catch (const std::exception& e) {
      // A bug or an allocation failure: log it; the socket and the other requests carry on.
      spdlog::error("front end: {}", e.what());
    }
  }
}

}  // namespace shardserve::api
