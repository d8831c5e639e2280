#pragma once
// The tokenizer interface the server uses: text -> ids for prompts, ids -> text for outputs,
// and what streaming needs (TokenText, see IncrementalDetokenizer). Two formats implement it:
// HuggingFace tokenizer.json byte-level BPE (Llama 3) and SentencePiece tokenizer.model
// (Llama 2). Implementations are immutable after loading; every method is safe to call from
// several threads at once.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/utf8.h"

namespace shardserve::model {

// What one token adds to decoded text, in enough detail to decode it piece by piece exactly as
// decode() does at once.
struct TokenText {
  enum class Kind : uint8_t {
    // Raw bytes joined with the neighbouring kBytes tokens' bytes before UTF-8 repair
    // (byte-level BPE tokens, SentencePiece <0xNN> byte pieces).
    kBytes,
    // Finished text (other SentencePiece pieces; "" for control tokens).
    kPiece,
  };
  Kind kind = Kind::kBytes;
  std::string_view text;
  // kPiece: `text` starts with the space that stands for SentencePiece's word-boundary mark,
  // which decoding drops at the very start of the output.
  bool space_prefix = false;
};

// How decode() puts TokenTexts together.
struct DetokenizationRules {
  Utf8Repair repair = Utf8Repair::kMaximalSubpart;
  // SentencePiece with add_dummy_prefix: the first piece's leading space is dropped.
  bool strip_first_space = false;
  // SentencePiece with remove_extra_whitespaces: every piece's leading space is dropped until
  // some text has been produced.
  bool strip_leading_spaces = false;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` (UTF-8; invalid UTF-8 is an Error). With `add_special_tokens`, the
  // tokens the model's tokenizer adds around a sequence (BOS) are added as it does. Text of
  // special/added tokens in the input (e.g. "<|eot_id|>") becomes those tokens (tokenizer.json)
  // or stays text (SentencePiece, which has no such matching).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;

  // Text of `ids`, as the reference library decodes them (HF tokenizers' decode; SentencePiece's
  // DecodeIds): invalid UTF-8 becomes U+FFFD. Ids outside [0, vocab_size()) and ids no token
  // has are skipped, as HF does. With `skip_special_tokens`, tokens is_special() are left out.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

  // What token `id` contributes to decoded text (for streaming); nullopt for an id no token has.
  virtual std::optional<TokenText> token_text(int32_t id) const = 0;
  virtual DetokenizationRules detokenization_rules() const = 0;

  // One more than the largest id.
  virtual int32_t vocab_size() const = 0;
  // The id of a token spelled as in the tokenizer file ("Ġthe", "▁the", "<|eot_id|>").
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  // The token's spelling in the tokenizer file.
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  // Special tokens: tokenizer.json added tokens with "special": true; SentencePiece control
  // and unknown pieces.
  virtual bool is_special(int32_t id) const = 0;

  virtual std::optional<int32_t> bos_id() const = 0;
  // End-of-sequence ids known to the tokenizer (the model's config may list more).
  virtual std::vector<int32_t> eos_ids() const = 0;
  // The chat template (Jinja source) from tokenizer_config.json or chat_template.jinja.
  virtual std::optional<std::string> chat_template() const = 0;
};

// Loads the tokenizer of a HuggingFace model folder: tokenizer.json when it is a byte-level BPE
// (Llama 3 style); else tokenizer.model (SentencePiece, Llama 2 style), which Llama 2 folders
// ship next to a tokenizer.json converted from it; else tokenizer.json (whose loading then says
// what it does not support). tokenizer_config.json, when present, supplies BOS/EOS, whether to
// add them, and the chat template.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir);

}  // namespace shardserve::model
