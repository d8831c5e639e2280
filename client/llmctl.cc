// llmctl: the command-line client of the shardserve ZeroMQ protocol (docs/protocol.md).
//   llmctl stream --prompt "In the beginning" --max-tokens 64      # text as it is generated
//   llmctl submit --prompt-ids 1,2,3 --json                          # one final message
//   llmctl stream --message "system=Be terse." --message "user=Who made the light?"
//   llmctl cancel --id ID --client HEX                               # another client's request
//   llmctl status [--requests] [--json] | health | model-info
//   llmctl bench --num-requests 100 --concurrency 32 --request-rate 20
//                --prompt-len uniform:16:64 --output-len 64 --json report.json [--check]
// Exit status: 0 done; 1 the service answered with an error (or --check failed); 2 usage;
// 3 the service is unavailable: no answer, or error "unavailable" (a replica failed under the
// request: retry later).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "api/client.h"
#include "client/bench.h"
#include "common/error.h"

namespace {

using namespace shardserve;
using namespace std::chrono_literals;

std::atomic<int> g_interrupted{0};
extern "C" void on_sigint(int) { g_interrupted.fetch_add(1); }

std::vector<int32_t> parse_ids(const std::string& csv) {
  std::vector<int32_t> ids;
  std::stringstream in(csv);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      std::size_t used = 0;
      const long v = std::stol(item, &used);
      require(used == item.size(), "");
      ids.push_back(static_cast<int32_t>(v));
    } catch (...) {
      fail("bad token id '{}' in '{}'", item, csv);
    }
  }
  return ids;
}

struct RequestFlags {
  std::string id, prompt, prompt_ids, stop_ids;
  std::vector<std::string> messages, stops;
  std::optional<int32_t> max_tokens;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f, repetition = 1.0f, frequency = 0.0f,
        presence = 0.0f;
  int32_t top_k = 0, logprobs = 0, priority = 0;
  uint64_t seed = 0;
  bool ignore_eos = false, no_special = false, no_generation_prompt = false, json = false;
  int32_t cancel_after = 0;

  void add(CLI::App* app, bool streaming) {
    app->add_option("--id", id, "request id (default: llmctl-<pid>)");
    auto* p = app->add_option("--prompt", prompt, "prompt text");
    app->add_option("--prompt-ids", prompt_ids, "prompt token ids, comma-separated")->excludes(p);
    app->add_option("--message", messages,
                    "chat message ROLE=TEXT (repeatable; role system, user or assistant)")
        ->excludes(p);
    app->add_option("--max-tokens", max_tokens,
                    "output tokens at most (default: to the context length)");
    app->add_option("--temperature", temperature, "0 = greedy")->capture_default_str();
    app->add_option("--top-p", top_p)->capture_default_str();
    app->add_option("--top-k", top_k, "0 = off")->capture_default_str();
    app->add_option("--min-p", min_p)->capture_default_str();
    app->add_option("--repetition-penalty", repetition)->capture_default_str();
    app->add_option("--frequency-penalty", frequency)->capture_default_str();
    app->add_option("--presence-penalty", presence)->capture_default_str();
    app->add_option("--seed", seed)->capture_default_str();
    app->add_option("--stop", stops, "stop string (repeatable)");
    app->add_option("--stop-token-ids", stop_ids, "stop token ids, comma-separated");
    app->add_option("--logprobs", logprobs, "top alternatives per token")->capture_default_str();
    app->add_option("--priority", priority, "lower = more urgent")->capture_default_str();
    app->add_flag("--ignore-eos", ignore_eos, "generate past EOS");
    app->add_flag("--no-special-tokens", no_special, "--prompt: do not add BOS");
    app->add_flag("--no-generation-prompt", no_generation_prompt,
                  "--message: no assistant header at the end");
    app->add_flag("--json", json, "print the server's messages as JSON lines");
    if (streaming)
      app->add_option("--cancel-after-tokens", cancel_after,
                      "cancel the request after N tokens (a demo)");
  }

