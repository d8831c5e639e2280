#pragma once
// llmctl bench: a load generator over the ZeroMQ protocol. Requests arrive as a Poisson process
// at --request-rate (or all at once), at most --concurrency in flight, with prompt and output
// lengths drawn from the given distributions; it reports throughput and the TTFT, TPOT and
// end-to-end latency percentiles, as a table and as JSON. With --check it also verifies that
// every request got its full output (and that cancelled ones were cancelled and the KV pool is
// empty afterwards) and fails otherwise.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "api/client.h"

namespace shardserve::client {

// "32" (fixed), "uniform:16:64" (inclusive), "normal:48:8" (rounded, at least 1).
struct LengthDistribution {
  enum class Kind { kFixed, kUniform, kNormal } kind = Kind::kFixed;
  double a = 32, b = 0;
  static LengthDistribution parse(const std::string& text, const std::string& what);
  int32_t sample(std::mt19937_64& rng) const;
  std::string describe() const;
};

struct BenchOptions {
  std::string endpoint;
  api::ClientOptions client;  // CURVE key files
  int32_t num_requests = 100;
  int32_t concurrency = 16;
  double request_rate = 0;  // requests/s; 0 = all at once (subject to concurrency)
  LengthDistribution prompt_len{LengthDistribution::Kind::kFixed, 32, 0};
  LengthDistribution output_len{LengthDistribution::Kind::kFixed, 64, 0};
  std::string prompt;  // when set, every request's prompt is this text (prompt_len unused)
  float temperature = 0.0f;
  bool ignore_eos = true;
  uint64_t seed = 0;
  double cancel_fraction = 0.0;  // round(fraction * N) requests are cancelled mid-stream
  int32_t cancel_after_tokens = 1;
  bool check = false;
  double timeout_s = 300.0;  // the whole run
  std::string id_prefix = "bench";
};

struct Percentiles {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
  static Percentiles of(std::vector<double> values);
  nlohmann::json to_json() const;
};

struct BenchReport {
  int32_t requests = 0, completed = 0, cancelled = 0, failed = 0, overloaded = 0, unanswered = 0;
  double duration_s = 0;
  int64_t prompt_tokens = 0, output_tokens = 0;
  Percentiles ttft_s, tpot_s, e2e_s, server_queue_s;
  std::vector<std::string> problems;  // --check failures, and error messages (first few)
  std::optional<int32_t> kv_blocks_used_after;
  nlohmann::json options;
  nlohmann::json to_json() const;
  std::string table() const;
  bool ok() const { return problems.empty(); }
};

BenchReport run_bench(const BenchOptions& options);

}  // namespace shardserve::client
