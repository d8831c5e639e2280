#include "gateway/openai.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <set>

namespace shardserve::gateway {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  OpenAIError e;
  e.status = 400;
  e.message = message;
  e.param = param;
  e.code = "invalid_value";
  throw OpenAIException(e);
}

std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> number(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(key, fmt::format("'{}' must be a number, got {}", key, shown(*v)));
  return v->get<double>();
}

// A number a float holds (the sampling parameters are floats; converting a larger one is
// undefined behaviour).
std::optional<float> real(const json& body, const char* key) {
  const std::optional<double> v = number(body, key);
  if (!v) return std::nullopt;
  if (!(std::fabs(*v) <= std::numeric_limits<float>::max()))
    bad(key, fmt::format("'{}' must be a number of magnitude at most {}, got {}", key,
                         std::numeric_limits<float>::max(), *v));
  return static_cast<float>(*v);
}

std::optional<int64_t> integer(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer())
    bad(key, fmt::format("'{}' must be an integer, got {}", key, shown(*v)));
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)) return INT64_MAX;
  return v->get<int64_t>();
}

std::optional<bool> boolean(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(key, fmt::format("'{}' must be a boolean, got {}", key, shown(*v)));
  return v->get<bool>();
}

int32_t clamp32(int64_t v) {
  return static_cast<int32_t>(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
}

std::vector<int32_t> token_list(const json& v, const std::string& param) {
  std::vector<int32_t> ids;
  for (const auto& e : v) {
    if (!e.is_number_integer())
      bad(param, fmt::format("'{}' must be token ids (integers), got {}", param, shown(e)));
    ids.push_back(clamp32(e.get<int64_t>()));
  }
  return ids;
}

std::string content_text(const json& content, const std::string& param) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    bad(param, fmt::format("'{}' must be a string or an array of text parts, got {}", param,
                           shown(content)));
  std::string text;
  bool first = true;
  for (const auto& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") ||
        !part["text"].is_string())
      bad(param,
          fmt::format(
              "'{}': only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported, got {}",
              param, shown(part)));
    if (!first) text += "\n";
    text += part["text"].get<std::string>();
    first = false;
  }
  return text;
}

json logprob_bytes(const std::string& token, const std::vector<uint8_t>& bytes) {
  return bytes.empty() ? json(std::vector<uint8_t>(token.begin(), token.end())) : json(bytes);
}

