// The coordinator process (world rank 0 of `mpirun -np 1 coordinator ... : -np R*N worker`):
// resolves and validates the configuration, runs the start-up handshake, serves requests over
// the replicas with one EngineCore, and shuts the workers down. See README.md here.
//
// Two front ends over the same engine, start-up, metrics and shutdown:
//   - ZeroMQ (the default): the job API of api/front_end.h on --listen (docs/protocol.md),
//     until SIGTERM/SIGINT;
//   - a batch (--requests FILE and/or --prompt / --prompt-ids): JSON-lines results to --output,
//     then exit (or, with --keep-running, wait for a signal).
// The executable links the API (shardserve_api_runtime); the runtime library does not.
//
// SIGTERM/SIGINT in either mode: admission stops, running requests get runtime.shutdown_grace_s
// to finish, then (or at a second signal) they are cancelled; the workers are told to exit.
//
// Exit status: 0 after a normal end or a drain; 2 for a configuration or usage error (the
// workers are told to exit); 1 when start-up failed (a metrics or ZeroMQ port that cannot be
// bound too); 1 when serving cannot go on after a replica's failure (runtime.on_replica_failure =
// "abort", or no replica left: every live request got the error first). A failed replica with
// others left is given up and its requests move (EngineCore); serving goes on.
#include <signal.h>
#include <unistd.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "api/front_end.h"
#include "api/runtime/core_engine.h"
#include "comm/control_channel.h"
#include "comm/mpi_collective.h"
#include "comm/mpi_util.h"
#include "comm/world_layout.h"
#include "common/error.h"
#include "config/service_config.h"
#include "coordinator/runtime/engine_core.h"
#include "coordinator/runtime/handshake.h"
#include "coordinator/runtime/scheduler_settings.h"
#include "coordinator/runtime/mpi_transport.h"
#include "coordinator/runtime/request_io.h"
#include "coordinator/scheduler_config.h"
#include "messages/codec.h"
#include "model/model_config.h"
#include "monitoring/coordinator_metrics.h"
#include "monitoring/endpoint.h"
#include "model/tokenizer/tokenizer.h"

namespace {

using namespace shardserve;
using Clock = std::chrono::steady_clock;

std::atomic<int> g_signal_count{0};
std::atomic<int> g_last_signal{0};

extern "C" void on_signal(int sig) {
  g_last_signal.store(sig);
  g_signal_count.fetch_add(1);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

void setup_logging() {
  auto logger = spdlog::stderr_logger_mt("coordinator");
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [coordinator] [%l] %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

std::chrono::milliseconds seconds(double s) {
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0));
}

struct ProgramOptions {
  // Batch mode (any of the three given); else the ZeroMQ front end serves.
  std::string requests_file;
  std::string output_file;
  std::vector<std::string> prompt_ids;
  std::vector<std::string> prompts;
  int32_t max_tokens = 16;
  float temperature = 0.0f;
  bool ignore_eos = false;
  bool keep_running = false;
  // ZeroMQ mode.
  std::string listen;
  std::string chat_template = "auto";
  int32_t max_waiting = api::FrontEndOptions{}.max_waiting;

  bool batch() const { return !requests_file.empty() || !prompt_ids.empty() || !prompts.empty(); }
};

class OutputSink {
 public:
  explicit OutputSink(const std::string& path) {
    if (!path.empty()) {
      file_.open(path, std::ios::trunc);
      require(static_cast<bool>(file_), "--output {}: cannot be written", path);
    }
  }
  void write(const nlohmann::json& j) {
    std::ostream& out = file_.is_open() ? static_cast<std::ostream&>(file_) : std::cout;
    out << j.dump() << "\n";
    out.flush();
  }

 private:
  std::ofstream file_;
};

// The model directory's tokenizer, or null (with a warning) when it has none or it cannot be
// loaded: the service then takes token ids only and returns no text.
std::unique_ptr<model::Tokenizer> load_tokenizer_if_any(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::exists(fs::path(dir) / "tokenizer.json") && !fs::exists(fs::path(dir) / "tokenizer.model")) {
    spdlog::warn("{} has no tokenizer.json or tokenizer.model: token-id prompts only, no output text",
                 dir);
    return nullptr;
  }
  try {
    auto t = model::load_tokenizer(dir);
    spdlog::info("tokenizer: {} tokens", t->vocab_size());
    return t;
  } catch (const Error& e) {
    spdlog::warn("tokenizer not loaded ({}): token-id prompts only, no output text", e.what());
    return nullptr;
  }
}

