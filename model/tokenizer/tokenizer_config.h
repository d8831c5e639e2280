#pragma once
// What a model folder's tokenizer_config.json (and chat_template.jinja) add to the tokenizer
// file: which tokens are BOS/EOS, whether BOS/EOS are added, the chat template.
#include <filesystem>
#include <optional>
#include <string>

namespace shardserve::model {

struct TokenizerConfig {
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> chat_template;
};

// Reads `model_dir`/tokenizer_config.json if present (all fields empty otherwise) and
// `model_dir`/chat_template.jinja, which transformers prefers over the config's template.
TokenizerConfig read_tokenizer_config(const std::filesystem::path& model_dir);

}  // namespace shardserve::model