json chat_logprobs(const std::vector<api::TokenLogprob>& lps) {
  json content = json::array();
  for (const auto& t : lps) {
    json top = json::array();
    for (const auto& a : t.top)
      top.push_back(
          {{"token", a.token}, {"logprob", a.logprob}, {"bytes", logprob_bytes(a.token, {})}});
    content.push_back({{"token", t.token},
                       {"logprob", t.logprob},
                       {"bytes", logprob_bytes(t.token, t.bytes)},
                       {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

json completion_logprobs(const std::vector<api::TokenLogprob>& lps, int32_t& offset) {
  json tokens = json::array(), token_lps = json::array(), top = json::array(),
       offsets = json::array();
  for (const auto& t : lps) {
    tokens.push_back(t.token);
    token_lps.push_back(t.logprob);
    json alts = json::object();
    for (const auto& a : t.top) alts[a.token] = a.logprob;
    top.push_back(alts);
    offsets.push_back(offset);
    offset += static_cast<int32_t>(t.token.size());
  }
  return json{{"tokens", tokens},
              {"token_logprobs", token_lps},
              {"top_logprobs", top},
              {"text_offset", offsets}};
}

const std::set<std::string> kCommonFields = {
    "model", "stream", "stream_options", "n", "temperature", "top_p", "stop", "presence_penalty",
    "frequency_penalty", "seed", "user", "logit_bias", "max_tokens",
    // extensions (vLLM's names)
    "top_k", "min_p", "repetition_penalty", "ignore_eos", "stop_token_ids", "priority"};
const std::set<std::string> kCompletionFields = {"prompt", "logprobs", "echo", "best_of", "suffix"};
const std::set<std::string> kChatFields = {"messages",
                                           "max_completion_tokens",
                                           "logprobs",
                                           "top_logprobs",
                                           "response_format",
                                           "tools",
                                           "tool_choice",
                                           "parallel_tool_calls",
                                           "add_generation_prompt",
                                           "store",
                                           "metadata"};

}  // namespace

json OpenAIError::body() const {
  return json{{"error",
               {{"message", message},
                {"type", type},
                {"param", param ? json(*param) : json(nullptr)},
                {"code", code ? json(*code) : json(nullptr)}}}};
}

json parse_json_body(std::string_view text, int max_depth) {
  OpenAIError e;
  e.status = 400;
  try {
    json body = api::parse_bounded_json(text, max_depth);
    if (!body.is_discarded()) return body;
    e.message = "We could not parse the JSON body of your request: it is not valid JSON.";
    e.code = "invalid_json";
  } catch (const api::JsonTooDeep& deep) {
    e.message = fmt::format("The JSON body of your request is too deeply nested: {}", deep.what());
    e.code = "json_too_deep";
  }
  throw OpenAIException(e);
}

ParsedRequest parse_request(Endpoint endpoint, const json& body, const api::ModelInfo& model,
                            uint64_t random_seed, const RequestLimits& limits) {
  const api::ValidationLimits& lim = limits.protocol;
  if (!body.is_object())
    bad("", fmt::format("the request body must be a JSON object, got {}", body.type_name()));
  const bool chat = endpoint == Endpoint::kChatCompletions;
  for (auto it = body.begin(); it != body.end(); ++it)
    if (!kCommonFields.count(it.key()) && !(chat ? kChatFields : kCompletionFields).count(it.key()))
      bad(it.key(), fmt::format("Unrecognized request argument supplied: {}", it.key()));

  ParsedRequest r;
  r.endpoint = endpoint;
  const json* m = field(body, "model");
  if (!m) bad("model", "'model' is required");
  if (!m->is_string()) bad("model", fmt::format("'model' must be a string, got {}", shown(*m)));
  r.model = m->get<std::string>();
  if (r.model != model.name) {
    OpenAIError e;
    e.status = 404;
    e.message = fmt::format("The model `{}` does not exist (this server serves `{}`).", r.model,
                            model.name);
    e.param = "model";
    e.code = "model_not_found";
    throw OpenAIException(e);
  }
  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    for (auto it = so->begin(); it != so->end(); ++it)
      if (it.key() != "include_usage")
        bad("stream_options", fmt::format("unknown stream option '{}'", it.key()));
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }
  const int64_t n = integer(body, "n").value_or(1);
  if (n < 1 || n > limits.max_n)
    bad("n", fmt::format("'n' must be in [1, {}], got {} (limit max_n)", limits.max_n, n));
  r.n = static_cast<int>(n);

  api::SubmitRequest base;
  base.stream = true;
  base.temperature = 1.0f;
  if (auto t = number(body, "temperature")) {
    if (*t < 0 || *t > 2)
      bad("temperature", fmt::format("'temperature' must be in [0, 2], got {}", *t));
    base.temperature = static_cast<float>(*t);  // in [0, 2]: fits
  }
  if (auto p = real(body, "top_p")) base.top_p = *p;
  if (auto p = real(body, "presence_penalty")) base.presence_penalty = *p;
  if (auto p = real(body, "frequency_penalty")) base.frequency_penalty = *p;
  if (auto p = real(body, "repetition_penalty")) base.repetition_penalty = *p;
  if (auto p = real(body, "min_p")) base.min_p = *p;
  if (auto k = integer(body, "top_k")) base.top_k = clamp32(*k);
  if (auto p = integer(body, "priority")) base.priority = clamp32(*p);
  if (auto b = boolean(body, "ignore_eos")) base.ignore_eos = *b;
  if (const json* s = field(body, "stop")) {
    if (s->is_string()) {
      base.stop = {s->get<std::string>()};
    } else if (s->is_array()) {
      for (const auto& e : *s) {
        if (!e.is_string())
          bad("stop",
              fmt::format("'stop' must be a string or an array of strings, got {}", shown(e)));
        base.stop.push_back(e.get<std::string>());
      }
    } else {
      bad("stop", fmt::format("'stop' must be a string or an array of strings, got {}", shown(*s)));
    }
  }
  if (static_cast<int>(base.stop.size()) > lim.max_stop_strings)
    bad("stop", fmt::format("at most {} stop strings, got {} (limit max_stop_strings)",
                            lim.max_stop_strings, base.stop.size()));
  for (std::size_t i = 0; i < base.stop.size(); ++i)
    if (static_cast<int>(base.stop[i].size()) > lim.max_stop_string_bytes)
      bad("stop", fmt::format("stop[{}] must be at most {} bytes, got {} (limit "
                              "max_stop_string_bytes)",
                              i, lim.max_stop_string_bytes, base.stop[i].size()));
  if (const json* s = field(body, "stop_token_ids")) {
    if (!s->is_array()) bad("stop_token_ids", "'stop_token_ids' must be an array of token ids");
    if (static_cast<int>(s->size()) > lim.max_stop_token_ids)
      bad("stop_token_ids",
          fmt::format("at most {} stop token ids, got {} (limit max_stop_token_ids)",
                      lim.max_stop_token_ids, s->size()));
    base.stop_token_ids = token_list(*s, "stop_token_ids");
  }
  if (const json* lb = field(body, "logit_bias"); lb && !(lb->is_object() && lb->empty()))
    bad("logit_bias", "'logit_bias' is not supported");
  if (const json* u = field(body, "user"); u && !u->is_string())
    bad("user", "'user' must be a string");
  std::optional<int64_t> max_tokens = integer(body, "max_tokens");
  std::optional<int64_t> seed = integer(body, "seed");

  std::vector<api::SubmitRequest> prompts;
  if (!chat) {
    if (!max_tokens) max_tokens = 16;  // the legacy completions API's default
    if (auto lp = integer(body, "logprobs")) {
      if (*lp < 0 || *lp > lim.max_logprobs)
        bad("logprobs", fmt::format("'logprobs' must be in [0, {}], got {} (limit max_logprobs)",
                                    lim.max_logprobs, *lp));
      r.logprobs = static_cast<int>(*lp);
      base.logprobs = std::max(1, r.logprobs);  // the chosen token's logprob needs at least one
    }
    if (boolean(body, "echo").value_or(false)) bad("echo", "'echo' is not supported");
    if (const json* s = field(body, "suffix");
        s && !(s->is_string() && s->get<std::string>().empty()))
      bad("suffix", "'suffix' is not supported");
    if (auto b = integer(body, "best_of"); b && *b != r.n)
      bad("best_of", fmt::format("'best_of' must equal 'n' ({}), got {}", r.n, *b));
    const json* p = field(body, "prompt");
    if (!p) bad("prompt", "'prompt' is required");
    auto one = [&](const json& v, const std::string& param) {
      api::SubmitRequest s = base;
      if (v.is_string()) {
        s.prompt = v.get<std::string>();
        if (static_cast<int64_t>(s.prompt->size()) > lim.max_prompt_bytes)
          bad(param, fmt::format("a prompt must be at most {} bytes, got {} (limit "
                                 "max_prompt_bytes)",
                                 lim.max_prompt_bytes, s.prompt->size()));
      } else if (v.is_array() && (v.empty() || v[0].is_number())) {
        if (model.max_model_len > 0 && static_cast<int64_t>(v.size()) >= model.max_model_len)
          bad(param, fmt::format("a prompt of {} token ids leaves no room to generate: the "
                                 "context length (max_model_len) is {}",
                                 v.size(), model.max_model_len));
        s.prompt_ids = token_list(v, param);
      } else {
        bad(param, fmt::format("'{}' must be a string, an array of strings, token ids, or arrays "
                               "of token ids; got {}",
                               param, shown(v)));
      }
      prompts.push_back(std::move(s));
    };
    if (p->is_array() && !p->empty() && (p->at(0).is_string() || p->at(0).is_array())) {
      if (static_cast<int64_t>(p->size()) > limits.max_prompts)
        bad("prompt", fmt::format("at most {} prompts in one request, got {} (limit max_prompts)",
                                  limits.max_prompts, p->size()));
      for (std::size_t i = 0; i < p->size(); ++i) one(p->at(i), "prompt");
    } else {
      one(*p, "prompt");
    }
  } else {
    if (auto mct = integer(body, "max_completion_tokens")) max_tokens = mct;
    const bool logprobs = boolean(body, "logprobs").value_or(false);
    if (auto top = integer(body, "top_logprobs")) {
      if (!logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      if (*top < 0 || *top > lim.max_logprobs)
        bad("top_logprobs",
            fmt::format("'top_logprobs' must be in [0, {}], got {} (limit max_logprobs)",
                        lim.max_logprobs, *top));
      r.logprobs = static_cast<int>(*top);
    } else if (logprobs) {
      r.logprobs = 0;
    }
    if (r.logprobs >= 0) base.logprobs = std::max(1, r.logprobs);
    if (const json* rf = field(body, "response_format");
        rf && !(rf->is_object() && rf->contains("type") && (*rf)["type"] == "text"))
      bad("response_format", "only 'response_format': {\"type\": \"text\"} is supported");
    if (const json* t = field(body, "tools"); t && !(t->is_array() && t->empty()))
      bad("tools", "tools (function calling) are not supported");
    if (const json* tc = field(body, "tool_choice");
        tc && !(tc->is_string() && tc->get<std::string>() == "none"))
      bad("tool_choice", "tools (function calling) are not supported");
    if (auto g = boolean(body, "add_generation_prompt")) base.add_generation_prompt = *g;
    const json* msgs = field(body, "messages");
    if (!msgs) bad("messages", "'messages' is required");
    if (!msgs->is_array() || msgs->empty()) bad("messages", "'messages' must be a non-empty array");
    if (static_cast<int64_t>(msgs->size()) > lim.max_messages)
      bad("messages", fmt::format("at most {} messages, got {} (limit max_messages)",
                                  lim.max_messages, msgs->size()));
    std::size_t bytes = 0;
    api::SubmitRequest s = base;
    s.messages.emplace();
    for (std::size_t i = 0; i < msgs->size(); ++i) {
      const json& msg = msgs->at(i);
      const std::string param = fmt::format("messages[{}]", i);
      if (!msg.is_object()) bad(param, fmt::format("'{}' must be an object", param));
      const json* role_json = field(msg, "role");
      if (role_json && !role_json->is_string())
        bad(param + ".role",
            fmt::format("'{}.role' must be a string, got {}", param, shown(*role_json)));
      const std::string role = role_json ? role_json->get<std::string>() : "";
      if (role.empty()) bad(param + ".role", fmt::format("'{}.role' is required", param));
      std::string mapped = role == "developer" ? "system" : role;
      if (mapped != "system" && mapped != "user" && mapped != "assistant")
        bad(param + ".role",
            fmt::format("'{}.role' must be system, developer, user or assistant, got '{}'", param,
                        role));
      if (msg.contains("tool_calls") && !msg["tool_calls"].is_null())
        bad(param + ".tool_calls", "tool calls are not supported");
      const json content = msg.contains("content") ? msg["content"] : json(nullptr);
      s.messages->push_back({mapped, content_text(content, param + ".content")});
      bytes += s.messages->back().content.size();
    }
    if (static_cast<int64_t>(bytes) > lim.max_prompt_bytes)
      bad("messages", fmt::format("the messages' contents must be at most {} bytes together, got "
                                  "{} (limit max_prompt_bytes)",
                                  lim.max_prompt_bytes, bytes));
    prompts.push_back(std::move(s));
  }
  r.num_prompts = static_cast<int>(prompts.size());
  if (static_cast<int64_t>(prompts.size()) * r.n > limits.max_choices)
    bad("n", fmt::format("{} prompts with n = {} make {} choices; at most {} (limit max_choices)",
                         prompts.size(), r.n, prompts.size() * r.n, limits.max_choices));
  for (auto& p : prompts) {
    if (max_tokens) p.max_tokens = clamp32(*max_tokens);
    for (int j = 0; j < r.n; ++j) {
      api::SubmitRequest c = p;
      c.seed = seed ? static_cast<uint64_t>(*seed) + j
                    : random_seed + static_cast<uint64_t>(r.submits.size());
      r.submits.push_back(std::move(c));
    }
  }
  return r;
}

std::optional<OpenAIError> from_timeout_final(const api::Final& f, double timeout_s) {
  if (f.finish_reason != "timeout") return std::nullopt;
  OpenAIError o;
  o.status = 504;
  o.type = "server_error";
  o.code = "timeout";
  o.message = fmt::format(
      "the request did not finish within its deadline of {} s (--request-timeout); the service "
      "stopped it after {} completion token(s)",
      timeout_s, f.usage.completion_tokens);
  return o;
}

OpenAIError unavailable_error(std::string message, double retry_after_s) {
  OpenAIError o;
  o.status = 503;
  o.type = "service_unavailable";
  o.code = "unavailable";
  o.message = std::move(message);
  o.retry_after_s = retry_after_s;
  return o;
}

OpenAIError from_protocol_error(const api::ErrorReply& e) {
  OpenAIError o;
  o.message = e.message;
  o.code = std::string(api::to_string(e.code));
  if (!e.field.empty()) {
    std::string p = e.field;
    if (p.rfind("prompt_ids", 0) == 0) p = "prompt";
    o.param = p;
  }
  switch (e.code) {
    case api::ErrorCode::kInvalidRequest:
    case api::ErrorCode::kRejected:
    case api::ErrorCode::kMalformed:
    case api::ErrorCode::kUnsupportedVersion:
      o.status = 400;
      o.type = "invalid_request_error";
      break;
    case api::ErrorCode::kOverloaded:
      o.status = 429;
      o.type = "rate_limit_error";
      o.retry_after_s = e.retry_after_s.value_or(1.0);
      break;
    case api::ErrorCode::kShuttingDown:
      o.status = 503;
      o.type = "server_error";
      break;
    case api::ErrorCode::kUnavailable:
      // The service failed under the request (a replica, and no other could take it over):
      // nothing was wrong with it, so 503 with a retry hint, not 400.
      o = unavailable_error(e.message, e.retry_after_s.value_or(kUnavailableRetryAfter_s));
      break;
    case api::ErrorCode::kTimeout:
      o.status = 504;
      o.type = "server_error";
      break;
    default:
      o.status = 500;
      o.type = "server_error";
  }
  return o;
}

json usage_json(const ParsedRequest& r, const std::vector<ChoiceState>& choices) {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    if (!choices[i].final) continue;
    const auto& u = choices[i].final->usage;
    if (static_cast<int>(i) % r.n == 0) {
      prompt += u.prompt_tokens;
      cached += u.cached_tokens;
    }
    completion += u.completion_tokens;
  }
  return json{{"prompt_tokens", prompt},
              {"completion_tokens", completion},
              {"total_tokens", prompt + completion},
              {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json response_body(const ParsedRequest& r, const ResponseMeta& meta,
                   const std::vector<ChoiceState>& choices) {
  const bool chat = r.endpoint == Endpoint::kChatCompletions;
  json out{{"id", meta.id},
           {"object", chat ? "chat.completion" : "text_completion"},
           {"created", meta.created},
           {"model", meta.model},
           {"system_fingerprint", "shardserve"}};
  json cs = json::array();
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    json choice{{"index", i},
                {"finish_reason", c.final ? json(c.final->finish_reason) : json(nullptr)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      choice["logprobs"] = r.logprobs >= 0 ? chat_logprobs(c.logprobs) : json(nullptr);
    } else {
      choice["text"] = c.text;
      int32_t offset = 0;
      choice["logprobs"] =
          r.logprobs >= 0 ? completion_logprobs(c.logprobs, offset) : json(nullptr);
    }
    cs.push_back(choice);
  }
  out["choices"] = cs;
  out["usage"] = usage_json(r, choices);
  return out;
}

json delta_chunk(const ParsedRequest& r, const ResponseMeta& meta, int index,
                 const api::Delta* delta, ChoiceState& state, const api::Final* final) {
  const bool chat = r.endpoint == Endpoint::kChatCompletions;
  json choice{{"index", index},
              {"finish_reason", final ? json(final->finish_reason) : json(nullptr)}};
  std::vector<api::TokenLogprob> lps = delta ? delta->logprobs : std::vector<api::TokenLogprob>{};
  const std::string text = delta ? delta->text : "";
  if (chat) {
    choice["delta"] = delta ? json{{"content", text}} : json::object();
    choice["logprobs"] = r.logprobs >= 0 && delta ? chat_logprobs(lps) : json(nullptr);
  } else {
    choice["text"] = text;
    choice["logprobs"] =
        r.logprobs >= 0 && delta ? completion_logprobs(lps, state.text_offset) : json(nullptr);
  }
  json chunk{{"id", meta.id},
             {"object", chat ? "chat.completion.chunk" : "text_completion"},
             {"created", meta.created},
             {"model", meta.model},
             {"system_fingerprint", "shardserve"},
             {"choices", json::array({choice})}};
  if (r.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json role_chunk(const ParsedRequest& r, const ResponseMeta& meta, int index) {
  json chunk{{"id", meta.id},
             {"object", "chat.completion.chunk"},
             {"created", meta.created},
             {"model", meta.model},
             {"system_fingerprint", "shardserve"},
             {"choices", json::array({{{"index", index},
                                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}})}};
  if (r.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json usage_chunk(const ParsedRequest& r, const ResponseMeta& meta,
                 const std::vector<ChoiceState>& choices) {
  const bool chat = r.endpoint == Endpoint::kChatCompletions;
  return json{{"id", meta.id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"system_fingerprint", "shardserve"},
              {"choices", json::array()},
              {"usage", usage_json(r, choices)}};
}

std::string sse(const json& chunk) {
  return "data: " + chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

json model_object(const api::ModelInfo& model, int64_t created) {
  return json{{"id", model.name},
              {"object", "model"},
              {"created", created},
              {"owned_by", "shardserve"},
              {"max_model_len", model.max_model_len}};
}

}  // namespace shardserve::gateway