// SIGTERM/SIGINT while serving (the handler only counts them): the first stops admission and
// gives the running requests runtime.shutdown_grace_s; the second, or the end of the grace
// period, cancels them. Both front ends run update() once per round.
class Drain {
 public:
  Drain(runtime::EngineCore& engine, double grace_s) : engine_(engine), grace_s_(grace_s) {}

  // `stop_front` stops the front end's own admission at the first signal.
  void update(const std::function<void()>& stop_front = {}) {
    const int signals = g_signal_count.load();
    if (signals > handled_) {
      const char* name = g_last_signal.load() == SIGINT ? "SIGINT" : "SIGTERM";
      if (!draining_) {
        draining_ = true;
        if (stop_front) stop_front();
        engine_.stop_admitting();
        deadline_ = Clock::now() + seconds(grace_s_);
        spdlog::warn("received {}: draining: admitting no new requests; running requests have "
                     "{:.1f} s (runtime.shutdown_grace_s) to finish; a second signal cancels them",
                     name, grace_s_);
      } else if (!cancelled_) {
        spdlog::warn("received {} again: cancelling the running requests", name);
        cancel();
      }
      handled_ = signals;
    }
    if (draining_ && !cancelled_ && Clock::now() >= deadline_ && engine_.has_unfinished()) {
      spdlog::warn("grace period of {:.1f} s over: cancelling the running requests", grace_s_);
      cancel();
    }
  }
  bool draining() const { return draining_; }

 private:
  void cancel() {
    engine_.cancel_all();
    cancelled_ = true;
  }

  runtime::EngineCore& engine_;
  const double grace_s_;
  int handled_ = 0;
  bool draining_ = false;
  bool cancelled_ = false;
  Clock::time_point deadline_{};
};

// Every 5 s while there is work: each replica's queue, KV use and progress.
class ProgressLog {
 public:
  void update(const runtime::EngineCore& engine) {
    if (Clock::now() < next_) return;
    next_ = Clock::now() + std::chrono::seconds(5);
    for (int r = 0; r < engine.num_replicas(); ++r) {
      const auto s = engine.stats(r);
      spdlog::info("replica {}: {} running, {} waiting, KV {}/{} blocks, {} steps, {} tokens", r,
                   s.scheduler.num_running, s.scheduler.num_waiting, s.scheduler.kv_blocks_used,
                   s.scheduler.kv_blocks_total, s.steps, s.tokens_sampled);
    }
  }

 private:
  Clock::time_point next_ = Clock::now() + std::chrono::seconds(5);
};

