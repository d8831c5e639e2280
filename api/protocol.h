#pragma once
// The client protocol of the ZeroMQ front end (docs/protocol.md is the reference): typed
// messages and their JSON codec. One message = one ZeroMQ frame holding one JSON object with
// "v": 1 and "type". Client messages are decoded strictly (an unknown or mistyped field is an
// error naming it); server messages are decoded leniently (unknown fields are ignored, so a
// newer server with more fields still talks to an older client of the same version).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/error.h"

namespace shardserve::api {

inline constexpr int kProtocolVersion = 1;

// What went wrong, as the "code" of an error message.
enum class ErrorCode {
  kMalformed,           // not one JSON object in one frame, or no/incorrect "type"
  kUnsupportedVersion,  // "v" missing or not 1
  kInvalidRequest,      // a field is unknown, mistyped, out of range, or the prompt does not fit
  kUnknownRequest,      // cancel of an id that is not live for that client
  kDuplicateRequest,    // submit with an id the client already has live
  kOverloaded,          // the waiting queue is full: retry later
  kShuttingDown,        // the service is draining: no new requests
  kRejected,            // the engine refused the request (the message says why)
  kTimeout,             // the request produced no output for the service's stream idle timeout
  kUnavailable,         // the service cannot serve it (a replica failed), or (client side) it
                        // did not answer: retry later
  kInternal,            // a bug or an engine failure
};
std::string_view to_string(ErrorCode code);
std::optional<ErrorCode> parse_error_code(std::string_view text);

// A request the protocol refuses; `field` names the offending field ("" when none), as a path
// ("temperature", "messages[1].role", "stop[0]").
class ProtocolError : public Error {
 public:
  ProtocolError(ErrorCode code, std::string field, std::string message)
      : Error(std::move(message)), code_(code), field_(std::move(field)) {}
  ErrorCode code() const { return code_; }
  const std::string& field() const { return field_; }

 private:
  ErrorCode code_;
  std::string field_;
};

// ----- client -> server ---------------------------------------------------------------------

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
  friend bool operator==(const ChatMessage&, const ChatMessage&) = default;
};

struct SubmitRequest {
  std::string id;  // the client's request id: 1-128 bytes, unique among its live requests
  // Exactly one of the three prompt forms.
  std::optional<std::string> prompt;                 // text, tokenized by the service
  std::optional<std::vector<int32_t>> prompt_ids;    // token ids, used as given
  std::optional<std::vector<ChatMessage>> messages;  // a chat, rendered with the model's template
  bool add_special_tokens = true;                    // `prompt`: add BOS as the tokenizer does
  bool add_generation_prompt = true;                 // `messages`: end with the assistant header
  std::optional<int32_t> max_tokens;                 // unset: up to the context length
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  int32_t logprobs = 0;  // top alternatives per token; 0: none (the chosen token's only if >0)
  bool ignore_eos = false;
  int32_t priority = 0;  // lower = more urgent
  bool stream = true;    // false: one final message with the whole output
  // Seconds from arrival after which the service ends the request (final "timeout"); unset: the
  // service's limits.max_request_seconds (0 there: none). At most that limit when it is set.
  std::optional<double> timeout_s;
  friend bool operator==(const SubmitRequest&, const SubmitRequest&) = default;
};

struct CancelRequest {
  std::string id;
  // Another client's request: its "client" (hex routing id, from its "accepted" message or a
  // status listing). Unset: the sender's own request.
  std::optional<std::string> client;
  friend bool operator==(const CancelRequest&, const CancelRequest&) = default;
};

struct StatusRequest {
  bool requests = false;  // also list every live request
  friend bool operator==(const StatusRequest&, const StatusRequest&) = default;
};
struct HealthRequest {
  friend bool operator==(const HealthRequest&, const HealthRequest&) = default;
};
struct ModelInfoRequest {
  friend bool operator==(const ModelInfoRequest&, const ModelInfoRequest&) = default;
};

using ClientMessage =
    std::variant<SubmitRequest, CancelRequest, StatusRequest, HealthRequest, ModelInfoRequest>;

// Strict decoding: throws ProtocolError (kMalformed, kUnsupportedVersion, kInvalidRequest).
// Checks types and shapes only; ranges and the prompt are checked by validate.h.
ClientMessage decode_client_message(std::string_view frame);
// The request id of a frame that failed to decode, when it has a readable one (for the error).
std::optional<std::string> peek_request_id(std::string_view frame);
std::string encode(const ClientMessage& message);
nlohmann::json to_json(const SubmitRequest& submit);

// ----- server -> client ---------------------------------------------------------------------

