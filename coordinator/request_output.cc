#include "coordinator/request_output.h"

namespace shardserve::coordinator {

std::string_view to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kRejected: return "rejected";
    case FinishReason::kUnavailable: return "unavailable";
  }
  return "unknown";
}

std::string RequestOutput::finish_reason_string() const {
  if (!finish_reason) return {};
  std::string s(to_string(*finish_reason));
  if (*finish_reason == FinishReason::kRejected || *finish_reason == FinishReason::kUnavailable)
    s += ":" + finish_detail;
  return s;
}

}  // namespace shardserve::coordinator
