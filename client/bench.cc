#include "client/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <thread>
#include <unordered_map>

#include "api/client.h"
#include "common/error.h"

namespace shardserve::client {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Planned {
  std::string id;
  std::vector<int32_t> prompt_ids;
  int32_t output_len = 0;
  bool cancel = false;
  double arrival_s = 0;  // offset from the start
  // Progress.
  bool sent = false, cancel_sent = false, done = false;
  Clock::time_point sent_at, first_token_at, last_token_at;
  int32_t tokens = 0;
  std::optional<api::Final> final;
  std::optional<api::ErrorReply> error;
};

}  // namespace

LengthDistribution LengthDistribution::parse(const std::string& text, const std::string& what) {
  LengthDistribution d;
  auto number = [&](const std::string& s) {
    try {
      std::size_t used = 0;
      const double v = std::stod(s, &used);
      require(used == s.size(), "");
      return v;
    } catch (...) {
      fail("{} '{}': expected N, uniform:MIN:MAX or normal:MEAN:STD", what, text);
    }
  };
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i)
    if (i == text.size() || text[i] == ':') {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  if (parts.size() == 1) {
    d.kind = Kind::kFixed;
    d.a = number(parts[0]);
  } else if (parts.size() == 3 && parts[0] == "uniform") {
    d.kind = Kind::kUniform;
    d.a = number(parts[1]);
    d.b = number(parts[2]);
    require(d.b >= d.a, "{} '{}': MAX must be >= MIN", what, text);
  } else if (parts.size() == 3 && parts[0] == "normal") {
    d.kind = Kind::kNormal;
    d.a = number(parts[1]);
    d.b = number(parts[2]);
    require(d.b >= 0, "{} '{}': STD must be >= 0", what, text);
  } else {
    fail("{} '{}': expected N, uniform:MIN:MAX or normal:MEAN:STD", what, text);
  }
  require(d.a >= 1, "{} '{}': lengths must be at least 1", what, text);
  return d;
}

int32_t LengthDistribution::sample(std::mt19937_64& rng) const {
  switch (kind) {
    case Kind::kFixed:
      return static_cast<int32_t>(a);
    case Kind::kUniform:
      return static_cast<int32_t>(
          std::uniform_int_distribution<int64_t>(int64_t(a), int64_t(b))(rng));
    case Kind::kNormal:
      return std::max<int32_t>(
          1, static_cast<int32_t>(std::lround(std::normal_distribution<double>(a, b)(rng))));
  }
  return 1;
}

std::string LengthDistribution::describe() const {
  switch (kind) {
    case Kind::kFixed:
      return fmt::format("{}", a);
    case Kind::kUniform:
      return fmt::format("uniform:{}:{}", a, b);
    case Kind::kNormal:
      return fmt::format("normal:{}:{}", a, b);
  }
  return "";
}

