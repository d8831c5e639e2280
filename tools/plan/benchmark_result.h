#pragma once
// A benchmark run's measured numbers (bench/results/<model>-<gpu>-tp<N>.json, written by the
// benchmark tool), read so the planner can print them next to its predictions. Only the keys
// the planner compares are typed; the rest (serving, ...) are ignored.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace shardserve::planner {

struct BenchmarkResult {
  std::string source;  // the file, for the report
  std::string gpu;
  int64_t tp = 1;
  std::string date;
  std::optional<double> copy_tbps;    // measured device-to-device copy bandwidth
  std::optional<double> bf16_tflops;  // measured dense bf16 GEMM rate
  std::map<int64_t, double> decode_ms_per_token;    // context -> ms, batch 1
  std::map<int64_t, double> roofline_ms_per_token;  // the benchmark's own prediction
  std::map<int64_t, double> step_ms_by_batch;       // batch -> ms per decode step
  // Prompt length -> tokens/s. A bare number in the file is stored under key 0 ("the prompt
  // length the benchmark used"), which the comparison maps to prefill_prompt_tokens.
  std::map<int64_t, double> prefill_tokens_per_s;
  std::optional<int64_t> step_context;           // context of step_ms_by_batch, if recorded
  std::optional<int64_t> prefill_prompt_tokens;  // prompt of a bare prefill_tokens_per_s
};

// `source` names the file in error messages. Requires gpu and tp; every other key is optional
// but must have the documented type when present.
BenchmarkResult parse_benchmark_result(const nlohmann::json& json, const std::string& source);
BenchmarkResult load_benchmark_result(const std::filesystem::path& path);

}  // namespace shardserve::planner
