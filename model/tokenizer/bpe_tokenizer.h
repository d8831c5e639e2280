#pragma once
// HuggingFace tokenizer.json with a byte-level BPE model, as Llama 3 (and GPT-2) ship it:
//   normalizer null; pre_tokenizer Split(Regex, Isolated)* then ByteLevel (its own GPT-2 regex
//   when use_regex); model BPE (ignore_merges, byte_fallback, unk_token honoured);
//   added_tokens; post_processor TemplateProcessing / ByteLevel / Sequence of them, or null;
//   decoder ByteLevel.
// Anything else is refused with the JSON path and value, rather than tokenized differently.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "model/tokenizer/added_vocabulary.h"
#include "model/tokenizer/bpe_model.h"
#include "model/tokenizer/regex_splitter.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/tokenizer_config.h"

namespace shardserve::model {

class BpeTokenizer final : public Tokenizer {
 public:
  // `json` is the parsed tokenizer.json; `file` names it in errors.
  BpeTokenizer(const nlohmann::json& json, const std::string& file, TokenizerConfig config);
  static std::unique_ptr<BpeTokenizer> load(const std::filesystem::path& tokenizer_json,
                                            TokenizerConfig config = {});
  // Whether `json` is a byte-level tokenizer (its pre-tokenizer ends in ByteLevel), the kind
  // this class reads; says nothing about whether the rest is supported.
  static bool is_byte_level(const nlohmann::json& json);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::optional<TokenText> token_text(int32_t id) const override;
  DetokenizationRules detokenization_rules() const override { return {}; }
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::vector<int32_t> eos_ids() const override { return eos_ids_; }
  std::optional<std::string> chat_template() const override { return config_.chat_template; }

 private:
  struct Token {
    std::string spelling;  // as in the file
    std::string bytes;     // what the ByteLevel decoder makes of it
    bool present = false;
    bool special = false;
  };
  void encode_gap(std::string_view text, size_t step, std::vector<int32_t>& ids) const;

  std::vector<Token> tokens_;  // by id
  StringIdMap spelled_ids_;    // added tokens take precedence, as in HF
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedVocabulary> added_;
  std::vector<RegexSplitter> splits_;
  std::unique_ptr<RegexSplitter> byte_level_regex_;  // ByteLevel use_regex: GPT-2's split
  bool add_prefix_space_ = false;
  std::vector<int32_t> prefix_ids_;  // TemplateProcessing single: before $A
  std::vector<int32_t> suffix_ids_;  // ... and after it
  std::optional<int32_t> bos_id_;
  std::vector<int32_t> eos_ids_;
  TokenizerConfig config_;
};

}  // namespace shardserve::model
