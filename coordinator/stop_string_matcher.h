#pragma once
// Finds stop strings in text that arrives in arbitrary pieces (one detokenized delta per token)
// and says how much text may be emitted. A stop string can straddle deltas, so any tail of the
// text that is a proper prefix of some stop string is held back until the next delta decides
// it. On a match, the text before the stop string is emitted and the stop string itself is
// not (as OpenAI's API does).
//
// Which match wins: the one that is complete earliest in the stream (smallest end offset), and
// among those ending at the same offset the longest. That is what feeding the text one byte at
// a time would find, so the result does not depend on how the text was split into deltas.
// Held-back text always starts at a stop string's first byte; for valid UTF-8 input and stop
// strings that is a character boundary, so emitted pieces are valid UTF-8 too.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shardserve::coordinator {

class StopStringMatcher {
 public:
  StopStringMatcher() = default;
  // Every stop string must be non-empty (shardserve::Error otherwise).
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  struct Result {
    std::string emit;                // text now safe to send to the client
    std::optional<size_t> matched;   // index of the stop string that ended the text
  };
  // Feeds the next piece of text. After a match, further pushes are an error.
  Result push(std::string_view delta);
  // The stream ended without a match: the held-back text, which is then plain text.
  std::string flush();

  bool empty() const { return stops_.empty(); }
  bool matched() const { return matched_; }
  size_t held_back() const { return pending_.size(); }
  const std::vector<std::string>& stop_strings() const { return stops_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // received, not yet emitted: a possible start of a stop string
  bool matched_ = false;
};

}  // namespace shardserve::coordinator