// Batch mode: submits the batch, drives the engine, drains on a signal; ends early when
// serving cannot go on (engine.failure()).
void serve_batch(runtime::EngineCore& engine, std::vector<coordinator::RequestSpec> batch,
                 const config::ServiceConfig& cfg, const ProgramOptions& opt, OutputSink& sink) {
  runtime::OutputCollector collector;
  const std::size_t total = batch.size();
  for (auto& spec : batch) {
    const std::string id = spec.request_id;
    const bool logprobs = spec.sampling.logprobs > 0;
    const int r = engine.submit(std::move(spec));
    collector.expect(id, r, logprobs);
  }
  spdlog::info("serving: {} request(s) submitted over {} replica(s)", total, engine.num_replicas());
  Drain drain(engine, cfg.runtime.shutdown_grace_s);
  ProgressLog progress;
  const auto start = Clock::now();
  int64_t tokens = 0;
  while (engine.has_unfinished() ||
         (opt.keep_running && !drain.draining() && engine.failure().empty())) {
    drain.update();
    const auto outputs = engine.poll(std::chrono::milliseconds(20));
    for (const auto& out : outputs) {
      tokens += static_cast<int64_t>(out.new_tokens.size());
      if (auto record = collector.add(out)) sink.write(*record);
    }
    if (outputs.empty() && !engine.steps_in_flight())
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    progress.update(engine);
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  spdlog::info("{}: {} of {} request(s) finished, {} tokens in {:.2f} s ({:.1f} tokens/s)",
               drain.draining() ? "drained" : "done", collector.finished(), total, tokens, elapsed,
               elapsed > 0 ? tokens / elapsed : 0.0);
}

// ZeroMQ mode: the front end (already bound) pumps the engine until a signal has drained it, or
// until serving cannot go on (engine.failure(): admission stops, the errors are delivered).
void serve_zmq(runtime::EngineCore& core, api::FrontEnd& front, const config::ServiceConfig& cfg,
               monitoring::CoordinatorMetrics& metrics) {
  api::CoreEngine engine(core, &metrics);
  spdlog::info("serving {} over {} replica(s) on {}", front.model_info().name,
               front.model_info().num_replicas, front.endpoint());
  Drain drain(core, cfg.runtime.shutdown_grace_s);
  ProgressLog progress;
  std::optional<Clock::time_point> failed_at;
  for (;;) {
    drain.update([&] { front.stop_admitting(); });
    if (!core.failure().empty() && !failed_at) {
      failed_at = Clock::now();
      front.stop_admitting();
      core.stop_admitting();
    }
    // The front end's count lags the engine by one hand-over: both must be empty.
    const bool stopping = drain.draining() || failed_at;
    if (stopping && !core.has_unfinished() && front.live_requests() == 0) break;
    // After a failure nothing computes: the errors go out within a few rounds.
    if (failed_at && Clock::now() - *failed_at > std::chrono::seconds(5)) {
      spdlog::error("{} request(s) still live 5 s after the failure; stopping anyway",
                    front.live_requests());
      break;
    }
    front.pump(engine, std::chrono::milliseconds(20));
    if (core.has_unfinished()) progress.update(core);
  }
  const auto c = front.counters();
  spdlog::info("drained: {} finished, {} cancelled, {} rejected, {} overloaded, {} invalid",
               c.finished, c.cancelled, c.rejected, c.overloaded, c.invalid);
}

}  // namespace

