#include "tools/plan/benchmark_result.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace shardserve::planner {
namespace {

int64_t parse_key(const std::string& key, const std::string& field, const std::string& source) {
  size_t used = 0;
  int64_t value = -1;
  try {
    value = std::stoll(key, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == key.size() && value > 0, "{}: {} key '{}' is not a positive integer", source,
          field, key);
  return value;
}

double positive_number(const nlohmann::json& value, const std::string& what,
                       const std::string& source) {
  require(value.is_number(), "{}: {} must be a number, got {}", source, what, value.dump());
  const double v = value.get<double>();
  require(v > 0, "{}: {} must be positive, got {}", source, what, v);
  return v;
}

// An object of positive-integer keys to positive numbers, or (when bare_allowed) one number.
std::map<int64_t, double> number_map(const nlohmann::json& json, const std::string& field,
                                     const std::string& source, bool bare_allowed) {
  std::map<int64_t, double> out;
  if (!json.contains(field) || json[field].is_null()) return out;
  const nlohmann::json& value = json[field];
  if (bare_allowed && value.is_number()) {
    out[0] = positive_number(value, field, source);
    return out;
  }
  require(value.is_object(), "{}: {} must be an object of integer keys to numbers{}", source,
          field, bare_allowed ? " or a number" : "");
  for (const auto& [key, v] : value.items()) {
    out[parse_key(key, field, source)] = positive_number(v, field + "." + key, source);
  }
  return out;
}

std::optional<double> optional_number(const nlohmann::json& json, const std::string& field,
                                      const std::string& source) {
  if (!json.contains(field) || json[field].is_null()) return std::nullopt;
  return positive_number(json[field], field, source);
}

std::optional<int64_t> optional_count(const nlohmann::json& json, const std::string& field,
                                      const std::string& source) {
  if (!json.contains(field) || json[field].is_null()) return std::nullopt;
  const nlohmann::json& v = json[field];
  require(v.is_number_integer() && v.get<int64_t>() > 0, "{}: {} must be a positive integer",
          source, field);
  return v.get<int64_t>();
}

}  // namespace

BenchmarkResult parse_benchmark_result(const nlohmann::json& json, const std::string& source) {
  require(json.is_object(), "{}: a benchmark result must be a JSON object", source);
  BenchmarkResult r;
  r.source = source;
  require(json.contains("gpu") && json["gpu"].is_string(), "{}: missing string key 'gpu'",
          source);
  r.gpu = json["gpu"].get<std::string>();
  r.tp = optional_count(json, "tp", source).value_or(0);
  require(r.tp > 0, "{}: missing key 'tp'", source);
  if (json.contains("date") && json["date"].is_string()) r.date = json["date"].get<std::string>();
  r.copy_tbps = optional_number(json, "copy_tbps", source);
  r.bf16_tflops = optional_number(json, "bf16_tflops", source);
  r.decode_ms_per_token = number_map(json, "decode_ms_per_token", source, false);
  r.roofline_ms_per_token = number_map(json, "roofline_ms_per_token", source, true);
  r.step_ms_by_batch = number_map(json, "step_ms_by_batch", source, false);
  r.prefill_tokens_per_s = number_map(json, "prefill_tokens_per_s", source, true);
  r.step_context = optional_count(json, "step_context", source);
  r.prefill_prompt_tokens = optional_count(json, "prefill_prompt_tokens", source);
  return r;
}

BenchmarkResult load_benchmark_result(const std::filesystem::path& path) {
  std::ifstream in(path);
  require(in.good(), "cannot open benchmark result {}", path.string());
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("benchmark result {} is not valid JSON: {}", path.string(), e.what());
  }
  return parse_benchmark_result(json, path.string());
}

}  // namespace shardserve::planner
