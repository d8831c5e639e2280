#include "api/protocol.h"

#include "api/bounded_json.h"

#include <fmt/format.h>

#include <array>
#include <cmath>
#include <limits>
#include <set>
#include <type_traits>
#include <utility>

namespace shardserve::api {
namespace {

using nlohmann::json;

constexpr std::array<std::pair<ErrorCode, std::string_view>, 11> kErrorNames{{
    {ErrorCode::kMalformed, "malformed"},
    {ErrorCode::kUnsupportedVersion, "unsupported_version"},
    {ErrorCode::kInvalidRequest, "invalid_request"},
    {ErrorCode::kUnknownRequest, "unknown_request"},
    {ErrorCode::kDuplicateRequest, "duplicate_request"},
    {ErrorCode::kOverloaded, "overloaded"},
    {ErrorCode::kShuttingDown, "shutting_down"},
    {ErrorCode::kRejected, "rejected"},
    {ErrorCode::kTimeout, "timeout"},
    {ErrorCode::kUnavailable, "unavailable"},
    {ErrorCode::kInternal, "internal"},
}};

// A value as it appears in an error message: JSON text, cut at 60 characters.
std::string shown(const json& value) {
  std::string s = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

const char* json_type(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  return v.type_name();
}

[[noreturn]] void invalid(const std::string& field, const std::string& message) {
  throw ProtocolError(ErrorCode::kInvalidRequest, field, message);
}

[[noreturn]] void wrong_type(const std::string& field, const char* expected, const json& v) {
  invalid(field, fmt::format("{} must be {}, got {} {}", field, expected, json_type(v), shown(v)));
}

// Reads the fields of one client message object; remembers which keys were read so that the
// rest can be reported as unknown.
class FieldReader {
 public:
  FieldReader(const json& object, std::string prefix) : obj_(object), prefix_(std::move(prefix)) {}

  std::string path(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : fmt::format("{}.{}", prefix_, key);
  }

  // The value, or nullptr when the key is absent or null (null = "not given").
  const json* find(std::string_view key) {
    known_.insert(std::string(key));
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::optional<std::string> string(std::string_view key) {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong_type(path(key), "a string", *v);
    return v->get<std::string>();
  }
  std::optional<bool> boolean(std::string_view key) {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong_type(path(key), "true or false", *v);
    return v->get<bool>();
  }
  std::optional<double> number(std::string_view key) {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) wrong_type(path(key), "a number", *v);
    return v->get<double>();
  }
  // A number a float holds (the sampling parameters are floats): larger magnitudes are refused
  // rather than converted, which would be undefined behaviour.
  std::optional<float> real(std::string_view key) {
    const std::optional<double> v = number(key);
    if (!v) return std::nullopt;
    if (!(std::fabs(*v) <= std::numeric_limits<float>::max()))
      invalid(path(key), fmt::format("{} must be a number of magnitude at most {}, got {}",
                                     path(key), std::numeric_limits<float>::max(), *v));
    return static_cast<float>(*v);
  }
  std::optional<int32_t> int32(std::string_view key) {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return as_int32(*v, path(key));
  }
  std::optional<uint64_t> uint64(std::string_view key) {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (v->is_number_integer() && v->get<int64_t>() >= 0)
      return static_cast<uint64_t>(v->get<int64_t>());
    wrong_type(path(key), "an integer in [0, 2^64)", *v);
  }

  static int32_t as_int32(const json& v, const std::string& field) {
    if (!v.is_number_integer()) wrong_type(field, "an integer", v);
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
        invalid(field, fmt::format("{} must fit in 32 bits, got {}", field, shown(v)));
      return static_cast<int32_t>(v.get<uint64_t>());
    }
    const int64_t x = v.get<int64_t>();
    if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
      invalid(field, fmt::format("{} must fit in 32 bits, got {}", field, shown(v)));
    return static_cast<int32_t>(x);
  }

  std::optional<std::vector<int32_t>> int_list(std::string_view key) {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array()) wrong_type(path(key), "an array of integers", *v);
    std::vector<int32_t> out;
    out.reserve(v->size());
    for (std::size_t i = 0; i < v->size(); ++i)
      out.push_back(as_int32((*v)[i], fmt::format("{}[{}]", path(key), i)));
    return out;
  }

