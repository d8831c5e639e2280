#include "coordinator/stop_checker.h"

#include <algorithm>

namespace shardserve::coordinator {

TokenStop check_stop_token(const Request& request, int32_t token,
                           std::span<const int32_t> eos_token_ids) {
  const auto& stops = request.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) return TokenStop::kStopToken;
  if (!request.ignore_eos &&
      std::find(eos_token_ids.begin(), eos_token_ids.end(), token) != eos_token_ids.end())
    return TokenStop::kEos;
  return TokenStop::kNone;
}

bool reached_length(const Request& request, int32_t max_model_len) {
  if (request.max_tokens && request.num_output_tokens() >= *request.max_tokens) return true;
  return request.num_tokens() >= max_model_len;
}

}  // namespace shardserve::coordinator
