#pragma once
// OpenAI's HTTP API over the shardserve protocol: request bodies of /v1/completions and
// /v1/chat/completions become protocol submits (one per choice: n > 1 is n submits), and the
// protocol's deltas and finals become OpenAI's response objects and server-sent-event chunks.
// Pure functions (no I/O), unit-tested in tests/gateway.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "api/bounded_json.h"
#include "api/protocol.h"
#include "api/validate.h"

namespace shardserve::gateway {

// An error as OpenAI shapes it: HTTP status + {"error": {"message", "type", "param", "code"}}.
struct OpenAIError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::optional<std::string> param;
  std::optional<std::string> code;
  std::optional<double> retry_after_s;  // 429 and 503 unavailable: the Retry-After header
  nlohmann::json body() const;
};

class OpenAIException : public std::runtime_error {
 public:
  explicit OpenAIException(OpenAIError e) : std::runtime_error(e.message), error_(std::move(e)) {}
  const OpenAIError& error() const { return error_; }

 private:
  OpenAIError error_;
};

enum class Endpoint { kCompletions, kChatCompletions };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  int num_prompts = 1;  // completions: choices = num_prompts * n, choice index = prompt * n + j
  int logprobs = -1;    // completions: top-N (-1: none); chat: top_logprobs (-1: logprobs off)
  std::vector<api::SubmitRequest>
      submits;  // one per choice, in choice order; ids set by the caller
};

// Limits on one request body, checked here so that an over-limit request costs the coordinator
// nothing; each refusal names its limit. `protocol` holds the coordinator's own defaults (prompt
// bytes, messages, stop strings, stop token ids, logprobs): a request passing here is not
// refused by the coordinator for those.
struct RequestLimits {
  api::ValidationLimits protocol;
  int max_n = 16;        // choices per prompt
  int max_prompts = 64;  // prompts in one /v1/completions request
  int max_choices = 64;  // prompts * n: the submits one HTTP request may cost
};

// An HTTP body as JSON, with nesting bounded (api/bounded_json.h); throws OpenAIException (400,
// code "invalid_json" or "json_too_deep").
nlohmann::json parse_json_body(std::string_view body, int max_depth = api::kMaxJsonDepth);

// Parses and checks an OpenAI request body against the served model; throws OpenAIException
// (400 for a bad body, 404 for another model). `random_seed` gives the seed of choice j when the
// body has none (n > 1 choices then differ); with a seed s, choice j gets s + j.
ParsedRequest parse_request(Endpoint endpoint, const nlohmann::json& body,
                            const api::ModelInfo& model, uint64_t random_seed,
                            const RequestLimits& limits = {});

// The Retry-After of a 503 "unavailable" (a replica failed, or the coordinator is not
// answering): a supervisor restarts a failed service within seconds.
inline constexpr double kUnavailableRetryAfter_s = 1.0;
// 503, type "service_unavailable", code "unavailable", with Retry-After: the service could not
// serve a request that was fine (a replica failed under it; the coordinator is gone or silent).
OpenAIError unavailable_error(std::string message, double retry_after_s = kUnavailableRetryAfter_s);

// The protocol's error as OpenAI's (status: 400 invalid or rejected, 429 overloaded, 503
// draining, 503 + Retry-After unavailable (unavailable_error), 504 timeout, 500 otherwise).
// Field names are mapped to OpenAI's parameters.
OpenAIError from_protocol_error(const api::ErrorReply& e);
// The coordinator's final with finish_reason "timeout" (the deadline the gateway passed as
// timeout_s, `timeout_s` here, passed): 504, type server_error, code "timeout", naming the
// deadline and what was produced. nullopt for any other final.
std::optional<OpenAIError> from_timeout_final(const api::Final& f, double timeout_s);

// What one choice has produced so far (the gateway accumulates deltas here).
struct ChoiceState {
  std::string text;
  std::vector<api::TokenLogprob> logprobs;
  std::optional<api::Final> final;
  bool role_sent = false;   // chat streaming: the first chunk carries the role
  int32_t text_offset = 0;  // completions logprobs: characters before the next token
};

struct ResponseMeta {
  std::string id;  // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;
  std::string model;
};

// Usage over choices: prompt tokens counted once per prompt, completion tokens of every choice.
nlohmann::json usage_json(const ParsedRequest& request, const std::vector<ChoiceState>& choices);

// Non-streamed response body.
nlohmann::json response_body(const ParsedRequest& request, const ResponseMeta& meta,
                             const std::vector<ChoiceState>& choices);

// One streamed chunk for choice `index` carrying `delta` (and finish_reason when `final` is set).
nlohmann::json delta_chunk(const ParsedRequest& request, const ResponseMeta& meta, int index,
                           const api::Delta* delta, ChoiceState& state, const api::Final* final);
// The first chat chunk of a choice: {"role": "assistant", "content": ""}.
nlohmann::json role_chunk(const ParsedRequest& request, const ResponseMeta& meta, int index);
// The usage chunk (choices: []) that stream_options.include_usage asks for.
nlohmann::json usage_chunk(const ParsedRequest& request, const ResponseMeta& meta,
                           const std::vector<ChoiceState>& choices);

// "data: <json>\n\n"
std::string sse(const nlohmann::json& chunk);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

// The /v1/models list entry.
nlohmann::json model_object(const api::ModelInfo& model, int64_t created);

}  // namespace shardserve::gateway
