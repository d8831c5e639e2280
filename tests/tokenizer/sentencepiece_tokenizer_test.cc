#include "model/tokenizer/sentencepiece_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/tokenizer/test_support.h"

namespace shardserve::model {
namespace {

using testing::data_dir;
using testing::escaped;
using testing::read_json;
using Ids = std::vector<int32_t>;

SentencePieceTokenizer kjv() {
  return SentencePieceTokenizer(data_dir() / "kjv-sp" / "tokenizer.model",
                                read_tokenizer_config(data_dir() / "kjv-sp"));
}

// Expected outputs from the sentencepiece library (tests/tokenizer/data/make_sp_reference.py).
TEST(TokenizerSentencePiece, MatchesSentencePieceLibrary) {
  const SentencePieceTokenizer tok = kjv();
  const nlohmann::json cases = read_json(data_dir() / "kjv-sp" / "tokenizer_cases.json");
  ASSERT_GT(cases.size(), 40u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    SCOPED_TRACE("text: " + escaped(text));
    const Ids ids = c["ids"];
    EXPECT_EQ(tok.encode(text, false), ids);
    EXPECT_EQ(tok.encode(text, true), c["ids_with_special"].get<Ids>());
    EXPECT_EQ(escaped(tok.decode(ids, false)), escaped(c["decoded"]));
  }
}

TEST(TokenizerSentencePiece, SpecialPieces) {
  const SentencePieceTokenizer tok = kjv();
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_ids(), Ids({2}));
  EXPECT_TRUE(tok.is_special(0));  // <unk>
  EXPECT_TRUE(tok.is_special(1));
  EXPECT_TRUE(tok.is_special(2));
  EXPECT_FALSE(tok.is_special(3));  // <0x00>
  EXPECT_EQ(tok.token_to_id("<s>"), 1);
  EXPECT_EQ(tok.token_to_id("<0x41>"), 3 + 0x41);
  EXPECT_EQ(tok.token_to_id("certainly not a piece"), std::nullopt);
  EXPECT_EQ(tok.id_to_token(2), "</s>");
  EXPECT_EQ(tok.vocab_size(), 1000);
  // Control pieces decode to nothing; <unk> to " ⁇ " unless skipped.
  const Ids ids = {1, tok.token_to_id("▁And").value(), 0, 2};
  EXPECT_EQ(tok.decode(ids, false), "And \xE2\x81\x87 ");
  EXPECT_EQ(tok.decode(ids, true), "And");
}

TEST(TokenizerSentencePiece, ByteFallbackPiecesFormCharacters) {
  const SentencePieceTokenizer tok = kjv();
  const Ids euro = {3 + 0xE2, 3 + 0x82, 3 + 0xAC};
  EXPECT_EQ(tok.decode(euro, false), "\xE2\x82\xAC");
  const Ids broken = {3 + 0xE2, 3 + 0x82, tok.token_to_id("▁And").value()};
  EXPECT_EQ(tok.decode(broken, false), "\xEF\xBF\xBD\xEF\xBF\xBD And");
}

TEST(TokenizerSentencePiece, AddsEosWhenConfigured) {
  TokenizerConfig config;
  config.add_bos_token = false;
  config.add_eos_token = true;
  const SentencePieceTokenizer tok(data_dir() / "kjv-sp" / "tokenizer.model", config);
  const Ids ids = tok.encode("And", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_NE(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
}

}  // namespace
}  // namespace shardserve::model
