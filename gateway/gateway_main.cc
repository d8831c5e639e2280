// gateway: the OpenAI-compatible HTTP front of shardserve. A separate process: HTTP to clients
// (cpp-httplib, a bounded thread pool, 127.0.0.1 by default) and the ZeroMQ protocol to the
// coordinator's front end (one DEALER socket, gateway/backend.h).
//   gateway --coordinator tcp://127.0.0.1:5555 --host 127.0.0.1 --port 8000
// Endpoints: GET /health (the gateway is up), GET /ready (the coordinator answers and admits),
// GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions
// (stream: server-sent events "data: {...}\n\n" ... "data: [DONE]\n\n"). Errors have OpenAI's
// shape {"error": {"message", "type", "param", "code"}}; overload is 429 with Retry-After, an
// unavailable service (a replica failed under the request, the coordinator gone) 503 with it.
// See docs/protocol.md ("HTTP gateway").
#include <httplib.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <list>
#include <random>
#include <thread>

#include "api/validate.h"
#include "common/error.h"
#include "gateway/api_key.h"
#include "gateway/admission.h"
#include "gateway/backend.h"
#include "gateway/openai.h"

namespace shardserve::gateway {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// httplib's thread pool with a bounded queue: when every thread is busy and `max_queued`
// connections wait, the accept loop blocks, so further connections wait in the kernel's
// backlog instead of piling up in memory.
class BoundedThreadPool final : public httplib::TaskQueue {
 public:
  BoundedThreadPool(std::size_t threads, std::size_t max_queued) : max_queued_(max_queued) {
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(mu_);
    room_.wait(lock, [&] { return jobs_.size() < max_queued_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    lock.unlock();
    cv_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    room_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (shutdown_ && jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      room_.notify_one();
      fn();
    }
  }
  std::size_t max_queued_;
  std::vector<std::thread> threads_;
  std::list<std::function<void()>> jobs_;
  std::mutex mu_;
  std::condition_variable cv_, room_;
  bool shutdown_ = false;
};

struct GatewayOptions {
  std::string coordinator = "tcp://127.0.0.1:5555";
  std::string host = "127.0.0.1";
  int port = 8000;
  int threads = 16;
  int max_queued = 64;
  int max_active = 0;  // generations in flight at most (0: threads - 2, at least 1); past it 429
  double retry_after_s = 1;
  double accept_timeout_s = 10;    // the coordinator accepts or refuses a submit within it
  double silence_timeout_s = 15;   // nothing heard from the coordinator for it: it is gone
  double request_timeout_s = 600;  // a request's whole life: passed to the coordinator as timeout_s
  double connect_timeout_s = 30;   // at start: wait this long for the model's description
  size_t max_body_bytes = 8 << 20;
  size_t max_stream_messages = 4096;  // a stream's unread messages at most (gateway/backend.h)
  api::CurveClientOptions curve;  // the coordinator's CURVE: key files (api/curve.h)
};

std::chrono::milliseconds ms(double s) {
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
}

void send_error(httplib::Response& res, const OpenAIError& e) {
  res.status = e.status;
  if (e.retry_after_s)
    res.set_header("Retry-After",
                   std::to_string(std::max<int64_t>(1, std::llround(*e.retry_after_s))));
  res.set_content(e.body().dump(), "application/json");
}

OpenAIError server_error(int status, std::string message, std::string code) {
  OpenAIError e;
  e.status = status;
  e.message = std::move(message);
  e.type = status >= 500 ? "server_error" : "invalid_request_error";
  e.code = std::move(code);
  return e;
}

class Gateway {
 public:
  explicit Gateway(GatewayOptions o)
      : options_(std::move(o)),
        backend_([this] {
          BackendOptions b;
          b.endpoint = options_.coordinator;
          b.max_stream_messages = options_.max_stream_messages;
          b.curve = options_.curve;
          return b;
        }()),
        active_(options_.max_active > 0 ? options_.max_active
                                        : std::max(1, options_.threads - 2)) {
    rng_.seed(std::random_device{}());
  }

  void connect() {
    const auto deadline = Clock::now() + ms(options_.connect_timeout_s);
    while (Clock::now() < deadline && !model()) std::this_thread::sleep_for(100ms);
    if (auto m = model())
      spdlog::info("coordinator {}: model {} (context {} tokens, chat format {})",
                   options_.coordinator, m->name, m->max_model_len,
                   m->chat_format.empty() ? "none" : m->chat_format);
    else
      spdlog::warn("coordinator {} did not answer within {:.0f} s; /ready says 503 until it does",
                   options_.coordinator, options_.connect_timeout_s);
  }

  std::optional<api::ModelInfo> model() {
    {
      std::lock_guard lock(mu_);
      if (model_) return model_;
    }
    auto m = backend_.model_info(2s);
    std::lock_guard lock(mu_);
    if (m) model_ = m;
    return model_;
  }

  void install(httplib::Server& svr) {
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    svr.Get("/ready", [this](const httplib::Request&, httplib::Response& res) { ready(res); });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      auto m = model();
      if (!m) return send_error(res, unavailable());
      res.set_content(
          json{{"object", "list"}, {"data", json::array({model_object(*m, started_)})}}.dump(),
          "application/json");
    });
    svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      auto m = model();
      if (!m) return send_error(res, unavailable());
      if (req.matches[1] != m->name) {
        OpenAIError e = server_error(
            404, fmt::format("The model `{}` does not exist.", std::string(req.matches[1])),
            "model_not_found");
        e.param = "model";
        return send_error(res, e);
      }
      res.set_content(model_object(*m, started_).dump(), "application/json");
    });
    svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(Endpoint::kCompletions, req, res);
    });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(Endpoint::kChatCompletions, req, res);
    });
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      OpenAIError e;
      e.status = res.status;
      e.type = res.status >= 500 ? "server_error" : "invalid_request_error";
      e.message = res.status == 404 ? fmt::format("Not found: {} {}", req.method, req.path)
                  : res.status == 413
                      ? fmt::format("The request body is larger than {} bytes (limit "
                                    "--max-body-bytes)",
                                    options_.max_body_bytes)
                      : fmt::format("HTTP {} for {} {}", res.status, req.method, req.path);
      res.set_content(e.body().dump(), "application/json");
    });
    svr.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "internal error";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          spdlog::error("gateway: handler failed: {}", what);
          send_error(res, server_error(500, what, "internal"));
        });
  }

 private:
  struct Exchange {
    ParsedRequest request;
    ResponseMeta meta;
    std::vector<ChoiceState> choices;
    std::unordered_map<std::string, int> index;
    std::shared_ptr<Backend::Stream> stream;
    std::deque<api::ServerMessage> early;
    int finished = 0;
    bool complete = false;
    bool roles_sent = false;
    Clock::time_point deadline;
    std::shared_ptr<void> slot;  // this generation's place under --max-active
  };

  OpenAIError unavailable() const {
    return unavailable_error(
        fmt::format("the coordinator at {} is not answering", options_.coordinator));
  }

  void ready(httplib::Response& res) {
    auto h = backend_.health(2s);
    auto m = model();
    if (!h || !m) {
      res.status = 503;
      res.set_content(json{{"status", "unavailable"}, {"reason", unavailable().message}}.dump(),
                      "application/json");
      return;
    }
    res.status = h->status == "ok" ? 200 : 503;
    res.set_content(json{{"status", h->status == "ok" ? "ready" : h->status},
                         {"model", m->name},
                         {"coordinator", options_.coordinator}}
                        .dump(),
                    "application/json");
  }

  // Applies one message to the exchange; an error message becomes the OpenAIError returned.
  std::optional<OpenAIError> apply(Exchange& x, const api::ServerMessage& m,
                                   const api::Delta** delta, int* choice,
                                   const api::Final** final) {
    *delta = nullptr;
    *final = nullptr;
    *choice = -1;
    if (auto* d = std::get_if<api::Delta>(&m)) {
      auto it = x.index.find(d->id);
      if (it == x.index.end()) return std::nullopt;
      *choice = it->second;
      x.choices[*choice].text += d->text;
      x.choices[*choice].logprobs.insert(x.choices[*choice].logprobs.end(), d->logprobs.begin(),
                                         d->logprobs.end());
      *delta = d;
    } else if (auto* f = std::get_if<api::Final>(&m)) {
      auto it = x.index.find(f->id);
      if (it == x.index.end() || x.choices[it->second].final) return std::nullopt;
      *choice = it->second;
      x.choices[*choice].final = *f;
      ++x.finished;
      *final = f;
      if (auto timeout = api_timeout(*f)) return timeout;
    } else if (auto* e = std::get_if<api::ErrorReply>(&m)) {
      return from_protocol_error(*e);
    }
    return std::nullopt;
  }

  // The coordinator ended a choice at the deadline the gateway gave it: 504 (streamed: the error
  // event after the chunks already sent).
  std::optional<OpenAIError> api_timeout(const api::Final& f) const {
    return from_timeout_final(f, options_.request_timeout_s);
  }

  // The deadline passed down as timeout_s: --request-timeout, within the coordinator's own
  // limit (which would refuse more).
  double deadline_for(const api::ModelInfo& m) const {
    double t = options_.request_timeout_s;
    if (m.max_request_seconds > 0) t = std::min(t, m.max_request_seconds);
    return t;
  }

  // The next message of the exchange (early ones first); an OpenAIError when the coordinator
  // went silent or the request ran out of time.
  std::variant<std::monostate, api::ServerMessage, OpenAIError> next(
      Exchange& x, std::chrono::milliseconds wait) {
    if (!x.early.empty()) {
      api::ServerMessage m = std::move(x.early.front());
      x.early.pop_front();
      return m;
    }
    if (auto m = x.stream->next(wait)) return std::move(*m);
    const auto now = Clock::now();
    if (now - backend_.last_heard() > ms(options_.silence_timeout_s))
      return unavailable_error(
          fmt::format("the coordinator at {} stopped answering", options_.coordinator));
    if (now > x.deadline)
      return server_error(
          504,
          fmt::format("the request did not finish within {:.0f} s", options_.request_timeout_s),
          "timeout");
    return std::monostate{};
  }

  void generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    auto m = model();
    if (!m) return send_error(res, unavailable());
    auto x = std::make_shared<Exchange>();
    x->slot = active_.try_acquire();
    if (!x->slot) {
      OpenAIError e = server_error(
          429,
          fmt::format("overloaded: the gateway is serving its maximum of {} requests (limit "
                      "--max-active); retry later",
                      active_.limit()),
          "overloaded");
      e.type = "rate_limit_error";
      e.retry_after_s = options_.retry_after_s;
      return send_error(res, e);
    }
    try {
      const json body = parse_json_body(req.body);
      uint64_t seed;
      {
        std::lock_guard lock(mu_);
        seed = rng_();
      }
      x->request = parse_request(endpoint, body, *m, seed);
    } catch (const OpenAIException& e) {
      return send_error(res, e.error());
    }
    const std::string base = backend_.next_id();
    for (std::size_t i = 0; i < x->request.submits.size(); ++i) {
      x->request.submits[i].id = base + "-" + std::to_string(i);
      x->index[x->request.submits[i].id] = static_cast<int>(i);
    }
    x->choices.resize(x->request.submits.size());
    x->meta.id = (endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + base;
    x->meta.created = static_cast<int64_t>(std::time(nullptr));
    x->meta.model = m->name;
    // The coordinator ends the request at its deadline (answering "timeout", which becomes 504
    // below); the gateway's own timer is the backstop for a coordinator that does not answer.
    for (auto& submit : x->request.submits) submit.timeout_s = deadline_for(*m);
    x->deadline = Clock::now() + ms(options_.request_timeout_s + kDeadlineGrace_s);
    x->stream = backend_.submit(x->request.submits);

    // Every choice accepted (or the first refusal answered) before the HTTP status is chosen.
    std::size_t accepted = 0;
    const auto accept_deadline = Clock::now() + ms(options_.accept_timeout_s);
    while (accepted < x->request.submits.size()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(accept_deadline - Clock::now());
      auto msg = left.count() > 0 ? x->stream->next(left) : std::nullopt;
      if (!msg) {
        backend_.cancel(*x->stream);
        return send_error(
            res, unavailable_error(fmt::format(
                     "the coordinator at {} did not accept the request within {:.0f} s",
                     options_.coordinator, options_.accept_timeout_s)));
      }
      if (std::holds_alternative<api::Accepted>(*msg)) {
        ++accepted;
      } else if (auto* e = std::get_if<api::ErrorReply>(&*msg)) {
        backend_.cancel(*x->stream);
        return send_error(res, from_protocol_error(*e));
      } else {
        x->early.push_back(std::move(*msg));
      }
    }
    if (!x->request.stream) return complete(*x, res);

    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, x](size_t, httplib::DataSink& sink) { return stream_some(*x, sink); },
        [this, x](bool) {
          if (x->complete)
            backend_.release(*x->stream);
          else
            backend_.cancel(*x->stream);  // the client went away (or the server stops)
        });
  }

  void complete(Exchange& x, httplib::Response& res) {
    while (x.finished < static_cast<int>(x.choices.size())) {
      auto n = next(x, 200ms);
      if (auto* err = std::get_if<OpenAIError>(&n)) {
        backend_.cancel(*x.stream);
        return send_error(res, *err);
      }
      auto* msg = std::get_if<api::ServerMessage>(&n);
      if (!msg) continue;
      const api::Delta* d;
      const api::Final* f;
      int c;
      if (auto err = apply(x, *msg, &d, &c, &f)) {
        backend_.cancel(*x.stream);
        return send_error(res, *err);
      }
    }
    x.complete = true;
    backend_.release(*x.stream);
    res.set_content(response_body(x.request, x.meta, x.choices)
                        .dump(-1, ' ', false, json::error_handler_t::replace),
                    "application/json");
  }

  bool write(httplib::DataSink& sink, const std::string& s) {
    return sink.write(s.data(), s.size());
  }

  // One round of the SSE stream: the chunks of the next message (or nothing after a short wait).
  bool stream_some(Exchange& x, httplib::DataSink& sink) {
    const bool chat = x.request.endpoint == Endpoint::kChatCompletions;
    if (chat && !x.roles_sent) {
      x.roles_sent = true;
      for (std::size_t i = 0; i < x.choices.size(); ++i)
        if (!write(sink, sse(role_chunk(x.request, x.meta, static_cast<int>(i))))) return false;
    }
    auto n = next(x, 100ms);
    if (auto* err = std::get_if<OpenAIError>(&n)) {
      write(sink, sse(err->body()));
      write(sink, kSseDone);
      sink.done();
      return true;  // x.complete stays false: the releaser cancels
    }
    auto* msg = std::get_if<api::ServerMessage>(&n);
    if (!msg) return sink.is_writable();  // idle: a client that left is noticed here
    const api::Delta* d;
    const api::Final* f;
    int c;
    if (auto err = apply(x, *msg, &d, &c, &f)) {
      write(sink, sse(err->body()));
      write(sink, kSseDone);
      sink.done();
      return true;
    }
    if (d && (!d->text.empty() || !d->logprobs.empty()))
      if (!write(sink, sse(delta_chunk(x.request, x.meta, c, d, x.choices[c], nullptr))))
        return false;
    if (f && !write(sink, sse(delta_chunk(x.request, x.meta, c, nullptr, x.choices[c], f))))
      return false;
    if (x.finished == static_cast<int>(x.choices.size())) {
      x.complete = true;
      if (x.request.include_usage && !write(sink, sse(usage_chunk(x.request, x.meta, x.choices))))
        return false;
      if (!write(sink, kSseDone)) return false;
      sink.done();
    }
    return true;
  }

  // How long past --request-timeout the gateway waits for the coordinator's "timeout" answer
  // (sent at the deadline by the front end's thread) before answering 504 itself.
  static constexpr double kDeadlineGrace_s = 2.0;

  GatewayOptions options_;
  Backend backend_;
  std::mutex mu_;
  std::optional<api::ModelInfo> model_;
  std::mt19937_64 rng_;
  ActiveLimit active_;
  int64_t started_ = static_cast<int64_t>(std::time(nullptr));
};

