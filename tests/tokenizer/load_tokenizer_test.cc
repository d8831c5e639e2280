#include <gtest/gtest.h>

#include "model/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_support.h"
#include "tests/tokenizer/tiny_bpe.h"

namespace shardserve::model {
namespace {

using testing::data_dir;
using testing::ScratchDir;
using testing::write_file;

TEST(TokenizerLoad, ByteLevelTokenizerJsonWithConfig) {
  const auto tok = load_tokenizer(data_dir() / "kjv-bpe");
  EXPECT_EQ(tok->bos_id(), tok->token_to_id("<|begin_of_text|>"));
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>({*tok->token_to_id("<|end_of_text|>")}));
  ASSERT_TRUE(tok->chat_template().has_value());
  EXPECT_NE(tok->chat_template()->find("bos_token"), std::string::npos);
}

TEST(TokenizerLoad, SentencePieceModel) {
  const auto tok = load_tokenizer(data_dir() / "kjv-sp");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->encode("And", true).front(), 1);
  EXPECT_EQ(tok->chat_template(), std::nullopt);
}

// A Llama 2 folder: tokenizer.model next to a tokenizer.json converted from it.
TEST(TokenizerLoad, PrefersSentencePieceOverConvertedTokenizerJson) {
  ScratchDir dir;
  std::filesystem::copy_file(data_dir() / "kjv-sp" / "tokenizer.model", dir.path() / "tokenizer.model");
  nlohmann::json converted = testing::tiny_bpe_json();
  converted["pre_tokenizer"] = nullptr;
  converted["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "▁"}}}}};
  write_file(dir.path() / "tokenizer.json", converted.dump());
  const auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->vocab_size(), 1000);
  // ... but a byte-level tokenizer.json wins over a stray tokenizer.model.
  write_file(dir.path() / "tokenizer.json", testing::tiny_bpe_json().dump());
  EXPECT_EQ(load_tokenizer(dir.path())->vocab_size(), 267);
}

TEST(TokenizerLoad, ChatTemplateFileWinsOverConfig) {
  ScratchDir dir;
  write_file(dir.path() / "tokenizer.json", testing::tiny_bpe_json().dump());
  write_file(dir.path() / "tokenizer_config.json",
             R"({"chat_template": [{"name": "tool_use", "template": "T"},
                                   {"name": "default", "template": "D"}],
                 "bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>"}})");
  EXPECT_EQ(load_tokenizer(dir.path())->chat_template(), "D");
  EXPECT_EQ(load_tokenizer(dir.path())->bos_id(), 262);
  write_file(dir.path() / "chat_template.jinja", "J");
  EXPECT_EQ(load_tokenizer(dir.path())->chat_template(), "J");
}

}  // namespace
}  // namespace shardserve::model
