#include "coordinator/runtime/request_io.h"

#include <cmath>
#include <fstream>
#include <set>

#include "common/error.h"
#include "coordinator/detokenizer_stream.h"

namespace shardserve::runtime {
namespace {

template <typename T>
T get(const nlohmann::json& j, const char* key, const std::string& where, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      require(it->is_number_integer(), "{}: \"{}\" must be an integer", where, key);
    } else if constexpr (std::is_floating_point_v<T>) {
      require(it->is_number(), "{}: \"{}\" must be a number", where, key);
    } else if constexpr (std::is_same_v<T, bool>) {
      require(it->is_boolean(), "{}: \"{}\" must be true or false", where, key);
    }
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: \"{}\": {}", where, key, e.what());
  }
}

std::vector<int32_t> id_array(const nlohmann::json& j, const char* key, const std::string& where) {
  std::vector<int32_t> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  require(it->is_array(), "{}: \"{}\" must be an array of token ids", where, key);
  for (std::size_t i = 0; i < it->size(); ++i) {
    const auto& v = (*it)[i];
    require(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX,
            "{}: \"{}\"[{}] = {} is not a token id", where, key, i, v.dump());
    out.push_back(v.get<int32_t>());
  }
  return out;
}

}  // namespace

coordinator::RequestSpec parse_request(const nlohmann::json& j, const std::string& where,
                                       const model::Tokenizer* tokenizer) {
  require(j.is_object(), "{}: a request must be a JSON object", where);
  static const std::set<std::string> known = {
      "id",          "prompt_ids",        "prompt",           "max_tokens",
      "temperature", "top_p",             "top_k",            "min_p",
      "seed",        "repetition_penalty", "frequency_penalty", "presence_penalty",
      "logprobs",    "stop_token_ids",    "ignore_eos",       "priority",
      "stop"};
  for (const auto& [k, _] : j.items())
    require(known.count(k) != 0, "{}: unknown request field \"{}\"", where, k);
  coordinator::RequestSpec s;
  auto id = j.find("id");
  require(id != j.end() && id->is_string() && !id->get<std::string>().empty(),
          "{}: \"id\" must be a non-empty string", where);
  s.request_id = id->get<std::string>();
  const std::string w = fmt::format("{} (request '{}')", where, s.request_id);
  if (j.contains("prompt")) {
    require(!j.contains("prompt_ids"), "{}: give \"prompt\" or \"prompt_ids\", not both", w);
    require(j["prompt"].is_string(), "{}: \"prompt\" must be a string", w);
    require(tokenizer != nullptr,
            "{}: a text prompt needs the model's tokenizer, and none was loaded from the model "
            "directory: give \"prompt_ids\"",
            w);
    try {
      s.prompt_token_ids = tokenizer->encode(j["prompt"].get<std::string>(), true);
    } catch (const Error& e) {
      fail("{}: \"prompt\": {}", w, e.what());
    }
    require(!s.prompt_token_ids.empty(), "{}: \"prompt\" encodes to no tokens", w);
  } else {
    s.prompt_token_ids = id_array(j, "prompt_ids", w);
    require(!s.prompt_token_ids.empty(), "{}: \"prompt_ids\" is missing or empty", w);
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const auto& stop = j["stop"];
    require(stop.is_array() || stop.is_string(), "{}: \"stop\" must be a string or an array of strings", w);
    for (const auto& x : stop.is_array() ? stop : nlohmann::json::array({stop})) {
      require(x.is_string() && !x.get<std::string>().empty(),
              "{}: \"stop\" entries must be non-empty strings", w);
      s.stop_strings.push_back(x.get<std::string>());
    }
    require(tokenizer != nullptr || s.stop_strings.empty(),
            "{}: stop strings need the model's tokenizer, and none was loaded", w);
  }
  if (tokenizer != nullptr) s.text_stream = std::make_unique<coordinator::DetokenizerStream>(*tokenizer);
  if (j.contains("max_tokens") && !j["max_tokens"].is_null())
    s.max_tokens = get<int32_t>(j, "max_tokens", w, 0);
  auto& p = s.sampling;
  p.temperature = get<float>(j, "temperature", w, p.temperature);
  p.top_p = get<float>(j, "top_p", w, p.top_p);
  p.top_k = get<int32_t>(j, "top_k", w, p.top_k);
  p.min_p = get<float>(j, "min_p", w, p.min_p);
  p.seed = get<uint64_t>(j, "seed", w, p.seed);
  p.repetition_penalty = get<float>(j, "repetition_penalty", w, p.repetition_penalty);
  p.frequency_penalty = get<float>(j, "frequency_penalty", w, p.frequency_penalty);
  p.presence_penalty = get<float>(j, "presence_penalty", w, p.presence_penalty);
  p.logprobs = get<int32_t>(j, "logprobs", w, p.logprobs);
  require(std::isfinite(p.temperature) && p.temperature >= 0, "{}: temperature = {} must be >= 0",
          w, p.temperature);
  require(p.top_p > 0 && p.top_p <= 1, "{}: top_p = {} must be in (0, 1]", w, p.top_p);
  require(p.top_k >= 0, "{}: top_k = {} must be >= 0", w, p.top_k);
  require(p.min_p >= 0 && p.min_p < 1, "{}: min_p = {} must be in [0, 1)", w, p.min_p);
  require(p.repetition_penalty > 0, "{}: repetition_penalty = {} must be > 0", w,
          p.repetition_penalty);
  require(std::isfinite(p.frequency_penalty) && std::isfinite(p.presence_penalty),
          "{}: penalties must be finite", w);
  require(p.logprobs >= 0 && p.logprobs <= 20, "{}: logprobs = {} must be in [0, 20]", w, p.logprobs);
  s.stop_token_ids = id_array(j, "stop_token_ids", w);
  s.ignore_eos = get<bool>(j, "ignore_eos", w, false);
  s.priority = get<int32_t>(j, "priority", w, 0);
  return s;
}

