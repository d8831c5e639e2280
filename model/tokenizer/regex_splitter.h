#pragma once
// A pre-tokenizer split regex compiled with PCRE2 (JIT when available). HuggingFace compiles
// these patterns with Oniguruma; PCRE2 reads them the same way once \s and \S are spelled out
// (see regex_splitter.cc). The compiled pattern is shared read-only; each split() call makes
// its own match data, so one splitter serves many threads.
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace shardserve::model {

class RegexSplitter {
 public:
  // `where` names the pattern's place in its file, for the error if it does not compile.
  RegexSplitter(const std::string& pattern, const std::string& where);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;

  // Splits valid UTF-8 `text` the way HuggingFace's Split with behavior "Isolated" does: every
  // match is a piece and so is every non-empty stretch between matches; empty matches make no
  // piece. Calls `piece` for each, in order.
  void split(std::string_view text, const std::function<void(std::string_view)>& piece) const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

// The pattern rewritten so PCRE2's \s and \S mean Oniguruma's (Unicode White_Space).
std::string oniguruma_compatible_pattern(std::string_view pattern);

}  // namespace shardserve::model
