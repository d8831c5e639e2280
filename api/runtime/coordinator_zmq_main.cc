// coordinator-zmq: the coordinator process serving the ZeroMQ protocol (world rank 0 of
// `mpirun -np 1 coordinator-zmq [flags] : -np R*TP worker`). The start-up and shutdown are the
// runtime's (coordinator/runtime: configuration, handshake, EngineCore over MPI); requests come
// from the ZeroMQ front end (api/front_end.h) instead of a file. When coordinator/runtime's
// `coordinator` hosts the front end itself (see api/runtime/core_engine.h for the three lines it
// takes), this executable can go.
//
// Exit status: 0 after a drain (SIGTERM/SIGINT: admission stops, live requests get
// runtime.shutdown_grace_s to finish, a second signal cancels them, the workers are told to
// exit); 2 for a configuration error; 1 when start-up failed; a failure while serving ends the
// job with MPI_Abort.
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <optional>
#include <sstream>

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
#include "coordinator/scheduler_config.h"
#include "messages/codec.h"
#include "model/model_config.h"
#include "model/tokenizer/tokenizer.h"

namespace {

using namespace shardserve;
using Clock = std::chrono::steady_clock;

std::atomic<int> g_signal_count{0};
extern "C" void on_signal(int) { g_signal_count.fetch_add(1); }

std::chrono::milliseconds seconds(double s) {
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0));
}

}  // namespace

int main(int argc, char** argv) {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::optional<comm::MpiEnvironment> env;
  try {
    env.emplace(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coordinator-zmq: MPI start-up failed: %s\n", e.what());
    return 1;
  }
  auto logger = spdlog::stderr_logger_mt("coordinator");
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [coordinator] [%l] %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  const int world = env->world_size();
  if (env->world_rank() != comm::WorldLayout::kCoordinator) {
    spdlog::critical("the coordinator must be world rank 0 (it is rank {})", env->world_rank());
    comm::MpiEnvironment::abort_job(2);
  }
  comm::ControlChannel channel(MPI_COMM_WORLD);

  CLI::App app{
      "shardserve coordinator with the ZeroMQ front end: `mpirun -np 1 coordinator-zmq [flags] : "
      "-np R*TP worker`"};
  config::CommandLine cli(app);
  std::string listen, chat_template = "auto";
  api::FrontEndOptions fo;
  app.add_option("--listen", listen, "ZeroMQ endpoint (default tcp://<ports.host>:<ports.zmq>)");
  app.add_option("--max-waiting", fo.max_waiting,
                 "requests allowed to wait beyond the running capacity")
      ->capture_default_str();
  app.add_option("--chat-template", chat_template, "auto (recognise the model's), llama2 or llama3")
      ->capture_default_str();
  config::ServiceConfig cfg;
  model::ModelConfig model_config;
  std::unique_ptr<model::Tokenizer> tokenizer;
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
    cfg = cli.resolve();
    config::validate(cfg);
    model_config = model::load_model_config(cfg.model);
    config::validate_for_model(cfg, model_config);
    cfg = config::resolve_for_world(cfg, world);
    spdlog::set_level(spdlog::level::from_str(cfg.log_level));
    if (chat_template != "auto") {
      fo.chat_format = api::parse_chat_format(chat_template);
      require(fo.chat_format.has_value(),
              "--chat-template must be auto, llama2 or llama3, got '{}'", chat_template);
    }
    fo.endpoint =
        listen.empty() ? fmt::format("tcp://{}:{}", cfg.ports.host, cfg.ports.zmq) : listen;
    fo.curve = {cfg.security.curve_secret_key_file, cfg.security.curve_public_key_file,
                cfg.security.authorized_clients_dir, cfg.security.allow_plaintext};
    tokenizer = model::load_tokenizer(cfg.model);
  } catch (const Error& e) {
    spdlog::error("configuration error: {}", e.what());
    runtime::abort_workers(channel, world,
                           fmt::format("coordinator configuration error: {}", e.what()));
    return 2;
  }
  const std::string config_toml = config::to_toml(cfg);
  const comm::WorldLayout layout{cfg.tp, cfg.replicas};
  const std::string model_name = config::effective_model_name(cfg);

  std::vector<coordinator::SchedulerConfig> schedulers;
  try {
    channel.send_to(layout.worker_ranks(),
                    messages::encode(messages::Configure{config_toml, cfg.tp, cfg.replicas}));
    comm::MpiCollective::skip_split(MPI_COMM_WORLD);
    spdlog::info("start-up: {} replica(s) x tp {} = {} worker rank(s)", cfg.replicas, cfg.tp,
                 world - 1);
    const auto hs =
        runtime::run_handshake(channel, layout, model_name, seconds(cfg.runtime.startup_timeout_s));
    schedulers = runtime::scheduler_configs_for(cfg, model_config, hs);
  } catch (const Error& e) {
    spdlog::error("start-up failed: {}", e.what());
    runtime::abort_workers(channel, world,
                           fmt::format("coordinator start-up failed: {}", e.what()));
    return 1;
  }

  try {
    runtime::MpiTransport transport(channel, layout);
    const api::ModelInfo info = api::model_info_for(cfg, model_config, schedulers);
    runtime::EngineCore core(transport, std::move(schedulers),
                             runtime::EngineOptions{seconds(cfg.runtime.step_timeout_s)});
    api::CoreEngine engine(core);
    api::FrontEnd front(fo, info, tokenizer.get());
    std::printf("listening on %s\n", front.endpoint().c_str());
    std::fflush(stdout);
    spdlog::info("serving {} over {} replica(s) on {}; coordinator (pid {})", info.name,
                 info.num_replicas, front.endpoint(), getpid());
    bool draining = false, cancelled = false;
    int handled = 0;
    auto deadline = Clock::now();
    for (;;) {
      const int signals = g_signal_count.load();
      if (signals > handled) {
        handled = signals;
        if (!draining) {
          draining = true;
          front.stop_admitting();
          core.stop_admitting();
          deadline = Clock::now() + seconds(cfg.runtime.shutdown_grace_s);
          spdlog::warn(
              "draining: no new requests; {} live request(s) have {:.1f} s to finish; a second "
              "signal "
              "cancels them",
              front.live_requests(), cfg.runtime.shutdown_grace_s);
        } else if (!cancelled) {
          spdlog::warn("second signal: cancelling the live requests");
          core.cancel_all();
          cancelled = true;
        }
      }
      if (draining && !cancelled && Clock::now() >= deadline && core.has_unfinished()) {
        spdlog::warn("grace period over: cancelling the live requests");
        core.cancel_all();
        cancelled = true;
      }
      if (draining && !core.has_unfinished() && front.live_requests() == 0) break;
      front.pump(engine, std::chrono::milliseconds(20));
    }
    const auto c = front.counters();
    spdlog::info("drained: {} finished, {} cancelled, {} rejected, {} overloaded", c.finished,
                 c.cancelled, c.rejected, c.overloaded);
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}; ending the job", e.what());
    spdlog::shutdown();
    comm::MpiEnvironment::abort_job(1);
  }

  channel.send_to(layout.worker_ranks(), messages::encode(messages::Shutdown{"service stopped"}));
  if (!channel.flush(std::chrono::seconds(10))) {
    spdlog::critical("shutdown: the workers did not take the shutdown message within 10 s");
    comm::MpiEnvironment::abort_job(1);
  }
  spdlog::info("shutdown: every worker told to exit; coordinator exits 0");
  return 0;
}