std::vector<coordinator::RequestSpec> read_requests(const std::filesystem::path& path,
                                                    const model::Tokenizer* tokenizer) {
  std::ifstream in(path);
  require(static_cast<bool>(in), "requests file {} cannot be read", path.string());
  std::vector<coordinator::RequestSpec> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    const std::string where = fmt::format("{}:{}", path.string(), n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}: not JSON: {}", where, e.what());
    }
    auto spec = parse_request(j, where, tokenizer);
    spec.arrival_time = n;
    out.push_back(std::move(spec));
  }
  return out;
}

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(used == item.size() && !item.empty() && v >= 0 && v <= INT32_MAX,
            "{} = '{}': '{}' is not a token id (want comma-separated ids)", what, text, item);
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

void OutputCollector::expect(const std::string& request_id, int replica, bool logprobs,
                             Clock::time_point submitted) {
  Partial& p = partial_[request_id];
  p.replica = replica;
  p.logprobs = logprobs;
  p.submitted = submitted;
}

std::optional<nlohmann::json> OutputCollector::add(const coordinator::RequestOutput& out,
                                                   Clock::time_point now) {
  Partial& p = partial_[out.request_id];
  if (!p.first_token && !out.new_tokens.empty()) p.first_token = now;
  for (const auto& t : out.new_tokens) {
    p.ids.push_back(t.token_id);
    p.logprob_values.push_back(t.logprob);
  }
  p.text += out.new_text;
  if (!out.finished) return std::nullopt;
  nlohmann::json j = {{"id", out.request_id},
                      {"replica", p.replica},
                      {"prompt_tokens", out.num_prompt_tokens},
                      {"output_ids", p.ids},
                      {"output_tokens", p.ids.size()},
                      {"finish_reason", out.finish_reason_string()},
                      {"finish_detail", out.finish_detail},
                      {"text", p.text}};
  if (p.logprobs) j["logprobs"] = p.logprob_values;
  const auto seconds = [&](Clock::time_point t) {
    return std::chrono::duration<double>(t - p.submitted).count();
  };
  j["ttft_s"] = p.first_token ? nlohmann::json(seconds(*p.first_token))
                               : nlohmann::json(nullptr);  // null: no token came
  j["latency_s"] = seconds(now);
  partial_.erase(out.request_id);
  ++finished_;
  return j;
}

}  // namespace shardserve::runtime