Percentiles Percentiles::of(std::vector<double> v) {
  Percentiles p;
  p.count = static_cast<int64_t>(v.size());
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {  // linear interpolation between closest ranks (numpy's default)
    const double pos = q * (v.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const auto hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  };
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / v.size();
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p95 = at(0.95);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

nlohmann::json Percentiles::to_json() const {
  return {{"count", count}, {"mean", mean}, {"p50", p50}, {"p90", p90},
          {"p95", p95},     {"p99", p99},   {"max", max}};
}

nlohmann::json BenchReport::to_json() const {
  nlohmann::json j{{"requests", requests},
                   {"completed", completed},
                   {"cancelled", cancelled},
                   {"failed", failed},
                   {"overloaded", overloaded},
                   {"unanswered", unanswered},
                   {"duration_s", duration_s},
                   {"prompt_tokens", prompt_tokens},
                   {"output_tokens", output_tokens},
                   {"request_throughput", duration_s > 0 ? completed / duration_s : 0.0},
                   {"output_token_throughput", duration_s > 0 ? output_tokens / duration_s : 0.0},
                   {"total_token_throughput",
                    duration_s > 0 ? (prompt_tokens + output_tokens) / duration_s : 0.0},
                   {"ttft_s", ttft_s.to_json()},
                   {"tpot_s", tpot_s.to_json()},
                   {"e2e_s", e2e_s.to_json()},
                   {"server_queue_s", server_queue_s.to_json()},
                   {"problems", problems},
                   {"ok", ok()},
                   {"options", options}};
  j["kv_blocks_used_after"] =
      kv_blocks_used_after ? nlohmann::json(*kv_blocks_used_after) : nlohmann::json(nullptr);
  return j;
}

std::string BenchReport::table() const {
  std::string t;
  t += fmt::format(
      "requests {}: completed {}, cancelled {}, failed {}, overloaded {}, unanswered {}\n",
      requests, completed, cancelled, failed, overloaded, unanswered);
  t += fmt::format(
      "duration {:.3f} s; {:.2f} requests/s; output {:.1f} tokens/s; total {:.1f} tokens/s\n",
      duration_s, duration_s > 0 ? completed / duration_s : 0.0,
      duration_s > 0 ? output_tokens / duration_s : 0.0,
      duration_s > 0 ? (prompt_tokens + output_tokens) / duration_s : 0.0);
  t += fmt::format("{:<16} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "metric (ms)",
                   "count", "mean", "p50", "p90", "p95", "p99", "max");
  auto row = [&](const char* name, const Percentiles& p) {
    t += fmt::format("{:<16} {:>7} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f}\n",
                     name, p.count, p.mean * 1e3, p.p50 * 1e3, p.p90 * 1e3, p.p95 * 1e3,
                     p.p99 * 1e3, p.max * 1e3);
  };
  row("TTFT", ttft_s);
  row("TPOT", tpot_s);
  row("E2E latency", e2e_s);
  row("server queue", server_queue_s);
  if (kv_blocks_used_after)
    t += fmt::format("KV blocks in use afterwards: {}\n", *kv_blocks_used_after);
  for (const auto& p : problems) t += fmt::format("PROBLEM: {}\n", p);
  return t;
}

BenchReport run_bench(const BenchOptions& o) {
  require(o.num_requests >= 1, "--num-requests must be >= 1, got {}", o.num_requests);
  require(o.concurrency >= 1, "--concurrency must be >= 1, got {}", o.concurrency);
  require(o.request_rate >= 0, "--request-rate must be >= 0, got {}", o.request_rate);
  require(o.cancel_fraction >= 0 && o.cancel_fraction <= 1,
          "--cancel-fraction must be in [0, 1], got {}", o.cancel_fraction);
  api::Client c(o.endpoint, o.client);
  const api::ModelInfo info = c.model_info();
  std::mt19937_64 rng(o.seed);
  // Ordinary token ids: Llama 3 keeps its special tokens at the end of the vocabulary, Llama 2
  // at the start (0-2).
  int32_t lo = 3, hi = info.vocab_size;
  if (info.bos_token_id && *info.bos_token_id > info.vocab_size / 2) {
    lo = 0;
    hi = *info.bos_token_id;
  }
  std::uniform_int_distribution<int32_t> token(lo, std::max(lo, hi - 1));
  std::exponential_distribution<double> gap(o.request_rate > 0 ? o.request_rate : 1.0);
  // Exactly round(fraction * N) requests are cancelled, chosen by a seeded shuffle.
  std::vector<int32_t> order(o.num_requests);
  for (int32_t i = 0; i < o.num_requests; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  const auto num_cancel = static_cast<int32_t>(std::lround(o.cancel_fraction * o.num_requests));
  std::vector<bool> cancel(o.num_requests, false);
  for (int32_t k = 0; k < num_cancel; ++k) cancel[order[k]] = true;

  std::vector<Planned> plan(o.num_requests);
  std::unordered_map<std::string, std::size_t> index;
  double t = 0;
  for (int32_t i = 0; i < o.num_requests; ++i) {
    Planned& p = plan[i];
    p.id = fmt::format("{}-{}", o.id_prefix, i);
    if (o.prompt.empty()) {
      const int32_t n = o.prompt_len.sample(rng);
      for (int32_t k = 0; k < n; ++k) p.prompt_ids.push_back(token(rng));
    }
    p.output_len = o.output_len.sample(rng);
    p.cancel = cancel[i];
    if (o.request_rate > 0 && i > 0) t += gap(rng);
    p.arrival_s = t;
    index[p.id] = i;
    require(static_cast<int64_t>(p.prompt_ids.size()) + p.output_len <= info.max_model_len,
            "request {}: prompt {} + output {} tokens exceed the context length {}", i,
            p.prompt_ids.size(), p.output_len, info.max_model_len);
  }

  BenchReport report;
  report.requests = o.num_requests;
  report.options = {
      {"num_requests", o.num_requests},
      {"concurrency", o.concurrency},
      {"request_rate", o.request_rate > 0 ? nlohmann::json(o.request_rate) : nlohmann::json("inf")},
      {"prompt_len", o.prompt.empty() ? o.prompt_len.describe() : "text"},
      {"output_len", o.output_len.describe()},
      {"temperature", o.temperature},
      {"ignore_eos", o.ignore_eos},
      {"seed", o.seed},
      {"cancel_fraction", o.cancel_fraction},
      {"cancel_after_tokens", o.cancel_after_tokens},
      {"model", info.name},
      {"endpoint", o.endpoint}};

  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
  std::size_t next = 0, done = 0;
  int32_t in_flight = 0;
  while (done < plan.size() && Clock::now() < deadline) {
    const auto now = Clock::now();
    while (next < plan.size() && in_flight < o.concurrency &&
           secs(now - start) >= plan[next].arrival_s) {
      Planned& p = plan[next++];
      api::SubmitRequest s;
      s.id = p.id;
      if (o.prompt.empty())
        s.prompt_ids = p.prompt_ids;
      else
        s.prompt = o.prompt;
      s.max_tokens = p.output_len;
      s.temperature = o.temperature;
      s.ignore_eos = o.ignore_eos;
      s.seed = o.seed + next;
      p.sent_at = Clock::now();
      p.sent = true;
      c.send(s);
      ++in_flight;
    }
    auto wait = 50ms;
    if (next < plan.size() && in_flight < o.concurrency) {
      const double until = plan[next].arrival_s - secs(Clock::now() - start);
      wait = std::clamp(std::chrono::milliseconds(static_cast<int64_t>(until * 1000)), 0ms, 50ms);
    }
    auto m = c.receive(wait);
    if (!m) continue;
    const auto at = Clock::now();
    auto find = [&](const std::string& id) -> Planned* {
      auto it = index.find(id);
      return it == index.end() ? nullptr : &plan[it->second];
    };
    if (auto* d = std::get_if<api::Delta>(&*m)) {
      Planned* p = find(d->id);
      if (!p || d->token_ids.empty()) continue;
      if (p->tokens == 0) p->first_token_at = at;
      p->last_token_at = at;
      p->tokens += static_cast<int32_t>(d->token_ids.size());
      if (p->cancel && !p->cancel_sent && p->tokens >= o.cancel_after_tokens) {
        c.send(api::CancelRequest{p->id, std::nullopt});
        p->cancel_sent = true;
      }
    } else if (auto* f = std::get_if<api::Final>(&*m)) {
      Planned* p = find(f->id);
      if (!p || p->done) continue;
      p->final = *f;
      p->done = true;
      ++done;
      --in_flight;
      p->final->timings.total_s = secs(at - p->sent_at);  // end-to-end, as the client sees it
    } else if (auto* e = std::get_if<api::ErrorReply>(&*m)) {
      Planned* p = e->id ? find(*e->id) : nullptr;
      if (!p) {
        report.problems.push_back(fmt::format("error without a request: {}", e->message));
        continue;
      }
      if (p->done) continue;
      p->error = *e;
      p->done = true;
      ++done;
      --in_flight;
    }
  }
  report.duration_s = secs(Clock::now() - start);

  std::vector<double> ttft, tpot, e2e, queue;
  int errors_listed = 0;
  for (const Planned& p : plan) {
    if (!p.done) {
      ++report.unanswered;
      continue;
    }
    if (p.error) {
      if (p.error->code == api::ErrorCode::kOverloaded)
        ++report.overloaded;
      else
        ++report.failed;
      if (errors_listed++ < 5)
        report.problems.push_back(
            fmt::format("{}: {} {}", p.id, api::to_string(p.error->code), p.error->message));
      continue;
    }
    const api::Final& f = *p.final;
    report.prompt_tokens += f.usage.prompt_tokens;
    report.output_tokens += f.usage.completion_tokens;
    if (f.finish_reason == "cancelled") {
      ++report.cancelled;
    } else {
      ++report.completed;
      e2e.push_back(f.timings.total_s);
      if (p.tokens > 0) ttft.push_back(secs(p.first_token_at - p.sent_at));
      if (p.tokens > 1) tpot.push_back(secs(p.last_token_at - p.first_token_at) / (p.tokens - 1));
    }
    if (f.timings.queue_s) queue.push_back(*f.timings.queue_s);
    if (!o.check) continue;
    if (p.tokens != f.usage.completion_tokens)
      report.problems.push_back(fmt::format("{}: {} tokens streamed but usage says {}", p.id,
                                            p.tokens, f.usage.completion_tokens));
    // Cancelled after cancel_after_tokens of a longer output: it must end "cancelled" (the
    // cancel reaches the service a step or two later, hence the margin).
    const bool must_cancel = p.cancel && p.output_len > o.cancel_after_tokens + 8;
    if (must_cancel && f.finish_reason != "cancelled")
      report.problems.push_back(fmt::format("{}: was cancelled after {} tokens but ended '{}'",
                                            p.id, o.cancel_after_tokens, f.finish_reason));
    if (!p.cancel && o.ignore_eos &&
        (f.finish_reason != "length" || f.usage.completion_tokens != p.output_len))
      report.problems.push_back(fmt::format("{}: ended '{}' after {} of {} tokens", p.id,
                                            f.finish_reason, f.usage.completion_tokens,
                                            p.output_len));
  }
  if (o.check) {
    if (report.unanswered > 0)
      report.problems.push_back(
          fmt::format("{} request(s) unanswered within {} s", report.unanswered, o.timeout_s));
    // The service is idle once every request has ended; its KV pool must be empty then.
    const auto until = Clock::now() + 10s;
    api::StatusReply s;
    do {
      s = c.status();
      if (s.live_requests == 0 && s.running == 0 && s.waiting == 0) break;
      std::this_thread::sleep_for(20ms);
    } while (Clock::now() < until);
    report.kv_blocks_used_after = s.kv_blocks_used;
    if (s.kv_blocks_used != 0)
      report.problems.push_back(
          fmt::format("{} KV blocks still in use after every request ended", s.kv_blocks_used));
  }
  report.ttft_s = Percentiles::of(ttft);
  report.tpot_s = Percentiles::of(tpot);
  report.e2e_s = Percentiles::of(e2e);
  report.server_queue_s = Percentiles::of(queue);
  return report;
}

}  // namespace shardserve::client