  // A string or an array of strings (OpenAI's "stop").
  std::optional<std::vector<std::string>> strings(std::string_view key) {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_string()) return std::vector<std::string>{v->get<std::string>()};
    if (!v->is_array()) wrong_type(path(key), "a string or an array of strings", *v);
    std::vector<std::string> out;
    for (std::size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (!e.is_string()) wrong_type(fmt::format("{}[{}]", path(key), i), "a string", e);
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  // Every key not read: an error naming the first (in the object's key order).
  void reject_unknown(std::string_view what) const {
    for (auto it = obj_.begin(); it != obj_.end(); ++it)
      if (!known_.count(it.key()))
        invalid(path(it.key()), fmt::format("unknown field '{}' in {}", path(it.key()), what));
  }

 private:
  const json& obj_;
  std::string prefix_;
  std::set<std::string, std::less<>> known_;
};

json parse_object(std::string_view frame) {
  json j;
  try {
    j = parse_bounded_json(frame);
  } catch (const JsonTooDeep& e) {
    throw ProtocolError(ErrorCode::kMalformed, "", e.what());
  }
  if (j.is_discarded())
    throw ProtocolError(ErrorCode::kMalformed, "",
                        fmt::format("the frame is not valid JSON ({} bytes)", frame.size()));
  if (!j.is_object())
    throw ProtocolError(ErrorCode::kMalformed, "",
                        fmt::format("a message must be a JSON object, got {}", j.type_name()));
  return j;
}

void check_version(const json& j) {
  auto it = j.find("v");
  if (it == j.end())
    throw ProtocolError(
        ErrorCode::kUnsupportedVersion, "v",
        fmt::format("missing protocol version \"v\" (this service speaks v{})", kProtocolVersion));
  if (!it->is_number_integer() || it->get<int64_t>() != kProtocolVersion)
    throw ProtocolError(ErrorCode::kUnsupportedVersion, "v",
                        fmt::format("unsupported protocol version v={} (this service speaks v{})",
                                    shown(*it), kProtocolVersion));
}

std::string message_type(const json& j) {
  auto it = j.find("type");
  if (it == j.end()) throw ProtocolError(ErrorCode::kMalformed, "type", "missing message \"type\"");
  if (!it->is_string())
    throw ProtocolError(ErrorCode::kMalformed, "type",
                        fmt::format("\"type\" must be a string, got {}", shown(*it)));
  return it->get<std::string>();
}

std::vector<ChatMessage> read_messages(const json& v) {
  if (!v.is_array()) wrong_type("messages", "an array of {\"role\", \"content\"} objects", v);
  std::vector<ChatMessage> out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string where = fmt::format("messages[{}]", i);
    if (!v[i].is_object()) wrong_type(where, "an object with \"role\" and \"content\"", v[i]);
    FieldReader r(v[i], where);
    ChatMessage m;
    auto role = r.string("role");
    if (!role) invalid(r.path("role"), fmt::format("{} is required", r.path("role")));
    auto content = r.string("content");
    if (!content) invalid(r.path("content"), fmt::format("{} is required", r.path("content")));
    r.reject_unknown(where);
    m.role = *role;
    m.content = *content;
    out.push_back(std::move(m));
  }
  return out;
}

SubmitRequest read_submit(const json& j) {
  FieldReader r(j, "");
  r.find("v");
  r.find("type");
  SubmitRequest s;
  auto id = r.string("id");
  if (!id) invalid("id", "id is required (a string naming the request)");
  s.id = *id;
  s.prompt = r.string("prompt");
  s.prompt_ids = r.int_list("prompt_ids");
  if (const json* m = r.find("messages")) s.messages = read_messages(*m);
  const int forms =
      int(s.prompt.has_value()) + int(s.prompt_ids.has_value()) + int(s.messages.has_value());
  if (forms == 0) invalid("prompt", "one of prompt, prompt_ids or messages is required");
  if (forms > 1)
    invalid(s.prompt_ids && s.prompt ? "prompt_ids" : "messages",
            "give only one of prompt, prompt_ids and messages");
  if (auto v = r.boolean("add_special_tokens")) s.add_special_tokens = *v;
  if (auto v = r.boolean("add_generation_prompt")) s.add_generation_prompt = *v;
  s.max_tokens = r.int32("max_tokens");
  if (auto v = r.real("temperature")) s.temperature = *v;
  if (auto v = r.real("top_p")) s.top_p = *v;
  if (auto v = r.int32("top_k")) s.top_k = *v;
  if (auto v = r.real("min_p")) s.min_p = *v;
  if (auto v = r.real("repetition_penalty")) s.repetition_penalty = *v;
  if (auto v = r.real("frequency_penalty")) s.frequency_penalty = *v;
  if (auto v = r.real("presence_penalty")) s.presence_penalty = *v;
  if (auto v = r.uint64("seed")) s.seed = *v;
  if (auto v = r.strings("stop")) s.stop = std::move(*v);
  if (auto v = r.int_list("stop_token_ids")) s.stop_token_ids = std::move(*v);
  if (auto v = r.int32("logprobs")) s.logprobs = *v;
  if (auto v = r.boolean("ignore_eos")) s.ignore_eos = *v;
  if (auto v = r.int32("priority")) s.priority = *v;
  if (auto v = r.boolean("stream")) s.stream = *v;
  s.timeout_s = r.number("timeout_s");
  r.reject_unknown("submit");
  return s;
}

// ----- lenient server-message reading --------------------------------------------------------

// v as a T, or nullopt where nlohmann's own conversion would be undefined or silently wrong: an
// integer field must hold an integer T can represent (nlohmann casts a double such as 8.9e20
// straight to int, which is undefined behaviour), a float field a number within T's range, a
// list of integers (token ids, bytes) integers each element can represent.
template <typename T>
std::optional<T> checked_value(const json& v) {
  if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::string>) {
    return v.get<T>();
  } else if constexpr (std::is_integral_v<T>) {
    if (v.is_number_unsigned()) {
      const uint64_t x = v.get<uint64_t>();
      if (std::in_range<T>(x)) return static_cast<T>(x);
    } else if (v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      if (std::in_range<T>(x)) return static_cast<T>(x);
    }
    return std::nullopt;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) return std::nullopt;
    const double x = v.get<double>();
    if (std::isfinite(x) && std::fabs(x) > static_cast<double>(std::numeric_limits<T>::max()))
      return std::nullopt;
    return static_cast<T>(x);
  } else {  // std::vector<E>: each element checked as an E
    using E = typename T::value_type;
    static_assert(std::is_same_v<T, std::vector<E>> && std::is_integral_v<E>);
    if (!v.is_array()) return std::nullopt;
    T out;
    out.reserve(v.size());
    for (const json& e : v) {
      const auto x = checked_value<E>(e);
      if (!x) return std::nullopt;
      out.push_back(*x);
    }
    return out;
  }
}

