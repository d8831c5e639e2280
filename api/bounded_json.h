#pragma once
// JSON from an untrusted peer (a ZeroMQ frame, an HTTP body), parsed with a bound on nesting:
// nlohmann's parser keeps a stack entry per open array/object, so a 4 MiB frame of '[' would
// otherwise cost millions of nodes and a deep recursion when the value is destroyed or dumped.
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/error.h"

namespace shardserve::api {

// The deepest nesting a client message or request body may have (an OpenAI chat with content
// parts needs 4: body, messages, message, content part).
inline constexpr int kMaxJsonDepth = 32;

class JsonTooDeep : public Error {
 public:
  using Error::Error;
};

// The value; a discarded value (is_discarded()) when `text` is not JSON. Throws JsonTooDeep,
// naming the limit, when arrays/objects nest more than `max_depth` levels.
nlohmann::json parse_bounded_json(std::string_view text, int max_depth = kMaxJsonDepth);

}  // namespace shardserve::api
