#include "api/validate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "coordinator/detokenizer_stream.h"

namespace shardserve::api {
namespace {

[[noreturn]] void invalid(const std::string& field, const std::string& message) {
  throw ProtocolError(ErrorCode::kInvalidRequest, field, message);
}

// lo <= x <= hi (or lo < x when lo_open).
void check_range(const char* field, double x, double lo, double hi, bool lo_open = false) {
  const bool ok = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
  if (!ok)
    invalid(field,
            fmt::format("{} must be in {}{}, {}], got {}", field, lo_open ? "(" : "[", lo, hi, x));
}

void check_token_ids(const std::vector<int32_t>& ids, const std::string& field, int32_t vocab) {
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      invalid(fmt::format("{}[{}]", field, i),
              fmt::format("{}[{}] = {} is not a token id (the vocabulary has ids 0..{})", field, i,
                          ids[i], vocab - 1));
}

}  // namespace

int32_t request_token_limit(const ModelInfo& model) {
  int64_t limit = model.max_model_len;
  if (model.kv_blocks_per_replica > 0 && model.block_size > 0)
    limit = std::min<int64_t>(limit,
                              static_cast<int64_t>(model.kv_blocks_per_replica) * model.block_size);
  return static_cast<int32_t>(limit);
}

ValidatedRequest validate_submit(const SubmitRequest& s, const ValidationContext& ctx) {
  const ModelInfo& model = *ctx.model;
  const ValidationLimits& lim = ctx.limits;
  ValidatedRequest out;
  coordinator::RequestSpec& spec = out.spec;

  if (s.id.empty()) invalid("id", "id must not be empty");
  if (static_cast<int32_t>(s.id.size()) > lim.max_id_bytes)
    invalid("id",
            fmt::format("id must be at most {} bytes, got {} (limit max_id_bytes)", lim.max_id_bytes,
                        s.id.size()));
  for (unsigned char c : s.id)
    if (c < 0x20 || c == 0x7F) invalid("id", "id must not contain control characters");

  // ----- sampling --------------------------------------------------------------------------
  check_range("temperature", s.temperature, 0.0, 100.0);
  check_range("top_p", s.top_p, 0.0, 1.0, /*lo_open=*/true);
  if (s.top_k < -1)
    invalid("top_k", fmt::format("top_k must be >= 0 (0 or -1: off), got {}", s.top_k));
  check_range("min_p", s.min_p, 0.0, 1.0);
  check_range("repetition_penalty", s.repetition_penalty, 0.0, 100.0, /*lo_open=*/true);
  check_range("frequency_penalty", s.frequency_penalty, -2.0, 2.0);
  check_range("presence_penalty", s.presence_penalty, -2.0, 2.0);
  if (s.logprobs < 0 || s.logprobs > lim.max_logprobs)
    invalid("logprobs",
            fmt::format("logprobs must be in [0, {}], got {} (limit max_logprobs)", lim.max_logprobs,
                        s.logprobs));
  spec.sampling.temperature = s.temperature;
  spec.sampling.top_p = s.top_p;
  spec.sampling.top_k = std::max(0, s.top_k);
  spec.sampling.min_p = s.min_p;
  spec.sampling.repetition_penalty = s.repetition_penalty;
  spec.sampling.frequency_penalty = s.frequency_penalty;
  spec.sampling.presence_penalty = s.presence_penalty;
  spec.sampling.seed = s.seed;
  spec.sampling.logprobs = s.logprobs;

  // ----- stop conditions ---------------------------------------------------------------------
  if (static_cast<int32_t>(s.stop.size()) > lim.max_stop_strings)
    invalid("stop",
            fmt::format("at most {} stop strings, got {} (limit max_stop_strings)",
                        lim.max_stop_strings, s.stop.size()));
  for (std::size_t i = 0; i < s.stop.size(); ++i) {
    const std::string field = fmt::format("stop[{}]", i);
    if (s.stop[i].empty()) invalid(field, fmt::format("{} is an empty stop string", field));
    if (static_cast<int32_t>(s.stop[i].size()) > lim.max_stop_string_bytes)
      invalid(field, fmt::format("{} must be at most {} bytes, got {} (limit max_stop_string_bytes)",
                                 field, lim.max_stop_string_bytes, s.stop[i].size()));
  }
  if (!s.stop.empty() && !ctx.tokenizer)
    invalid("stop", "stop strings need the model's tokenizer, which this service did not load");
  if (static_cast<int32_t>(s.stop_token_ids.size()) > lim.max_stop_token_ids)
    invalid("stop_token_ids", fmt::format("at most {} stop token ids, got {} (limit max_stop_token_ids)",
                                          lim.max_stop_token_ids, s.stop_token_ids.size()));
  check_token_ids(s.stop_token_ids, "stop_token_ids", model.vocab_size);
  spec.stop_strings = s.stop;
  spec.stop_token_ids = s.stop_token_ids;
  spec.ignore_eos = s.ignore_eos;
  spec.priority = s.priority;

  // ----- the deadline ----------------------------------------------------------------------------
  out.timeout_s = lim.max_request_seconds;
  if (s.timeout_s) {
    const double t = *s.timeout_s;
    const double hi = lim.max_request_seconds > 0 ? lim.max_request_seconds : kMaxTimeoutSeconds;
    if (!(std::isfinite(t) && t > 0))
      invalid("timeout_s", fmt::format("timeout_s must be a positive number of seconds, got {}", t));
    if (t > hi)
      invalid("timeout_s",
              lim.max_request_seconds > 0
                  ? fmt::format("timeout_s = {} is over the service's limit of {} s (limit "
                                "limits.max_request_seconds)",
                                t, hi)
                  : fmt::format("timeout_s = {} is over {} s (30 days)", t, hi));
    out.timeout_s = t;
  }

  // ----- the prompt ------------------------------------------------------------------------------
  if (s.prompt_ids) {
    if (s.prompt_ids->empty()) invalid("prompt_ids", "prompt_ids is empty");
    check_token_ids(*s.prompt_ids, "prompt_ids", model.vocab_size);
    spec.prompt_token_ids = *s.prompt_ids;
  } else if (s.prompt) {
    if (s.prompt->empty()) invalid("prompt", "prompt is empty");
    if (static_cast<int64_t>(s.prompt->size()) > lim.max_prompt_bytes)
      invalid("prompt", fmt::format("prompt must be at most {} bytes, got {} (limit max_prompt_bytes)",
                                    lim.max_prompt_bytes, s.prompt->size()));
    if (!ctx.tokenizer)
      invalid("prompt",
              "text prompts need the model's tokenizer, which this service did not "
              "load: send prompt_ids");
    try {
      spec.prompt_token_ids = ctx.tokenizer->encode(*s.prompt, s.add_special_tokens);
    } catch (const Error& e) {
      invalid("prompt", fmt::format("prompt cannot be tokenized: {}", e.what()));
    }
    if (spec.prompt_token_ids.empty()) invalid("prompt", "prompt has no tokens");
  } else {
    const auto& msgs = *s.messages;
    if (msgs.empty()) invalid("messages", "messages is empty");
    if (static_cast<int32_t>(msgs.size()) > lim.max_messages)
      invalid("messages",
              fmt::format("at most {} messages, got {} (limit max_messages)", lim.max_messages,
                          msgs.size()));
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < msgs.size(); ++i) {
      const auto& role = msgs[i].role;
      if (role != "system" && role != "user" && role != "assistant")
        invalid(fmt::format("messages[{}].role", i),
                fmt::format(
                    "messages[{}].role must be \"system\", \"user\" or \"assistant\", got \"{}\"",
                    i, role.size() > 40 ? role.substr(0, 40) + "..." : role));
      bytes += msgs[i].content.size();
    }
    if (static_cast<int64_t>(bytes) > lim.max_prompt_bytes)
      invalid("messages",
              fmt::format("the messages' contents must be at most {} bytes together, got {} (limit "
                          "max_prompt_bytes)",
                          lim.max_prompt_bytes, bytes));
    if (!ctx.tokenizer)
      invalid("messages", "chats need the model's tokenizer, which this service did not load");
    if (!ctx.chat_format)
      invalid("messages", fmt::format("this service does not serve chats: {}",
                                      model.chat_format_error.empty() ? "no chat format"
                                                                      : model.chat_format_error));
    const RenderedChat chat = render_chat(*ctx.chat_format, msgs, s.add_generation_prompt,
                                          chat_tokens(*ctx.tokenizer, *ctx.chat_format));
    try {
      spec.prompt_token_ids = chat_token_ids(chat, *ctx.tokenizer);
    } catch (const Error& e) {
      invalid("messages", fmt::format("the chat cannot be tokenized: {}", e.what()));
    }
  }

