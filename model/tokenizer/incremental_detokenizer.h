#pragma once
// Streaming detokenization of one generated sequence: push() each new id and send what it
// returns. Guarantees:
//   - no returned string ends inside (or contains part of) a UTF-8 character: bytes of a
//     character split across tokens are held until it is complete;
//   - the concatenation of every push() and the final flush() equals
//     tokenizer.decode(all ids, skip_special_tokens) byte for byte, including U+FFFD where the
//     ids spell invalid UTF-8 and SentencePiece's dropped leading space.
// It keeps O(1) state (at most a few held bytes), not the ids. One per sequence; not shared
// between threads. The tokenizer must outlive it.
#include <cstdint>
#include <string>

#include "model/tokenizer/tokenizer.h"

namespace shardserve::model {

class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);

  // Text completed by `id` (often empty while a character is incomplete).
  std::string push(int32_t id);
  // At the end of the sequence: the held bytes, repaired as decode() repairs a trailing
  // incomplete character (U+FFFD). The detokenizer then starts over as for a new sequence.
  std::string flush();

 private:
  void emit(std::string_view text, std::string& out);
  // Repairs held bytes; with `at_end`, all of them.
  void drain(bool at_end, std::string& out);

  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  DetokenizationRules rules_;
  std::string held_;  // bytes of the current byte run not yet turned into text
  // SentencePiece's leading-space state: whether text has been produced yet, whether the
  // previous piece lost its leading space, and whether a piece may still lose one.
  bool produced_text_ = false;
  bool dropped_space_ = false;
  bool at_start_ = true;
};

}  // namespace shardserve::model