struct TopLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::string token;  // the token's text alone (lossy where it is part of a UTF-8 character)
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::string token;
  std::vector<uint8_t> bytes;  // the token's exact bytes
  std::vector<TopLogprob> top;
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens served by the prefix cache
  int32_t total_tokens() const { return prompt_tokens + completion_tokens; }
};

struct Timings {
  std::optional<double> queue_s;  // received -> first scheduled (null: the engine cannot tell)
  std::optional<double> ttft_s;   // received -> first token sent (null: no token)
  double total_s = 0.0;           // received -> final
  std::optional<double> tpot_s;   // (total - ttft) / (completion_tokens - 1), when > 1 token
};

struct Accepted {
  std::string id;
  std::string client;  // this client's routing id, hex
  int32_t prompt_tokens = 0;
  int32_t max_tokens = 0;  // the effective limit
};

struct Delta {
  std::string id;
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;  // one per token id when the request asked for logprobs
};

struct Final {
  std::string id;
  std::string finish_reason;  // "stop", "length", "cancelled", "timeout"
  std::string finish_detail;  // "eos", "stop_token", "stop_string", "max_tokens", "deadline", ...
  std::optional<int32_t> stop_token_id;
  std::optional<std::string> stop_string;
  // stream=false only: the whole output. stream=true: the deltas carried it.
  std::optional<std::string> text;
  std::optional<std::vector<int32_t>> token_ids;
  std::optional<std::vector<TokenLogprob>> logprobs;
  Usage usage;
  Timings timings;
};

struct ErrorReply {
  std::optional<std::string> id;  // the request it concerns, when there is one
  ErrorCode code = ErrorCode::kInternal;
  std::string field;  // "" when no field is at fault
  std::string message;
  std::optional<double> retry_after_s;  // overloaded: when to try again
};

struct ReplicaStatus {
  int32_t running = 0;
  int32_t waiting = 0;
  int32_t kv_blocks_used = 0;
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_cached = 0;
  int64_t steps = 0;
};

struct LiveRequestInfo {
  std::string client;
  std::string id;
  std::string state;  // "queued" (not yet scheduled), "running", "cancelling"
  int32_t prompt_tokens = 0;
  int32_t output_tokens = 0;
  double age_s = 0.0;
};

struct StatusReply {
  int32_t waiting = 0;  // the engine's waiting queue (every replica)
  int32_t running = 0;
  int32_t kv_blocks_used = 0;
  int32_t kv_blocks_total = 0;
  double kv_usage = 0.0;          // used / total
  int32_t live_requests = 0;      // accepted by the front end and not finished
  int32_t max_live_requests = 0;  // past it: "overloaded"
  int32_t clients = 0;            // clients with live requests
  bool admitting = true;
  std::vector<ReplicaStatus> replicas;
  // Counters since start.
  int64_t submitted = 0, finished = 0, cancelled = 0, rejected = 0, overloaded = 0, invalid = 0,
          disconnect_cancels = 0;
  int64_t unavailable = 0;  // ended by a replica's failure (error code "unavailable")
  int64_t deadline_timeouts = 0, idle_timeouts = 0;  // ended by timeout_s / stream_idle_timeout_s
  std::optional<std::vector<LiveRequestInfo>> requests;
};

struct HealthReply {
  std::string status;  // "ok", "draining"
  double uptime_s = 0.0;
};

struct ModelInfo {
  std::string name;  // served model name
  int32_t vocab_size = 0;
  int32_t max_model_len = 0;  // prompt + output tokens at most
  int32_t block_size = 0;
  int32_t kv_blocks_per_replica = 0;  // the smallest replica's pool
  int32_t num_replicas = 1;
  int32_t max_num_seqs = 0;  // running sequences at most, every replica together
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;
  bool text = false;              // a tokenizer is loaded: text prompts, text output, chats
  std::string chat_format;        // "llama2", "llama3", or "" when chats are refused
  std::string chat_format_error;  // why chats are refused
  // The service's time limits (0: none): the largest timeout_s and the default for requests
  // without one; and how long a live request may go without output.
  double max_request_seconds = 0.0;
  double stream_idle_timeout_s = 0.0;
};

struct Heartbeat {};

using ServerMessage = std::variant<Accepted, Delta, Final, ErrorReply, StatusReply, HealthReply,
                                   ModelInfo, Heartbeat>;

std::string encode(const ServerMessage& message);
// Lenient decoding (unknown fields ignored); throws ProtocolError(kMalformed) on a frame that is
// not a version-1 server message.
ServerMessage decode_server_message(std::string_view frame);

nlohmann::json to_json(const TokenLogprob& t);

}  // namespace shardserve::api
