#pragma once
// A decoded submit becomes the scheduler's RequestSpec here: every range checked, the prompt
// tokenized (text) or rendered with the chat format (messages), and the request fitted into the
// context and the KV pool. Each refusal is a ProtocolError(kInvalidRequest) naming the field and
// the value (docs/protocol.md lists them).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "api/chat_template.h"
#include "api/protocol.h"
#include "coordinator/request.h"
#include "model/tokenizer/tokenizer.h"

namespace shardserve::api {

struct ValidationLimits {
  int32_t max_id_bytes = 128;
  int32_t max_prompt_bytes = 1 << 20;  // text prompt, or all chat contents together
  int32_t max_messages = 512;
  int32_t max_stop_strings = 16;
  int32_t max_stop_string_bytes = 256;
  int32_t max_stop_token_ids = 64;
  int32_t max_logprobs = 20;
  // limits.max_request_seconds of the service: the largest timeout_s, and the deadline of a
  // request without one. 0: none.
  double max_request_seconds = 0.0;
};

// timeout_s above this is refused even without a service limit (keeps the deadline arithmetic
// on the steady clock far from overflow): 30 days.
inline constexpr double kMaxTimeoutSeconds = 30.0 * 86400.0;

// The model facts validation needs, and the tokenizer (null: token ids only).
struct ValidationContext {
  const ModelInfo* model = nullptr;
  const model::Tokenizer* tokenizer = nullptr;
  std::optional<ChatFormat> chat_format;  // unset: chats refused with model->chat_format_error
  ValidationLimits limits;
};

struct ValidatedRequest {
  coordinator::RequestSpec spec;  // request_id left for the caller to set
  int32_t prompt_tokens = 0;
  int32_t max_tokens = 0;  // the effective limit
  double timeout_s = 0.0;  // the effective deadline from arrival, seconds; 0: none
};

// Throws ProtocolError(kInvalidRequest, field, message).
ValidatedRequest validate_submit(const SubmitRequest& submit, const ValidationContext& context);

// The largest prompt + output a request may have: the context length, or less when one
// replica's KV pool holds fewer tokens.
int32_t request_token_limit(const ModelInfo& model);

}  // namespace shardserve::api
