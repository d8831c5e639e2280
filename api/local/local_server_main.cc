// llm-local: serves a model over the ZeroMQ protocol from one process on the CPU (the in-process
// LocalEngine: Scheduler + ModelRunner + Sampler). The same front end the coordinator hosts, for
// trying clients and the gateway without mpirun, and for the tests.
//   llm-local --model models/kjv-llama --listen tcp://127.0.0.1:5555
// SIGINT/SIGTERM: stop admitting, let live requests finish (--grace seconds), exit 0; a second
// signal cancels them.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <thread>

#include "api/front_end.h"
#include "api/local/local_engine.h"
#include "common/error.h"
#include "config/service_config.h"

namespace {

std::atomic<int> g_signals{0};
extern "C" void on_signal(int) { g_signals.fetch_add(1); }

}  // namespace

int main(int argc, char** argv) {
  using namespace shardserve;
  CLI::App app{"Serve a model over the shardserve ZeroMQ protocol, in this one process (CPU)"};
  api::LocalEngineOptions eo;
  api::FrontEndOptions fo;
  std::string model_dir, chat_template = "auto", log_level = "info";
  double grace_s = 30.0;
  bool no_prefix_caching = false;
  app.add_option("--model", model_dir, "HuggingFace model directory")->required();
  app.add_option("--listen", fo.endpoint, "ZeroMQ endpoint to bind")->capture_default_str();
  app.add_option("--served-model-name", eo.served_model_name,
                 "model name in model_info (default: directory name)");
  app.add_option("--kv-blocks", eo.kv_blocks, "KV pool size in blocks")->capture_default_str();
  app.add_option("--block-size", eo.block_size, "tokens per KV block")->capture_default_str();
  app.add_option("--max-num-seqs", eo.max_num_seqs, "running sequences at most")
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", eo.max_num_batched_tokens, "token budget of one step")
      ->capture_default_str();
  app.add_option("--max-model-len", eo.max_model_len, "context length (0: the model's)")
      ->capture_default_str();
  app.add_option("--max-waiting", fo.max_waiting, "requests allowed to wait beyond --max-num-seqs")
      ->capture_default_str();
  app.add_option("--chat-template", chat_template, "auto (recognise the model's), llama2 or llama3")
      ->capture_default_str();
  app.add_flag("--no-prefix-caching", no_prefix_caching, "disable the prefix cache");
  double min_step_ms = 0;
  app.add_option("--min-step-ms", min_step_ms,
                 "make every step take at least this long (a slower model, for demos "
                 "and tests of streaming)")
      ->capture_default_str();
  app.add_option("--grace", grace_s, "seconds live requests may finish after SIGTERM")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  config::LimitsSettings limits;
  app.add_option("--max-request-seconds", limits.max_request_seconds,
                 "a request's deadline and the largest timeout_s a submit may ask (0: none) "
                 "[limits.max_request_seconds]")
      ->capture_default_str();
  app.add_option("--stream-idle-timeout", limits.stream_idle_timeout_s,
                 "seconds a live request may go without output before it is ended (0: none) "
                 "[limits.stream_idle_timeout_s]")
      ->capture_default_str();
  std::string security_config;
  app.add_option("--config", security_config,
                 "a service configuration file (TOML): its [security] section (CURVE key files) "
                 "is used; the other settings are the flags'");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("[%H:%M:%S.%e] [llm-local] [%l] %v");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  try {
    eo.model_dir = model_dir;
    eo.enable_prefix_caching = !no_prefix_caching;
    eo.min_step_time = std::chrono::microseconds(static_cast<int64_t>(min_step_ms * 1000));
    if (chat_template != "auto") {
      fo.chat_format = api::parse_chat_format(chat_template);
      require(fo.chat_format.has_value(),
              "--chat-template must be auto, llama2 or llama3, got '{}'", chat_template);
    }
    config::validate_limits(limits);
    fo.limits.max_request_seconds = limits.max_request_seconds;
    fo.stream_idle_timeout_s = limits.stream_idle_timeout_s;
    if (!security_config.empty()) {
      const auto security = config::load_toml_file(security_config).security;
      config::validate_security(security);
      fo.curve = {security.curve_secret_key_file, security.curve_public_key_file,
                  security.authorized_clients_dir, security.allow_plaintext};
    }
    api::LocalEngine engine(eo);
    api::FrontEnd front(fo, engine.model_info(), engine.tokenizer());
    std::printf("listening on %s\n", front.endpoint().c_str());
    std::fflush(stdout);
    bool draining = false, cancelled = false;
    auto drain_deadline = api::Clock::now();
    for (;;) {
      const int signals = g_signals.load();
      if (signals >= 1 && !draining) {
        draining = true;
        front.stop_admitting();
        drain_deadline =
            api::Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
        spdlog::info("draining: {} live request(s) may finish within {:.1f} s",
                     front.live_requests(), grace_s);
      }
      if (draining && !cancelled && (signals >= 2 || api::Clock::now() >= drain_deadline)) {
        cancelled = true;
        spdlog::info("cancelling {} live request(s)", front.live_requests());
        engine.cancel_all();
      }
      if (draining && front.live_requests() == 0 && !engine.has_unfinished()) break;
      if (cancelled && !engine.has_unfinished()) break;
      front.pump(engine, std::chrono::milliseconds(20));
    }
    spdlog::info("stopped: {} request(s) finished, {} cancelled", front.counters().finished,
                 front.counters().cancelled);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llm-local: %s\n", e.what());
    return 1;
  }
  return 0;
}