template <typename T>
std::optional<T> get_opt(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  std::optional<T> v;
  try {
    v = checked_value<T>(*it);
  } catch (const json::exception&) {
  }
  if (!v) {
    throw ProtocolError(
        ErrorCode::kMalformed, key,
        fmt::format("server message field '{}' has the wrong type: {}", key, shown(*it)));
  }
  return v;
}

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
  std::optional<T> v = get_opt<T>(j, key);
  return v ? std::move(*v) : std::move(fallback);
}

TokenLogprob token_logprob_from_json(const json& j) {
  TokenLogprob t;
  t.token_id = get_or<int32_t>(j, "token_id", 0);
  t.logprob = get_or<float>(j, "logprob", 0.0f);
  t.token = get_or<std::string>(j, "token", "");
  t.bytes = get_or<std::vector<uint8_t>>(j, "bytes", {});
  if (auto it = j.find("top"); it != j.end() && it->is_array())
    for (const auto& e : *it)
      t.top.push_back({get_or<int32_t>(e, "token_id", 0), get_or<float>(e, "logprob", 0.0f),
                       get_or<std::string>(e, "token", "")});
  return t;
}

std::vector<TokenLogprob> logprobs_from_json(const json& j, const char* key) {
  std::vector<TokenLogprob> out;
  if (auto it = j.find(key); it != j.end() && it->is_array())
    for (const auto& e : *it) out.push_back(token_logprob_from_json(e));
  return out;
}

json logprobs_to_json(const std::vector<TokenLogprob>& v) {
  json a = json::array();
  for (const auto& t : v) a.push_back(to_json(t));
  return a;
}

