#include "model/tokenizer/bpe_tokenizer.h"

#include "common/error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>


#include "tests/tokenizer/test_support.h"
#include "tests/tokenizer/tiny_bpe.h"

namespace shardserve::model {
namespace {

using testing::data_dir;
using testing::escaped;
using testing::read_json;
using Ids = std::vector<int32_t>;

BpeTokenizer tiny(bool ignore_merges = true) {
  return BpeTokenizer(testing::tiny_bpe_json(ignore_merges), "tiny/tokenizer.json", {});
}

// Merges by hand: " the" = Ġ t h e -> (Ġ t) rank 0 -> Ġt h e -> (h e) rank 1 -> Ġt he ->
// (Ġt he) rank 2 -> Ġthe.
TEST(TokenizerBpe, MergesLowestRankFirst) {
  const BpeTokenizer tok = tiny();
  EXPECT_EQ(tok.encode(" the", false), Ids({258}));
  EXPECT_EQ(tok.encode("the", false), Ids({'t', 257}));  // no "t h" merge
  EXPECT_EQ(tok.encode("  the   the\n\n the", false), Ids({32, 258, 32, 32, 258, 10, 10, 258}));
}

// Equal ranks merge leftmost first; merged symbols merge again (aa aa -> aaaa).
TEST(TokenizerBpe, MergesLeftmostAndRepeatedly) {
  const BpeTokenizer tok = tiny();
  EXPECT_EQ(tok.encode("aaa", false), Ids({259, 'a'}));
  EXPECT_EQ(tok.encode("aaaa", false), Ids({260}));
  EXPECT_EQ(tok.encode("aaaaa", false), Ids({260, 'a'}));
}

// Llama 3's ignore_merges: a pre-token that is in the vocabulary is taken whole.
TEST(TokenizerBpe, IgnoreMergesTakesWholeVocabularyWords) {
  EXPECT_EQ(tiny(true).encode(" xyz", false), Ids({261}));
  EXPECT_EQ(tiny(false).encode(" xyz", false), Ids({32, 'x', 'y', 'z'}));
  EXPECT_EQ(tiny(true).encode(" xyzw", false), Ids({32, 'x', 'y', 'z', 'w'}));
}

TEST(TokenizerBpe, AddedTokensMatchLongestFirstAndAsWholeTokens) {
  const BpeTokenizer tok = tiny();
  EXPECT_EQ(tok.encode("x <|eot_id|><|begin_of_text|>y", false), Ids({'x', 32, 263, 262, 'y'}));
  EXPECT_EQ(tok.encode("<|im|>end <|im|>en <|im|>", false),
            Ids({265, 32, 264, 'e', 'n', 32, 264}));
  EXPECT_EQ(tok.encode("<|im|><mask>", false), Ids({264, 266}));
}

TEST(TokenizerBpe, AddedTokenStripsWhitespaceAroundIt) {
  const BpeTokenizer tok = tiny();
  EXPECT_EQ(tok.encode("a <mask> b", false), Ids({'a', 266, 'b'}));
  EXPECT_EQ(tok.encode("a  <mask>  \n b", false), Ids({'a', 266, 'b'}));
  EXPECT_EQ(tok.decode(Ids({'a', 266, 'b'}), false), "a<mask>b");
}

TEST(TokenizerBpe, TemplateAddsBos) {
  const BpeTokenizer tok = tiny();
  EXPECT_EQ(tok.encode(" the", true), Ids({262, 258}));
  EXPECT_EQ(tok.encode("", true), Ids({262}));
  EXPECT_EQ(tok.bos_id(), 262);
}

TEST(TokenizerBpe, MergesMayBeStringsOrPairs) {
  nlohmann::json json = testing::tiny_bpe_json();
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& m : json["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  json["model"]["merges"] = pairs;
  const BpeTokenizer tok(json, "pairs/tokenizer.json", {});
  EXPECT_EQ(tok.encode(" the aaaa", false), Ids({258, 32, 260}));
}

// GPT-2 style: a lone ByteLevel pre-tokenizer with its own regex.
TEST(TokenizerBpe, LoneByteLevelUsesGpt2Regex) {
  nlohmann::json json = testing::tiny_bpe_json();
  json["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const BpeTokenizer tok(json, "gpt2/tokenizer.json", {});
  EXPECT_EQ(tok.encode("12345 the", false), Ids({'1', '2', '3', '4', '5', 258}));
  json["pre_tokenizer"]["add_prefix_space"] = true;
  const BpeTokenizer prefixed(json, "gpt2/tokenizer.json", {});
  EXPECT_EQ(prefixed.encode("the", false), Ids({258}));
}

TEST(TokenizerBpe, DecodeJoinsBytesAndRepairsUtf8) {
  const BpeTokenizer tok = tiny();
  // "€" is E2 82 AC: byte tokens 226 130 172.
  EXPECT_EQ(tok.decode(Ids({226, 130, 172, 'x'}), false), "\xE2\x82\xAC" "x");
  EXPECT_EQ(tok.decode(Ids({226, 130, 'x'}), false), "\xEF\xBF\xBD" "x");
  // A special token in the middle of a character breaks it, as in HF.
  EXPECT_EQ(tok.decode(Ids({226, 263, 130, 172}), false),
            "\xEF\xBF\xBD<|eot_id|>\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode(Ids({226, 263, 130, 172}), true), "\xE2\x82\xAC");
  EXPECT_EQ(tok.decode(Ids({-1, 9999, 'a'}), false), "a");
}

TEST(TokenizerBpe, Vocabulary) {
  const BpeTokenizer tok = tiny();
  EXPECT_EQ(tok.vocab_size(), 267);
  EXPECT_EQ(tok.token_to_id("Ġthe"), 258);
  EXPECT_EQ(tok.token_to_id("<|eot_id|>"), 263);
  EXPECT_EQ(tok.token_to_id("nope"), std::nullopt);
  EXPECT_EQ(tok.id_to_token(258), "Ġthe");
  EXPECT_TRUE(tok.is_special(263));
  EXPECT_FALSE(tok.is_special(265));
  EXPECT_FALSE(tok.is_special(258));
  EXPECT_EQ(tok.token_text(258)->text, " the");
}

TEST(TokenizerBpe, RejectsInvalidUtf8Input) {
  const BpeTokenizer tok = tiny();
  EXPECT_THAT([&] { tok.encode("ok\xC3", false); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("not valid UTF-8 at byte 2")));
}

// A tokenizer trained by HuggingFace tokenizers with Llama 3's settings; the expected outputs
// were computed by HuggingFace tokenizers itself (tests/tokenizer/data/make_reference.js).
TEST(TokenizerBpe, MatchesHuggingFaceOnKjvTokenizer) {
  const auto dir = data_dir() / "kjv-bpe";
  const auto tok = BpeTokenizer::load(dir / "tokenizer.json");
  const nlohmann::json cases = read_json(dir / "tokenizer_cases.json");
  ASSERT_GT(cases.size(), 40u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    SCOPED_TRACE("text: " + escaped(text));
    const Ids ids = c["ids"];
    EXPECT_EQ(tok->encode(text, false), ids);
    EXPECT_EQ(tok->encode(text, true), c["ids_with_special"].get<Ids>());
    EXPECT_EQ(escaped(tok->decode(ids, false)), escaped(c["decoded"]));
    EXPECT_EQ(escaped(tok->decode(c["ids_with_special"].get<Ids>(), true)),
              escaped(c["decoded_skip_special"]));
  }
}

TEST(TokenizerBpe, DecodesArbitraryIdsLikeHuggingFace) {
  const auto dir = data_dir() / "kjv-bpe";
  const auto tok = BpeTokenizer::load(dir / "tokenizer.json");
  const nlohmann::json cases = read_json(dir / "decode_cases.json");
  ASSERT_GT(cases.size(), 100u);
  for (const auto& c : cases) {
    const Ids ids = c["ids"];
    SCOPED_TRACE("ids: " + nlohmann::json(ids).dump());
    EXPECT_EQ(escaped(tok->decode(ids, false)), escaped(c["decoded"]));
    EXPECT_EQ(escaped(tok->decode(ids, true)), escaped(c["decoded_skip_special"]));
  }
}

// A megabyte round-trips. Its speed is measured by bench/tokenizer (tokenizer_bench), not here:
// a quadratic merge or regex would show as this test's CTest timeout.
TEST(TokenizerBpe, EncodesAMegabyteAndDecodesItBack) {
  const auto tok = BpeTokenizer::load(data_dir() / "kjv-bpe" / "tokenizer.json");
  std::string text;
  const nlohmann::json cases = read_json(data_dir() / "kjv-bpe" / "tokenizer_cases.json");
  while (text.size() < (1u << 20)) {
    for (const auto& c : cases) text += c["text"].get<std::string>() + " ";
  }
  const Ids ids = tok->encode(text, false);
  EXPECT_GT(ids.size(), text.size() / 8);
  EXPECT_LT(ids.size(), text.size());
  EXPECT_EQ(tok->decode(ids, false), text);
}

}  // namespace
}  // namespace shardserve::model

namespace shardserve::model {
namespace {

// Long runs of one character class stress the regex (backtracking, JIT stack) and the merge
// queue (one huge pre-token).
TEST(TokenizerBpe, LongRunsOfOneCharacterClass) {
  const auto tok = BpeTokenizer::load(testing::data_dir() / "kjv-bpe" / "tokenizer.json");
  for (const std::string unit : {" ", "a", "1", "!", "\n", " \n", "\xE4\xB8\xAD", "ab "}) {
    std::string text;
    while (text.size() < 300000) text += unit;
    SCOPED_TRACE("unit: " + testing::escaped(unit));
    const std::vector<int32_t> ids = tok->encode(text, false);
    EXPECT_EQ(tok->decode(ids, false), text);
  }
}

}  // namespace
}  // namespace shardserve::model

namespace shardserve::model {
namespace {

// Optional members may be left out, as hand-written or older files do.
TEST(TokenizerBpe, AcceptsMinimalJson) {
  nlohmann::json json = testing::tiny_bpe_json();
  for (const char* key : {"version", "truncation", "padding", "added_tokens", "normalizer",
                          "post_processor"}) {
    json.erase(key);
  }
  json["pre_tokenizer"]["pretokenizers"][0].erase("invert");
  json["pre_tokenizer"]["pretokenizers"][1] = {{"type", "ByteLevel"}, {"use_regex", false}};
  json["model"] = {{"type", "BPE"}, {"vocab", json["model"]["vocab"]}, {"merges", json["model"]["merges"]}};
  const BpeTokenizer tok(json, "minimal/tokenizer.json", {});
  EXPECT_EQ(tok.encode(" the", true), std::vector<int32_t>({258}));
  EXPECT_EQ(tok.bos_id(), std::nullopt);
  json["pre_tokenizer"]["pretokenizers"][0]["invert"] = true;
  EXPECT_THAT([&] { BpeTokenizer(json, "minimal/tokenizer.json", {}); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("invert=true is not supported")));
}

}  // namespace
}  // namespace shardserve::model