  // ----- the context ---------------------------------------------------------------------------
  const int32_t limit = request_token_limit(model);
  const auto prompt_len = static_cast<int64_t>(spec.prompt_token_ids.size());
  const char* prompt_field = s.prompt_ids ? "prompt_ids" : s.prompt ? "prompt" : "messages";
  const char* limit_name =
      limit < model.max_model_len ? "the KV pool of one replica holds" : "the context length is";
  if (prompt_len >= limit)
    invalid(prompt_field,
            fmt::format("the prompt has {} tokens; {} {} tokens, so it leaves no room "
                        "to generate",
                        prompt_len, limit_name, limit));
  if (s.max_tokens) {
    if (*s.max_tokens < 1)
      invalid("max_tokens", fmt::format("max_tokens must be at least 1, got {}", *s.max_tokens));
    if (prompt_len + *s.max_tokens > limit)
      invalid("max_tokens",
              fmt::format("max_tokens = {} with a prompt of {} tokens exceeds {} tokens "
                          "({} {}); at most {} here",
                          *s.max_tokens, prompt_len, limit, limit_name, limit, limit - prompt_len));
    out.max_tokens = *s.max_tokens;
  } else {
    out.max_tokens = static_cast<int32_t>(limit - prompt_len);
  }
  spec.max_tokens = out.max_tokens;
  out.prompt_tokens = static_cast<int32_t>(prompt_len);
  if (ctx.tokenizer)
    spec.text_stream = std::make_unique<coordinator::DetokenizerStream>(*ctx.tokenizer);
  return out;
}

}  // namespace shardserve::api
