#include "coordinator/stop_string_matcher.h"

#include <algorithm>

#include "common/error.h"

namespace shardserve::coordinator {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings)
    : stops_(std::move(stop_strings)) {
  for (size_t i = 0; i < stops_.size(); ++i)
    require(!stops_[i].empty(), "stop strings: stop string {} is empty", i);
}

StopStringMatcher::Result StopStringMatcher::push(std::string_view delta) {
  require(!matched_, "stop strings: text pushed after a stop string matched");
  pending_.append(delta);
  Result r;
  if (stops_.empty()) {
    r.emit.swap(pending_);
    return r;
  }
  // Earliest-completing match. Only pending_ is searched: emitted text never contains the start
  // of a match, because every tail that could begin one was held back.
  size_t best_end = std::string::npos, best_pos = 0, best = 0;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t pos = pending_.find(stops_[i]);
    if (pos == std::string::npos) continue;
    const size_t end = pos + stops_[i].size();
    if (end < best_end || (end == best_end && pos < best_pos)) {
      best_end = end;
      best_pos = pos;
      best = i;
    }
  }
  if (best_end != std::string::npos) {
    r.emit = pending_.substr(0, best_pos);
    r.matched = best;
    pending_.clear();
    matched_ = true;
    return r;
  }
  // Longest tail of pending_ that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    const size_t max_k = std::min(s.size() - 1, pending_.size());
    for (size_t k = max_k; k > hold; --k) {
      if (std::string_view(pending_).substr(pending_.size() - k) == std::string_view(s).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  r.emit = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return r;
}

std::string StopStringMatcher::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace shardserve::coordinator