int main(int argc, char** argv) {
  install_signal_handlers();
  std::optional<comm::MpiEnvironment> env;
  try {
    env.emplace(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coordinator: MPI start-up failed: %s\n", e.what());
    return 1;
  }
  setup_logging();
  const int world = env->world_size();
  if (env->world_rank() != comm::WorldLayout::kCoordinator) {
    spdlog::critical("the coordinator must be world rank 0 (it is rank {}): launch it first, "
                     "`mpirun -np 1 coordinator ... : -np N worker`",
                     env->world_rank());
    comm::MpiEnvironment::abort_job(2);
  }
  comm::ControlChannel channel(MPI_COMM_WORLD);
  spdlog::info("coordinator (pid {}) on {}: world of {} ranks", getpid(), env->host(), world);

  // ----- configuration: resolved and validated once, here ---------------------------------
  CLI::App app{"shardserve coordinator: world rank 0 of `mpirun -np 1 coordinator [flags] : "
               "-np R*TP worker`. Serves the ZeroMQ job API, or with --requests / --prompt / "
               "--prompt-ids runs that batch"};
  config::CommandLine cli(app);
  ProgramOptions opt;
  // ZeroMQ mode.
  std::vector<CLI::Option*> zmq_only = {
      app.add_option("--listen", opt.listen,
                     "ZeroMQ endpoint (default tcp://<ports.host>:<ports.zmq>; port * picks one)"),
      app.add_option("--max-waiting", opt.max_waiting,
                     "requests allowed to wait beyond the running capacity")
          ->capture_default_str(),
      app.add_option("--chat-template", opt.chat_template,
                     "auto (recognise the model's), llama2 or llama3")
          ->capture_default_str()};
  // Batch mode.
  app.add_option("--requests", opt.requests_file,
                 "JSON-lines file of requests (see README); no ZeroMQ front end");
  app.add_option("--prompt-ids", opt.prompt_ids, "a prompt as comma-separated token ids (repeatable)");
  app.add_option("--prompt", opt.prompts, "a text prompt (repeatable; needs the model's tokenizer)");
  std::vector<CLI::Option*> batch_only = {
      app.add_option("--output", opt.output_file, "JSON-lines results file (default: stdout)"),
      app.add_option("--max-tokens", opt.max_tokens, "max_tokens for --prompt / --prompt-ids prompts"),
      app.add_option("--temperature", opt.temperature,
                     "temperature for --prompt / --prompt-ids prompts (0: greedy)"),
      app.add_flag("--ignore-eos", opt.ignore_eos, "--prompt / --prompt-ids prompts ignore EOS"),
      app.add_flag("--keep-running", opt.keep_running,
                   "after the batch, keep the job up until SIGTERM/SIGINT")};
  config::ServiceConfig cfg;
  model::ModelConfig model_config;
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::vector<coordinator::RequestSpec> batch;
  api::FrontEndOptions front_options;
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      app.exit(e);
      channel.send_to(comm::WorldLayout{1, world - 1}.worker_ranks(),
                      messages::encode(messages::Shutdown{"help printed"}));
      channel.flush(std::chrono::seconds(10));
      return 0;
    } catch (const CLI::ParseError& e) {
      fail("command line: {}", e.what());
    }
    for (const CLI::Option* o : zmq_only)
      require(!opt.batch() || o->count() == 0,
              "{} is a ZeroMQ serving option; with --requests / --prompt / --prompt-ids the "
              "coordinator runs that batch and serves no ZeroMQ",
              o->get_name());
    for (const CLI::Option* o : batch_only)
      require(opt.batch() || o->count() == 0,
              "{} applies to a batch: give --requests, --prompt or --prompt-ids (without them the "
              "coordinator serves ZeroMQ)",
              o->get_name());
    cfg = cli.resolve();
    config::validate(cfg);
    model_config = model::load_model_config(cfg.model);
    config::validate_for_model(cfg, model_config);
    cfg = config::resolve_for_world(cfg, world);
    spdlog::set_level(spdlog::level::from_str(cfg.log_level));
    tokenizer = load_tokenizer_if_any(cfg.model);
    if (!opt.requests_file.empty()) batch = runtime::read_requests(opt.requests_file, tokenizer.get());
    auto add_cli_request = [&](nlohmann::json j) {
      j["id"] = fmt::format("prompt-{}", batch.size());
      j["max_tokens"] = opt.max_tokens;
      j["temperature"] = opt.temperature;
      j["ignore_eos"] = opt.ignore_eos;
      auto spec = runtime::parse_request(j, "command line", tokenizer.get());
      spec.arrival_time = static_cast<double>(batch.size());
      batch.push_back(std::move(spec));
    };
    for (const auto& ids : opt.prompt_ids)
      add_cli_request({{"prompt_ids", runtime::parse_id_list(ids, "--prompt-ids")}});
    for (const auto& text : opt.prompts) add_cli_request({{"prompt", text}});
    if (!opt.batch()) {
      front_options.endpoint = opt.listen.empty()
                                   ? fmt::format("tcp://{}:{}", cfg.ports.host, cfg.ports.zmq)
                                   : opt.listen;
      require(opt.max_waiting >= 0, "--max-waiting must be >= 0, got {}", opt.max_waiting);
      front_options.max_waiting = opt.max_waiting;
      front_options.curve = {cfg.security.curve_secret_key_file, cfg.security.curve_public_key_file,
                             cfg.security.authorized_clients_dir, cfg.security.allow_plaintext};
      front_options.limits.max_request_seconds = cfg.limits.max_request_seconds;
      front_options.stream_idle_timeout_s = cfg.limits.stream_idle_timeout_s;
      if (opt.chat_template != "auto") {
        front_options.chat_format = api::parse_chat_format(opt.chat_template);
        require(front_options.chat_format.has_value(),
                "--chat-template must be auto, llama2 or llama3, got '{}'", opt.chat_template);
      }
    }
  } catch (const Error& e) {
    spdlog::error("configuration error: {}", e.what());
    runtime::abort_workers(channel, world, fmt::format("coordinator configuration error: {}", e.what()));
    return 2;
  }
  const std::string config_toml = config::to_toml(cfg);
  {
    std::istringstream lines(config_toml);
    std::string line;
    spdlog::info("effective configuration (file {}, then flags):", cli.config_file().empty()
                                                                    ? "none" : cli.config_file());
    while (std::getline(lines, line))
      if (!line.empty()) spdlog::info("  {}", line);
  }
  const comm::WorldLayout layout{cfg.tp, cfg.replicas};
  const std::string model_name = config::effective_model_name(cfg);
  // Prometheus /metrics (docs/metrics.md): up from here, so start-up can be watched too.
  monitoring::MetricsEndpoint metrics_endpoint({model_name, cfg.tp, cfg.replicas, "coordinator"});
  monitoring::CoordinatorMetrics metrics(metrics_endpoint, cfg.replicas);

  // ----- start-up handshake ------------------------------------------------------------------
  std::vector<coordinator::SchedulerConfig> schedulers;
  runtime::MpiTransportOptions transport_options;
  transport_options.coordinator_host = env->host();
  transport_options.heartbeat_interval = seconds(cfg.runtime.heartbeat_interval_s);
  std::optional<api::FrontEnd> front;  // ZeroMQ mode
  try {
    if (auto port = monitoring::metrics_port_for_rank(cfg.ports.metrics, comm::WorldLayout::kCoordinator)) {
      metrics_endpoint.serve(cfg.ports.metrics_host, *port);
      spdlog::info("metrics: {} (worker rank w: port {} + w)", metrics_endpoint.url(), *port);
    }
    channel.send_to(layout.worker_ranks(),
                    messages::encode(messages::Configure{config_toml, cfg.tp, cfg.replicas}));
    comm::MpiCollective::skip_split(MPI_COMM_WORLD);
    spdlog::info("start-up: {} replica(s) x tp {} = {} worker rank(s); waiting for their reports",
                 cfg.replicas, cfg.tp, world - 1);
    const auto hs = runtime::run_handshake(channel, layout, model_name,
                                           seconds(cfg.runtime.startup_timeout_s));
    schedulers = runtime::scheduler_configs_for(cfg, model_config, hs);
    for (const auto& h : hs.hellos) transport_options.workers.push_back({h.host, h.pid});
    // Bound last, once the handshake is done, so that a client connecting sees a ready service.
    if (!opt.batch()) {
      front.emplace(front_options, api::model_info_for(cfg, model_config, schedulers),
                    tokenizer.get());
      std::printf("listening on %s\n", front->endpoint().c_str());
      std::fflush(stdout);
    }
  } catch (const Error& e) {
    spdlog::error("start-up failed: {}", e.what());
    runtime::abort_workers(channel, world, fmt::format("coordinator start-up failed: {}", e.what()));
    return 1;
  }

  // ----- serving -------------------------------------------------------------------------------
  runtime::MpiTransport transport(channel, layout, std::move(transport_options));
  std::string failure;
  try {
    runtime::EngineCore engine(
        transport, std::move(schedulers),
        runtime::EngineOptions{seconds(cfg.runtime.step_timeout_s), &metrics,
                               cfg.runtime.on_replica_failure == "abort"
                                   ? runtime::FailurePolicy::kAbort
                                   : runtime::FailurePolicy::kFailover});
    if (front) {
      serve_zmq(engine, *front, cfg, metrics);
      front.reset();  // nothing is live: the socket closes before the workers go
    } else {
      OutputSink sink(opt.output_file);
      serve_batch(engine, std::move(batch), cfg, opt, sink);
    }
    failure = engine.failure();
    if (engine.requeued() > 0)
      spdlog::warn("{} request(s) were moved off failed replicas while serving", engine.requeued());
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}; ending the job", e.what());
    spdlog::shutdown();
    comm::MpiEnvironment::abort_job(1);
  }

  // ----- shutdown --------------------------------------------------------------------------------
  const int status = failure.empty() ? 0 : 1;
  const auto live = transport.live_worker_ranks();
  if (!live.empty())
    channel.send_to(live, messages::encode(messages::Shutdown{
                              failure.empty() ? std::string("service stopped") : failure}));
  if (!channel.flush(std::chrono::seconds(10))) {
    spdlog::critical("shutdown: the workers did not take the shutdown message within 10 s");
    comm::MpiEnvironment::abort_job(1);
  }
  if (transport.any_failed()) {
    // A rank of this job died: Open MPI 4.1's MPI_Finalize can hang then (tcp).
    spdlog::info("shutdown: {} live worker(s) told to exit; coordinator exits {} without "
                 "MPI_Finalize (a replica failed{})",
                 live.size(), status, failure.empty() ? "" : ": " + failure);
    spdlog::shutdown();
    std::fflush(stdout);
    std::_Exit(status);
  }
  spdlog::info("shutdown: every worker told to exit; coordinator exits 0");
  return 0;
}
