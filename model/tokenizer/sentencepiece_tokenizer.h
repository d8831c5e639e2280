#pragma once
// A SentencePiece tokenizer.model (Llama 2), through libsentencepiece: ids are exactly
// SentencePieceProcessor's. Streaming needs the model's normalizer flags, which the library
// keeps in its protobuf; they are read from the serialized model (see the .cc).
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/tokenizer_config.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace shardserve::model {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Loads `model_file`; a missing, unreadable or corrupt file is an Error naming it and the
  // library's status. `config` may name BOS/EOS and say whether to add them (Llama 2: BOS yes,
  // EOS no, which is also the default).
  explicit SentencePieceTokenizer(const std::filesystem::path& model_file,
                                  TokenizerConfig config = {});
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::optional<TokenText> token_text(int32_t id) const override;
  DetokenizationRules detokenization_rules() const override { return rules_; }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::vector<int32_t> eos_ids() const override { return eos_ids_; }
  std::optional<std::string> chat_template() const override { return config_.chat_template; }

 private:
  struct Piece {
    TokenText::Kind kind = TokenText::Kind::kPiece;
    std::string text;  // decoded form: spaces for "▁", the byte for <0xNN>, "" for control
    bool space_prefix = false;
    bool special = false;
  };

  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::string file_;
  std::vector<Piece> pieces_;
  DetokenizationRules rules_;
  std::optional<int32_t> bos_id_;
  std::vector<int32_t> eos_ids_;
  bool add_bos_ = true;
  bool add_eos_ = false;
  TokenizerConfig config_;
};

}  // namespace shardserve::model
