#pragma once
// The scheduler's TextStream over the tokenizer library's IncrementalDetokenizer, special tokens
// skipped (as OpenAI-style APIs return text). One adapter for every engine that has a tokenizer
// (the runtime's request files, the ZeroMQ front end's validation, `generate`); target
// shardserve_detokenizer_stream. The scheduler library itself stays without a tokenizer.
#include <cstdint>
#include <string>

#include "coordinator/text_stream.h"
#include "model/tokenizer/incremental_detokenizer.h"
#include "model/tokenizer/tokenizer.h"

namespace shardserve::coordinator {

class DetokenizerStream final : public TextStream {
 public:
  // `tokenizer` must outlive the stream.
  explicit DetokenizerStream(const model::Tokenizer& tokenizer)
      : detok_(tokenizer, /*skip_special_tokens=*/true) {}
  std::string push(int32_t token) override { return detok_.push(token); }
  std::string flush() override { return detok_.flush(); }

 private:
  model::IncrementalDetokenizer detok_;
};

}  // namespace shardserve::coordinator
