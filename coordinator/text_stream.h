#pragma once
// A request's incremental detokenizer, as the scheduler sees it. The tokenizer library's
// IncrementalDetokenizer is wrapped in one of these by the engine (an adapter of a few lines);
// keeping the interface here lets the coordinator's logic and tests run without a vocabulary.
#include <cstdint>
#include <string>

namespace shardserve::coordinator {

class TextStream {
 public:
  virtual ~TextStream() = default;
  // Feeds the next output token; returns the UTF-8 text that this token completed (possibly
  // empty, e.g. while a multi-byte character or a merge is still pending).
  virtual std::string push(int32_t token) = 0;
  // End of the stream: whatever text is still held back (default: nothing).
  virtual std::string flush() { return {}; }
};

}  // namespace shardserve::coordinator