  api::SubmitRequest submit(bool stream) const {
    api::SubmitRequest s;
    s.id = id.empty() ? "llmctl-" + std::to_string(getpid()) : id;
    if (!prompt_ids.empty()) {
      s.prompt_ids = parse_ids(prompt_ids);
    } else if (!messages.empty()) {
      s.messages.emplace();
      for (const auto& m : messages) {
        const auto eq = m.find('=');
        require(eq != std::string::npos && eq > 0, "--message '{}': expected ROLE=TEXT", m);
        s.messages->push_back({m.substr(0, eq), m.substr(eq + 1)});
      }
    } else {
      require(!prompt.empty(), "give --prompt, --prompt-ids or --message");
      s.prompt = prompt;
    }
    s.add_special_tokens = !no_special;
    s.add_generation_prompt = !no_generation_prompt;
    s.max_tokens = max_tokens;
    s.temperature = temperature;
    s.top_p = top_p;
    s.top_k = top_k;
    s.min_p = min_p;
    s.repetition_penalty = repetition;
    s.frequency_penalty = frequency;
    s.presence_penalty = presence;
    s.seed = seed;
    s.stop = stops;
    if (!stop_ids.empty()) s.stop_token_ids = parse_ids(stop_ids);
    s.logprobs = logprobs;
    s.ignore_eos = ignore_eos;
    s.priority = priority;
    s.stream = stream;
    return s;
  }
};

void print_json_line(const api::ServerMessage& m) {
  std::printf("%s\n", api::encode(m).c_str());
  std::fflush(stdout);
}

std::string summary(const api::Final& f) {
  auto ms = [](const std::optional<double>& s) {
    return s ? fmt::format("{:.1f} ms", *s * 1e3) : std::string("-");
  };
  return fmt::format(
      "[{}{}; {} prompt + {} completion tokens ({} cached); queue {}, TTFT {}, TPOT {}, total "
      "{:.1f} ms]",
      f.finish_reason, f.finish_detail.empty() ? "" : " (" + f.finish_detail + ")",
      f.usage.prompt_tokens, f.usage.completion_tokens, f.usage.cached_tokens,
      ms(f.timings.queue_s), ms(f.timings.ttft_s), ms(f.timings.tpot_s), f.timings.total_s * 1e3);
}

// The exit status of a request the service ended with `e`: 3 when it was unavailable (the
// service's fault, as when it does not answer), else 1.
int error_status(const api::ErrorReply& e) { return e.code == api::ErrorCode::kUnavailable ? 3 : 1; }

int report_error(const api::ErrorReply& e) {
  std::fprintf(stderr, "llmctl: %s%s: %s\n", std::string(api::to_string(e.code)).c_str(),
               e.field.empty() ? "" : (" (" + e.field + ")").c_str(), e.message.c_str());
  return error_status(e);
}

// submit / stream: one request, to its end.
int run_request(api::Client& c, const RequestFlags& flags, bool stream, double timeout_s) {
  const api::SubmitRequest s = flags.submit(stream);
  c.send(s);
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  int tokens = 0;
  bool cancel_sent = false, printed = false;
  auto last_heard = std::chrono::steady_clock::now();
  for (;;) {
    if (g_interrupted.load() > 0 && !cancel_sent) {
      c.send(api::CancelRequest{s.id, std::nullopt});
      cancel_sent = true;
    }
    auto m = c.receive(100ms);
    if (!m) {
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - last_heard).count() >
          timeout_s) {
        std::fprintf(stderr, "llmctl: no message from %s for %.0f s\n", c.endpoint().c_str(),
                     timeout_s);
        return 3;
      }
      continue;
    }
    last_heard = std::chrono::steady_clock::now();
    if (flags.json) print_json_line(*m);
    if (auto* d = std::get_if<api::Delta>(&*m)) {
      if (d->id != s.id) continue;
      tokens += static_cast<int>(d->token_ids.size());
      if (!flags.json) {
        std::fwrite(d->text.data(), 1, d->text.size(), stdout);
        std::fflush(stdout);
        printed = printed || !d->text.empty();
      }
      if (flags.cancel_after > 0 && tokens >= flags.cancel_after && !cancel_sent) {
        c.send(api::CancelRequest{s.id, std::nullopt});
        cancel_sent = true;
      }
    } else if (auto* f = std::get_if<api::Final>(&*m)) {
      if (f->id != s.id) continue;
      if (!flags.json) {
        if (f->text) std::fwrite(f->text->data(), 1, f->text->size(), stdout);
        std::fputs("\n", stdout);
        std::fflush(stdout);
        std::fprintf(stderr, "%s\n", summary(*f).c_str());
      }
      return g_interrupted.load() > 0 ? 130 : 0;
    } else if (auto* e = std::get_if<api::ErrorReply>(&*m)) {
      if (e->id && *e->id != s.id) continue;
      if (printed) std::fputs("\n", stdout);
      return flags.json ? error_status(*e) : report_error(*e);
    }
  }
}

