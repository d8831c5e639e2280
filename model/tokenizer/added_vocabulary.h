#pragma once
// Added tokens of a tokenizer.json (Llama 3's <|begin_of_text|>, <|eot_id|>, ...): they are cut
// out of the input before pre-tokenization, so their text always becomes the one token, as
// HuggingFace does (special or not; transformers' split_special_tokens=False).
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace shardserve::model {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false;      // the match also takes the whitespace before it
  bool rstrip = false;      // ... and after it
  bool normalized = false;  // matched after the normalizer (none here), in a second pass
};

class AddedVocabulary {
 public:
  explicit AddedVocabulary(std::vector<AddedToken> tokens);

  const std::vector<AddedToken>& tokens() const { return tokens_; }

  // Cuts `text` into stretches: for each, `gap` (ordinary text) or `token` (an added token's id)
  // is called in order. At each position the longest token wins, leftmost first.
  void split(std::string_view text, const std::function<void(std::string_view)>& gap,
             const std::function<void(int32_t)>& token) const;

 private:
  // Tokens by first byte, longest first; one index per pass (non-normalized, then normalized).
  using Index = std::array<std::vector<int>, 256>;
  void split_pass(std::string_view text, size_t pass,
                  const std::function<void(std::string_view)>& gap,
                  const std::function<void(int32_t)>& token) const;

  std::vector<AddedToken> tokens_;
  std::array<Index, 2> index_;
  std::array<bool, 2> has_tokens_{};
};

}  // namespace shardserve::model
