#include "model/tokenizer/incremental_detokenizer.h"

namespace shardserve::model {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               bool skip_special_tokens)
    : tokenizer_(&tokenizer),
      skip_special_tokens_(skip_special_tokens),
      rules_(tokenizer.detokenization_rules()) {}

void IncrementalDetokenizer::emit(std::string_view text, std::string& out) {
  if (!text.empty()) produced_text_ = true;
  out.append(text);
}

void IncrementalDetokenizer::drain(bool at_end, std::string& out) {
  if (held_.empty()) return;
  std::string text;
  const size_t used = repair_utf8(held_, rules_.repair, at_end, text);
  held_.erase(0, used);
  emit(text, out);
}

std::string IncrementalDetokenizer::push(int32_t id) {
  std::string out;
  if (skip_special_tokens_ && tokenizer_->is_special(id)) return out;
  const std::optional<TokenText> token = tokenizer_->token_text(id);
  if (!token) return out;  // decode() skips ids that have no token too
  if (token->kind == TokenText::Kind::kBytes) {
    held_.append(token->text);
    drain(/*at_end=*/false, out);
    return out;
  }
  // A piece ends the byte run before it, whose last bytes are then decided.
  drain(/*at_end=*/true, out);
  // SentencePiece drops the word-boundary space of the first piece that has one, as long as
  // nothing has been produced and (without remove_extra_whitespaces) no piece lost one yet.
  if (dropped_space_ || produced_text_) at_start_ = false;
  std::string_view text = token->text;
  dropped_space_ = false;
  if (at_start_ && rules_.strip_first_space && token->space_prefix) {
    text.remove_prefix(1);
    dropped_space_ = !rules_.strip_leading_spaces;
  }
  emit(text, out);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  drain(/*at_end=*/true, out);
  produced_text_ = false;
  dropped_space_ = false;
  at_start_ = true;
  return out;
}

}  // namespace shardserve::model