void print_status(const api::StatusReply& s) {
  std::printf("admitting: %s\n", s.admitting ? "yes" : "no (draining)");
  std::printf("requests: %d live (at most %d), %d running, %d waiting, %d client(s)\n",
              s.live_requests, s.max_live_requests, s.running, s.waiting, s.clients);
  std::printf("KV: %d / %d blocks used (%.1f%%)\n", s.kv_blocks_used, s.kv_blocks_total,
              s.kv_usage * 100);
  for (std::size_t r = 0; r < s.replicas.size(); ++r) {
    const auto& x = s.replicas[r];
    std::printf("  replica %zu: %d running, %d waiting, KV %d/%d (%d cached), %ld steps\n", r,
                x.running, x.waiting, x.kv_blocks_used, x.kv_blocks_total, x.kv_blocks_cached,
                static_cast<long>(x.steps));
  }
  std::printf(
      "since start: %ld submitted, %ld finished, %ld cancelled (%ld on disconnect), %ld rejected, "
      "%ld unavailable, %ld overloaded, %ld invalid\n",
      long(s.submitted), long(s.finished), long(s.cancelled), long(s.disconnect_cancels),
      long(s.rejected), long(s.unavailable), long(s.overloaded), long(s.invalid));
  if (s.requests) {
    std::printf("%-12s %-24s %-10s %8s %8s %9s\n", "client", "id", "state", "prompt", "output",
                "age (s)");
    for (const auto& r : *s.requests)
      std::printf("%-12s %-24s %-10s %8d %8d %9.2f\n", r.client.c_str(), r.id.c_str(),
                  r.state.c_str(), r.prompt_tokens, r.output_tokens, r.age_s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "llmctl: submit, stream, cancel and benchmark requests over shardserve's ZeroMQ protocol"};
  app.require_subcommand(1);
  const char* env = std::getenv("SHARDSERVE_ENDPOINT");
  std::string endpoint = env ? env : "tcp://127.0.0.1:5555";
  double timeout_s = 30;
  app.add_option("--endpoint", endpoint, "the front end (env SHARDSERVE_ENDPOINT)")
      ->capture_default_str();
  app.add_option("--timeout", timeout_s, "seconds without a message before giving up")
      ->capture_default_str();
  // CURVE (docs/deploy.md): file names only, never keys, on the command line.
  api::ClientOptions client_options;
  if (const char* f = std::getenv("SHARDSERVE_CURVE_SERVER_KEY_FILE"))
    client_options.curve.server_public_key_file = f;
  if (const char* f = std::getenv("SHARDSERVE_CURVE_CLIENT_KEY_FILE"))
    client_options.curve.client_secret_key_file = f;
  app.add_option("--curve-server-key", client_options.curve.server_public_key_file,
                 "the server's CURVE public key file (env SHARDSERVE_CURVE_SERVER_KEY_FILE)");
  app.add_option("--curve-client-key", client_options.curve.client_secret_key_file,
                 "this client's CURVE secret key file, mode 0600 (env "
                 "SHARDSERVE_CURVE_CLIENT_KEY_FILE)");
  std::string keygen_stem;
  auto* keygen = app.add_subcommand(
      "keygen", "write a new CURVE key pair: STEM.key (secret, mode 0600) and STEM.pub");
  keygen->add_option("stem", keygen_stem, "path without extension, e.g. keys/gateway")->required();

  RequestFlags submit_flags, stream_flags;
  auto* submit = app.add_subcommand("submit", "one request; print its whole output at the end");
  submit_flags.add(submit, false);
  auto* stream = app.add_subcommand(
      "stream", "one request; print its text as it is generated (Ctrl-C cancels)");
  stream_flags.add(stream, true);

  std::string cancel_id, cancel_client;
  auto* cancel =
      app.add_subcommand("cancel", "cancel a live request (another client's with --client)");
  cancel->add_option("--id", cancel_id, "the request id")->required();
  cancel->add_option("--client", cancel_client,
                     "its client (hex, from `llmctl status --requests`)");

  bool status_requests = false, status_json = false;
  auto* status = app.add_subcommand("status", "queue, running, KV use and counters");
  status->add_flag("--requests", status_requests, "list every live request");
  status->add_flag("--json", status_json, "print the status message as JSON");
  auto* health = app.add_subcommand("health", "is the service up and admitting");
  auto* model_info = app.add_subcommand("model-info", "the served model");

  client::BenchOptions bo;
  std::string prompt_len = "32", output_len = "64", json_out;
  double rate = 0;
  auto* bench = app.add_subcommand(
      "bench", "load generator: throughput, TTFT, TPOT, end-to-end latency percentiles");
  bench->add_option("--num-requests", bo.num_requests)->capture_default_str();
  bench->add_option("--concurrency", bo.concurrency, "requests in flight at most")
      ->capture_default_str();
  bench->add_option("--request-rate", rate, "Poisson arrivals per second (0: all at once)")
      ->capture_default_str();
  bench
      ->add_option("--prompt-len", prompt_len,
                   "N, uniform:MIN:MAX or normal:MEAN:STD (random token ids)")
      ->capture_default_str();
  bench
      ->add_option("--output-len", output_len, "N, uniform:MIN:MAX or normal:MEAN:STD (max_tokens)")
      ->capture_default_str();
  bench->add_option("--prompt", bo.prompt, "use this text as every prompt instead of random ids");
  bench->add_option("--temperature", bo.temperature)->capture_default_str();
  bench->add_option("--seed", bo.seed)->capture_default_str();
  bool stop_at_eos = false;
  bench->add_flag("--stop-at-eos", stop_at_eos,
                  "let EOS end requests (default: ignore_eos, exact output lengths)");
  bench
      ->add_option("--cancel-fraction", bo.cancel_fraction,
                   "fraction of requests cancelled mid-stream")
      ->capture_default_str();
  bench
      ->add_option("--cancel-after-tokens", bo.cancel_after_tokens, "cancel after this many tokens")
      ->capture_default_str();
  bench->add_option("--json", json_out, "write the report as JSON to this file ('-': stdout)");
  bench->add_flag("--check", bo.check,
                  "fail unless every request got its full output (cancelled ones cancelled) "
                  "and the KV pool is empty afterwards");
  bench->add_option("--run-timeout", bo.timeout_s, "seconds for the whole run")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  try {
    if (keygen->parsed()) {
      api::write_curve_key_files(keygen_stem, api::generate_curve_keypair());
      std::printf("wrote %s.key (secret) and %s.pub\n", keygen_stem.c_str(), keygen_stem.c_str());
      return 0;
    }
    api::Client c(endpoint, client_options);
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    if (submit->parsed()) return run_request(c, submit_flags, false, timeout_s);
    if (stream->parsed()) return run_request(c, stream_flags, true, timeout_s);
    if (cancel->parsed()) {
      c.send(api::CancelRequest{
          cancel_id, cancel_client.empty() ? std::nullopt : std::optional(cancel_client)});
      for (;;) {
        auto m = c.receive(timeout);
        if (!m) {
          std::fprintf(stderr, "llmctl: no answer from %s\n", endpoint.c_str());
          return 3;
        }
        if (auto* f = std::get_if<api::Final>(&*m); f && f->id == cancel_id) {
          std::printf("%s: %s\n", cancel_id.c_str(), summary(*f).c_str());
          return 0;
        }
        if (auto* e = std::get_if<api::ErrorReply>(&*m)) return report_error(*e);
      }
    }
    if (status->parsed()) {
      const auto s = c.status(status_requests, timeout);
      if (status_json)
        std::printf("%s\n", api::encode(s).c_str());
      else
        print_status(s);
      return 0;
    }
    if (health->parsed()) {
      const auto h = c.health(timeout);
      std::printf("%s (up %.1f s)\n", h.status.c_str(), h.uptime_s);
      return h.status == "ok" ? 0 : 1;
    }
    if (model_info->parsed()) {
      std::printf("%s\n",
                  nlohmann::json::parse(api::encode(c.model_info(timeout))).dump(2).c_str());
      return 0;
    }
    if (bench->parsed()) {
      bo.endpoint = endpoint;
      bo.client = client_options;
      bo.request_rate = rate;
      bo.ignore_eos = !stop_at_eos;
      bo.prompt_len = client::LengthDistribution::parse(prompt_len, "--prompt-len");
      bo.output_len = client::LengthDistribution::parse(output_len, "--output-len");
      const auto report = client::run_bench(bo);
      if (json_out == "-") {
        std::printf("%s\n", report.to_json().dump(2).c_str());
      } else {
        std::fputs(report.table().c_str(), stdout);
        if (!json_out.empty()) {
          std::ofstream f(json_out);
          require(static_cast<bool>(f), "--json {}: cannot be written", json_out);
          f << report.to_json().dump(2) << "\n";
        }
      }
      return report.ok() ? 0 : 1;
    }
  } catch (const api::ProtocolError& e) {
    std::fprintf(stderr, "llmctl: %s\n", e.what());
    return e.code() == api::ErrorCode::kUnavailable ? 3 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llmctl: %s\n", e.what());
    return 2;
  }
  return 2;
}
