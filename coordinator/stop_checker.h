#pragma once
// Token-level stop conditions, checked after each sampled token is appended. Stop strings are
// the StopStringMatcher's; the scheduler combines both in this order: stop token, stop
// string, length (a token that both completes a stop string and reaches max_tokens reports
// "stop", as vLLM and OpenAI do).
#include <cstdint>
#include <span>

#include "coordinator/request.h"

namespace shardserve::coordinator {

enum class TokenStop { kNone, kEos, kStopToken };

// Whether `token` (just sampled) ends the request: an EOS id unless ignore_eos, or one of the
// request's stop token ids.
TokenStop check_stop_token(const Request& request, int32_t token,
                           std::span<const int32_t> eos_token_ids);

// Whether the request has reached max_tokens outputs or the context length.
bool reached_length(const Request& request, int32_t max_model_len);

}  // namespace shardserve::coordinator