json optional_json(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

std::string_view to_string(ErrorCode code) {
  for (const auto& [c, name] : kErrorNames)
    if (c == code) return name;
  return "internal";
}

std::optional<ErrorCode> parse_error_code(std::string_view text) {
  for (const auto& [c, name] : kErrorNames)
    if (name == text) return c;
  return std::nullopt;
}

ClientMessage decode_client_message(std::string_view frame) {
  const json j = parse_object(frame);
  check_version(j);
  const std::string type = message_type(j);
  if (type == "submit") return read_submit(j);
  FieldReader r(j, "");
  r.find("v");
  r.find("type");
  if (type == "cancel") {
    CancelRequest c;
    auto id = r.string("id");
    if (!id) invalid("id", "id is required (the request to cancel)");
    c.id = *id;
    c.client = r.string("client");
    r.reject_unknown("cancel");
    return c;
  }
  if (type == "status") {
    StatusRequest s;
    if (auto v = r.boolean("requests")) s.requests = *v;
    r.reject_unknown("status");
    return s;
  }
  if (type == "health") {
    r.reject_unknown("health");
    return HealthRequest{};
  }
  if (type == "model_info") {
    r.reject_unknown("model_info");
    return ModelInfoRequest{};
  }
  throw ProtocolError(ErrorCode::kMalformed, "type",
                      fmt::format("unknown message type '{}' (expected submit, cancel, status, "
                                  "health or model_info)",
                                  type.size() > 40 ? type.substr(0, 40) + "..." : type));
}

std::optional<std::string> peek_request_id(std::string_view frame) {
  json j;
  try {
    j = parse_bounded_json(frame);
  } catch (const JsonTooDeep&) {
    return std::nullopt;
  }
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto it = j.find("id");
  if (it == j.end() || !it->is_string()) return std::nullopt;
  std::string id = it->get<std::string>();
  if (id.empty() || id.size() > 128) return std::nullopt;
  return id;
}

json to_json(const SubmitRequest& s) {
  json j{{"v", kProtocolVersion}, {"type", "submit"}, {"id", s.id}};
  if (s.prompt) j["prompt"] = *s.prompt;
  if (s.prompt_ids) j["prompt_ids"] = *s.prompt_ids;
  if (s.messages) {
    json a = json::array();
    for (const auto& m : *s.messages) a.push_back({{"role", m.role}, {"content", m.content}});
    j["messages"] = a;
  }
  const SubmitRequest d;
  if (s.add_special_tokens != d.add_special_tokens) j["add_special_tokens"] = s.add_special_tokens;
  if (s.add_generation_prompt != d.add_generation_prompt)
    j["add_generation_prompt"] = s.add_generation_prompt;
  if (s.max_tokens) j["max_tokens"] = *s.max_tokens;
  j["temperature"] = s.temperature;
  if (s.top_p != d.top_p) j["top_p"] = s.top_p;
  if (s.top_k != d.top_k) j["top_k"] = s.top_k;
  if (s.min_p != d.min_p) j["min_p"] = s.min_p;
  if (s.repetition_penalty != d.repetition_penalty) j["repetition_penalty"] = s.repetition_penalty;
  if (s.frequency_penalty != d.frequency_penalty) j["frequency_penalty"] = s.frequency_penalty;
  if (s.presence_penalty != d.presence_penalty) j["presence_penalty"] = s.presence_penalty;
  if (s.seed != d.seed) j["seed"] = s.seed;
  if (!s.stop.empty()) j["stop"] = s.stop;
  if (!s.stop_token_ids.empty()) j["stop_token_ids"] = s.stop_token_ids;
  if (s.logprobs != d.logprobs) j["logprobs"] = s.logprobs;
  if (s.ignore_eos) j["ignore_eos"] = true;
  if (s.priority != d.priority) j["priority"] = s.priority;
  if (s.stream != d.stream) j["stream"] = s.stream;
  if (s.timeout_s) j["timeout_s"] = *s.timeout_s;
  return j;
}

std::string encode(const ClientMessage& message) {
  const json j = std::visit(
      [](const auto& m) -> json {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, SubmitRequest>) {
          return to_json(m);
        } else if constexpr (std::is_same_v<T, CancelRequest>) {
          json c{{"v", kProtocolVersion}, {"type", "cancel"}, {"id", m.id}};
          if (m.client) c["client"] = *m.client;
          return c;
        } else if constexpr (std::is_same_v<T, StatusRequest>) {
          json s{{"v", kProtocolVersion}, {"type", "status"}};
          if (m.requests) s["requests"] = true;
          return s;
        } else if constexpr (std::is_same_v<T, HealthRequest>) {
          return json{{"v", kProtocolVersion}, {"type", "health"}};
        } else {
          return json{{"v", kProtocolVersion}, {"type", "model_info"}};
        }
      },
      message);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json to_json(const TokenLogprob& t) {
  json top = json::array();
  for (const auto& a : t.top)
    top.push_back({{"token_id", a.token_id}, {"logprob", a.logprob}, {"token", a.token}});
  return json{{"token_id", t.token_id},
              {"logprob", t.logprob},
              {"token", t.token},
              {"bytes", t.bytes},
              {"top", top}};
}

std::string encode(const ServerMessage& message) {
  const json j = std::visit(
      [](const auto& m) -> json {
        using T = std::decay_t<decltype(m)>;
        json o{{"v", kProtocolVersion}};
        if constexpr (std::is_same_v<T, Accepted>) {
          o["type"] = "accepted";
          o["id"] = m.id;
          o["client"] = m.client;
          o["prompt_tokens"] = m.prompt_tokens;
          o["max_tokens"] = m.max_tokens;
        } else if constexpr (std::is_same_v<T, Delta>) {
          o["type"] = "delta";
          o["id"] = m.id;
          o["text"] = m.text;
          o["token_ids"] = m.token_ids;
          if (!m.logprobs.empty()) o["logprobs"] = logprobs_to_json(m.logprobs);
        } else if constexpr (std::is_same_v<T, Final>) {
          o["type"] = "final";
          o["id"] = m.id;
          o["finish_reason"] = m.finish_reason;
          o["finish_detail"] = m.finish_detail;
          if (m.stop_token_id) o["stop_token_id"] = *m.stop_token_id;
          if (m.stop_string) o["stop_string"] = *m.stop_string;
          if (m.text) o["text"] = *m.text;
          if (m.token_ids) o["token_ids"] = *m.token_ids;
          if (m.logprobs) o["logprobs"] = logprobs_to_json(*m.logprobs);
          o["usage"] = {{"prompt_tokens", m.usage.prompt_tokens},
                        {"completion_tokens", m.usage.completion_tokens},
                        {"cached_tokens", m.usage.cached_tokens},
                        {"total_tokens", m.usage.total_tokens()}};
          o["timings"] = {{"queue_s", optional_json(m.timings.queue_s)},
                          {"ttft_s", optional_json(m.timings.ttft_s)},
                          {"total_s", m.timings.total_s},
                          {"tpot_s", optional_json(m.timings.tpot_s)}};
        } else if constexpr (std::is_same_v<T, ErrorReply>) {
          o["type"] = "error";
          o["id"] = m.id ? json(*m.id) : json(nullptr);
          o["code"] = to_string(m.code);
          o["field"] = m.field.empty() ? json(nullptr) : json(m.field);
          o["message"] = m.message;
          if (m.retry_after_s) o["retry_after_s"] = *m.retry_after_s;
        } else if constexpr (std::is_same_v<T, StatusReply>) {
          o["type"] = "status";
          o["waiting"] = m.waiting;
          o["running"] = m.running;
          o["kv_blocks_used"] = m.kv_blocks_used;
          o["kv_blocks_total"] = m.kv_blocks_total;
          o["kv_usage"] = m.kv_usage;
          o["live_requests"] = m.live_requests;
          o["max_live_requests"] = m.max_live_requests;
          o["clients"] = m.clients;
          o["admitting"] = m.admitting;
          json reps = json::array();
          for (const auto& r : m.replicas)
            reps.push_back({{"running", r.running},
                            {"waiting", r.waiting},
                            {"kv_blocks_used", r.kv_blocks_used},
                            {"kv_blocks_total", r.kv_blocks_total},
                            {"kv_blocks_cached", r.kv_blocks_cached},
                            {"steps", r.steps}});
          o["replicas"] = reps;
          o["counters"] = {{"submitted", m.submitted},
                           {"finished", m.finished},
                           {"cancelled", m.cancelled},
                           {"rejected", m.rejected},
                           {"unavailable", m.unavailable},
                           {"overloaded", m.overloaded},
                           {"invalid", m.invalid},
                           {"disconnect_cancels", m.disconnect_cancels},
                           {"deadline_timeouts", m.deadline_timeouts},
                           {"idle_timeouts", m.idle_timeouts}};
          if (m.requests) {
            json a = json::array();
            for (const auto& r : *m.requests)
              a.push_back({{"client", r.client},
                           {"id", r.id},
                           {"state", r.state},
                           {"prompt_tokens", r.prompt_tokens},
                           {"output_tokens", r.output_tokens},
                           {"age_s", r.age_s}});
            o["requests"] = a;
          }
        } else if constexpr (std::is_same_v<T, HealthReply>) {
          o["type"] = "health";
          o["status"] = m.status;
          o["uptime_s"] = m.uptime_s;
        } else if constexpr (std::is_same_v<T, ModelInfo>) {
          o["type"] = "model_info";
          o["name"] = m.name;
          o["vocab_size"] = m.vocab_size;
          o["max_model_len"] = m.max_model_len;
          o["block_size"] = m.block_size;
          o["kv_blocks_per_replica"] = m.kv_blocks_per_replica;
          o["num_replicas"] = m.num_replicas;
          o["max_num_seqs"] = m.max_num_seqs;
          o["bos_token_id"] = m.bos_token_id ? json(*m.bos_token_id) : json(nullptr);
          o["eos_token_ids"] = m.eos_token_ids;
          o["text"] = m.text;
          o["chat_format"] = m.chat_format.empty() ? json(nullptr) : json(m.chat_format);
          if (!m.chat_format_error.empty()) o["chat_format_error"] = m.chat_format_error;
          o["max_request_seconds"] = m.max_request_seconds;
          o["stream_idle_timeout_s"] = m.stream_idle_timeout_s;
        } else {
          o["type"] = "heartbeat";
        }
        return o;
      },
      message);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ServerMessage decode_server_message(std::string_view frame) {
  const json j = parse_object(frame);
  check_version(j);
  const std::string type = message_type(j);
  if (type == "accepted")
    return Accepted{get_or<std::string>(j, "id", ""), get_or<std::string>(j, "client", ""),
                    get_or<int32_t>(j, "prompt_tokens", 0), get_or<int32_t>(j, "max_tokens", 0)};
  if (type == "delta")
    return Delta{get_or<std::string>(j, "id", ""), get_or<std::string>(j, "text", ""),
                 get_or<std::vector<int32_t>>(j, "token_ids", {}),
                 logprobs_from_json(j, "logprobs")};
  if (type == "final") {
    Final f;
    f.id = get_or<std::string>(j, "id", "");
    f.finish_reason = get_or<std::string>(j, "finish_reason", "");
    f.finish_detail = get_or<std::string>(j, "finish_detail", "");
    f.stop_token_id = get_opt<int32_t>(j, "stop_token_id");
    f.stop_string = get_opt<std::string>(j, "stop_string");
    f.text = get_opt<std::string>(j, "text");
    f.token_ids = get_opt<std::vector<int32_t>>(j, "token_ids");
    if (j.contains("logprobs") && j["logprobs"].is_array())
      f.logprobs = logprobs_from_json(j, "logprobs");
    if (auto it = j.find("usage"); it != j.end() && it->is_object()) {
      f.usage.prompt_tokens = get_or<int32_t>(*it, "prompt_tokens", 0);
      f.usage.completion_tokens = get_or<int32_t>(*it, "completion_tokens", 0);
      f.usage.cached_tokens = get_or<int32_t>(*it, "cached_tokens", 0);
    }
    if (auto it = j.find("timings"); it != j.end() && it->is_object()) {
      f.timings.queue_s = get_opt<double>(*it, "queue_s");
      f.timings.ttft_s = get_opt<double>(*it, "ttft_s");
      f.timings.total_s = get_or<double>(*it, "total_s", 0.0);
      f.timings.tpot_s = get_opt<double>(*it, "tpot_s");
    }
    return f;
  }
  if (type == "error") {
    ErrorReply e;
    e.id = get_opt<std::string>(j, "id");
    const std::string code = get_or<std::string>(j, "code", "internal");
    e.code = parse_error_code(code).value_or(ErrorCode::kInternal);
    e.field = get_or<std::string>(j, "field", "");
    e.message = get_or<std::string>(j, "message", "");
    e.retry_after_s = get_opt<double>(j, "retry_after_s");
    return e;
  }
  if (type == "status") {
    StatusReply s;
    s.waiting = get_or<int32_t>(j, "waiting", 0);
    s.running = get_or<int32_t>(j, "running", 0);
    s.kv_blocks_used = get_or<int32_t>(j, "kv_blocks_used", 0);
    s.kv_blocks_total = get_or<int32_t>(j, "kv_blocks_total", 0);
    s.kv_usage = get_or<double>(j, "kv_usage", 0.0);
    s.live_requests = get_or<int32_t>(j, "live_requests", 0);
    s.max_live_requests = get_or<int32_t>(j, "max_live_requests", 0);
    s.clients = get_or<int32_t>(j, "clients", 0);
    s.admitting = get_or<bool>(j, "admitting", true);
    if (auto it = j.find("replicas"); it != j.end() && it->is_array())
      for (const auto& r : *it)
        s.replicas.push_back(
            {get_or<int32_t>(r, "running", 0), get_or<int32_t>(r, "waiting", 0),
             get_or<int32_t>(r, "kv_blocks_used", 0), get_or<int32_t>(r, "kv_blocks_total", 0),
             get_or<int32_t>(r, "kv_blocks_cached", 0), get_or<int64_t>(r, "steps", 0)});
    if (auto it = j.find("counters"); it != j.end() && it->is_object()) {
      s.submitted = get_or<int64_t>(*it, "submitted", 0);
      s.finished = get_or<int64_t>(*it, "finished", 0);
      s.cancelled = get_or<int64_t>(*it, "cancelled", 0);
      s.rejected = get_or<int64_t>(*it, "rejected", 0);
      s.unavailable = get_or<int64_t>(*it, "unavailable", 0);
      s.overloaded = get_or<int64_t>(*it, "overloaded", 0);
      s.invalid = get_or<int64_t>(*it, "invalid", 0);
      s.disconnect_cancels = get_or<int64_t>(*it, "disconnect_cancels", 0);
      s.deadline_timeouts = get_or<int64_t>(*it, "deadline_timeouts", 0);
      s.idle_timeouts = get_or<int64_t>(*it, "idle_timeouts", 0);
    }
    if (auto it = j.find("requests"); it != j.end() && it->is_array()) {
      s.requests.emplace();
      for (const auto& r : *it)
        s.requests->push_back(
            {get_or<std::string>(r, "client", ""), get_or<std::string>(r, "id", ""),
             get_or<std::string>(r, "state", ""), get_or<int32_t>(r, "prompt_tokens", 0),
             get_or<int32_t>(r, "output_tokens", 0), get_or<double>(r, "age_s", 0.0)});
    }
    return s;
  }
  if (type == "health")
    return HealthReply{get_or<std::string>(j, "status", ""), get_or<double>(j, "uptime_s", 0.0)};
  if (type == "model_info") {
    ModelInfo m;
    m.name = get_or<std::string>(j, "name", "");
    m.vocab_size = get_or<int32_t>(j, "vocab_size", 0);
    m.max_model_len = get_or<int32_t>(j, "max_model_len", 0);
    m.block_size = get_or<int32_t>(j, "block_size", 0);
    m.kv_blocks_per_replica = get_or<int32_t>(j, "kv_blocks_per_replica", 0);
    m.num_replicas = get_or<int32_t>(j, "num_replicas", 1);
    m.max_num_seqs = get_or<int32_t>(j, "max_num_seqs", 0);
    m.bos_token_id = get_opt<int32_t>(j, "bos_token_id");
    m.eos_token_ids = get_or<std::vector<int32_t>>(j, "eos_token_ids", {});
    m.text = get_or<bool>(j, "text", false);
    m.chat_format = get_or<std::string>(j, "chat_format", "");
    m.chat_format_error = get_or<std::string>(j, "chat_format_error", "");
    m.max_request_seconds = get_or<double>(j, "max_request_seconds", 0.0);
    m.stream_idle_timeout_s = get_or<double>(j, "stream_idle_timeout_s", 0.0);
    return m;
  }
  if (type == "heartbeat") return Heartbeat{};
  throw ProtocolError(ErrorCode::kMalformed, "type",
                      fmt::format("unknown server message type '{}'", type));
}

}  // namespace shardserve::api
