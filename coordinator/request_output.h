#pragma once
// What the scheduler tells the engine about a request after a step, an add or a cancel: new
// tokens and text to stream, and once, the end with its reason.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "messages/step_plan.h"

namespace shardserve::coordinator {

enum class FinishReason {
  kStop,       // an EOS id, a stop token id or a stop string
  kLength,     // max_tokens, or the context length
  kCancelled,  // cancel(): the client gave up or disconnected
  kRejected,   // never scheduled; finish_detail says why
  // The service could not serve it: its replica failed and it was not moved to another
  // (runtime.on_replica_failure = "abort", no replica left, or the survivor cannot continue it),
  // or it arrived after such a failure. Not the request's fault: a retry may succeed once the
  // service is back. finish_detail names the failure.
  kUnavailable,
};

std::string_view to_string(FinishReason reason);

struct RequestOutput {
  std::string request_id;
  uint64_t seq_id = 0;
  // Tokens sampled since the last output (with their logprobs), including a final stop token.
  std::vector<messages::SampledToken> new_tokens;
  // Text safe to send since the last output: a stop string and the text of stop tokens are
  // never included; a possible start of a stop string is held back until decided.
  std::string new_text;
  bool finished = false;
  std::optional<FinishReason> finish_reason;
  std::string finish_detail;  // kRejected / kUnavailable: why; otherwise "eos", "stop_token", ...
  std::optional<int32_t> stop_token_id;  // the EOS / stop id that ended it
  std::optional<std::string> stop_string;
  int32_t num_prompt_tokens = 0;
  int32_t num_output_tokens = 0;
  int32_t num_cached_tokens = 0;  // prompt tokens served by the prefix cache at first admission

  // OpenAI's spelling: "stop", "length", "cancelled", "rejected:<reason>",
  // "unavailable:<reason>"; "" while running.
  std::string finish_reason_string() const;
};

}  // namespace shardserve::coordinator