std::atomic<httplib::Server*> g_server{nullptr};
extern "C" void on_signal(int) {
  if (auto* s = g_server.load()) s->stop();
}

}  // namespace
}  // namespace shardserve::gateway

int main(int argc, char** argv) {
  using namespace shardserve::gateway;
  CLI::App app{
      "shardserve gateway: OpenAI-compatible HTTP in front of the coordinator's ZeroMQ protocol"};
  GatewayOptions o;
  std::string log_level = "info";
  app.add_option("--coordinator", o.coordinator, "the coordinator's ZeroMQ endpoint")
      ->capture_default_str();
  app.add_option("--host", o.host, "HTTP address to bind")->capture_default_str();
  app.add_option("--port", o.port, "HTTP port (0: any free port, printed)")->capture_default_str();
  app.add_option("--threads", o.threads, "HTTP worker threads (concurrent requests)")
      ->capture_default_str();
  app.add_option("--max-queued", o.max_queued,
                 "connections waiting for a thread before accept() pauses")
      ->capture_default_str();
  app.add_option("--accept-timeout", o.accept_timeout_s,
                 "seconds for the coordinator to accept a request")
      ->capture_default_str();
  app.add_option("--silence-timeout", o.silence_timeout_s,
                 "seconds of silence after which the coordinator is gone")
      ->capture_default_str();
  app.add_option("--request-timeout", o.request_timeout_s, "seconds a request may take")
      ->capture_default_str();
  app.add_option("--connect-timeout", o.connect_timeout_s,
                 "seconds to wait for the coordinator at start")
      ->capture_default_str();
  app.add_option("--max-active", o.max_active,
                 "generations in flight at most, past it 429 (0: --threads - 2)")
      ->capture_default_str();
  app.add_option("--max-body-bytes", o.max_body_bytes, "largest request body (larger: 413)")
      ->capture_default_str();
  app.add_option("--max-stream-messages", o.max_stream_messages,
                 "messages a streamed response holds unread at most; past it the request is "
                 "cancelled (a client that stopped reading)")
      ->capture_default_str();
  app.add_option("--log-level", log_level)->capture_default_str();
  // Security (gateway/api_key.h, api/curve.h, docs/deploy.md): file names only.
  std::string api_key_file;
  bool allow_no_api_key = false;
  app.add_option("--api-key-file", api_key_file,
                 "file of accepted API keys, one per line (mode 0600): requests need "
                 "`Authorization: Bearer <key>`");
  app.add_flag("--allow-no-api-key", allow_no_api_key,
               "serve a non-loopback --host without --api-key-file (a trusted network only)");
  app.add_option("--curve-server-key", o.curve.server_public_key_file,
                 "the coordinator's CURVE public key file");
  app.add_option("--curve-client-key", o.curve.client_secret_key_file,
                 "the gateway's CURVE secret key file (mode 0600)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("[%H:%M:%S.%e] [gateway] [%l] %v");
  try {
    shardserve::require(o.threads >= 1 && o.max_queued >= 1 && o.max_stream_messages >= 1,
                        "--threads, --max-queued and --max-stream-messages must be >= 1");
    shardserve::require(std::isfinite(o.request_timeout_s) && o.request_timeout_s > 0 &&
                            o.request_timeout_s <= shardserve::api::kMaxTimeoutSeconds,
                        "--request-timeout must be in (0, {}] seconds, got {}",
                        shardserve::api::kMaxTimeoutSeconds, o.request_timeout_s);
    Gateway gateway(o);
    httplib::Server svr;
    svr.new_task_queue = [&] { return new BoundedThreadPool(o.threads, o.max_queued); };
    svr.set_payload_max_length(o.max_body_bytes);
    svr.set_read_timeout(30s);
    svr.set_write_timeout(30s);
    svr.set_keep_alive_max_count(1000);
    // httplib writes a response's headers and body in two send()s. With Nagle's algorithm on, the
    // body waits for the client's ACK of the headers, which a kept-alive client delays ~40 ms:
    // every non-streamed answer (a 429 above all) took 40+ ms (bench/overload, docs/RELIABILITY.md).
    svr.set_tcp_nodelay(true);
    gateway.install(svr);
    if (!api_key_file.empty())
      require_api_key(svr, ApiKeys::load(api_key_file));
    else
      shardserve::require(
          allow_no_api_key || shardserve::api::is_local_endpoint(fmt::format("tcp://{}:0", o.host)),
          "--host {} is not loopback: give --api-key-file (or --allow-no-api-key on a trusted "
          "network)",
          o.host);
    int port = o.port;
    if (port == 0) {
      port = svr.bind_to_any_port(o.host);
      shardserve::require(port > 0, "cannot bind an HTTP port on {}", o.host);
    } else {
      shardserve::require(svr.bind_to_port(o.host, port), "cannot bind HTTP {}:{} (in use?)",
                          o.host, port);
    }
    g_server.store(&svr);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    gateway.connect();
    std::printf("listening on http://%s:%d\n", o.host.c_str(), port);
    std::fflush(stdout);
    svr.listen_after_bind();
    g_server.store(nullptr);
    spdlog::info("stopped");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gateway: %s\n", e.what());
    return 1;
  }
  return 0;
}
