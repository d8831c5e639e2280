#include "common/error.h"
#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/json_access.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/tokenizer_config.h"

namespace shardserve::model {

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir) {
  require(std::filesystem::is_directory(model_dir), "cannot load a tokenizer from {}: not a "
          "directory", model_dir.string());
  const std::filesystem::path json_file = model_dir / "tokenizer.json";
  const std::filesystem::path sp_file = model_dir / "tokenizer.model";
  const bool have_json = std::filesystem::exists(json_file);
  const bool have_sp = std::filesystem::exists(sp_file);
  require(have_json || have_sp, "{} has neither tokenizer.json nor tokenizer.model",
          model_dir.string());
  TokenizerConfig config = read_tokenizer_config(model_dir);
  if (have_json) {
    nlohmann::json json = read_json_file(json_file);
    // Llama 2 folders carry a tokenizer.json converted from tokenizer.model (Metaspace-style,
    // not byte-level); the SentencePiece model is the original, so it is used instead.
    if (!have_sp || BpeTokenizer::is_byte_level(json)) {
      return std::make_unique<BpeTokenizer>(json, json_file.string(), std::move(config));
    }
  }
  return std::make_unique<SentencePieceTokenizer>(sp_file, std::move(config));
}

}  // namespace shardserve::model
