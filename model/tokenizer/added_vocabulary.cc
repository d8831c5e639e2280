#include "model/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "model/tokenizer/utf8.h"

namespace shardserve::model {
namespace {

// Start of the whitespace run that ends at `end` (Rust's char::is_whitespace, as HF uses).
size_t whitespace_run_before(std::string_view text, size_t end, size_t floor) {
  size_t start = end;
  while (start > floor) {
    size_t lead = start - 1;
    while (lead > floor && (static_cast<unsigned char>(text[lead]) & 0xC0) == 0x80) --lead;
    size_t len = 0;
    if (!is_unicode_whitespace(decode_utf8_char(text.substr(lead), &len))) break;
    start = lead;
  }
  return start;
}

size_t whitespace_run_after(std::string_view text, size_t begin) {
  size_t end = begin;
  while (end < text.size()) {
    size_t len = 0;
    if (!is_unicode_whitespace(decode_utf8_char(text.substr(end), &len))) break;
    end += len;
  }
  return end;
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.content.empty()) continue;
    const size_t pass = t.normalized ? 1 : 0;
    index_[pass][static_cast<unsigned char>(t.content[0])].push_back(static_cast<int>(i));
    has_tokens_[pass] = true;
  }
  for (Index& index : index_) {
    for (auto& list : index) {
      std::stable_sort(list.begin(), list.end(), [&](int a, int b) {
        return tokens_[a].content.size() > tokens_[b].content.size();
      });
    }
  }
}

void AddedVocabulary::split(std::string_view text,
                            const std::function<void(std::string_view)>& gap,
                            const std::function<void(int32_t)>& token) const {
  // HF matches tokens that skip the normalizer first, then the others inside what is left.
  split_pass(text, 0,
             [&](std::string_view rest) { split_pass(rest, 1, gap, token); }, token);
}

void AddedVocabulary::split_pass(std::string_view text, size_t pass,
                                 const std::function<void(std::string_view)>& gap,
                                 const std::function<void(int32_t)>& token) const {
  if (!has_tokens_[pass]) {
    if (!text.empty()) gap(text);
    return;
  }
  const Index& index = index_[pass];
  size_t emitted = 0;  // end of the last match
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* found = nullptr;
    for (const int t : index[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, tokens_[t].content.size(), tokens_[t].content) == 0) {
        found = &tokens_[t];
        break;
      }
    }
    if (found == nullptr) {
      ++i;
      continue;
    }
    size_t begin = i;
    size_t end = i + found->content.size();
    if (found->lstrip) begin = whitespace_run_before(text, begin, emitted);
    if (found->rstrip) end = whitespace_run_after(text, end);
    if (begin > emitted) gap(text.substr(emitted, begin - emitted));
    token(found->id);
    emitted = end;
    i = end;
  }
  if (emitted < text.size()) gap(text.substr(emitted));
}

}  // namespace shardserve::model
