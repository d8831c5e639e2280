#include "model/tokenizer/incremental_detokenizer.h"

#include <gtest/gtest.h>

#include <random>

#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"
#include "tests/tokenizer/test_support.h"

namespace shardserve::model {
namespace {

using testing::data_dir;
using testing::escaped;
using testing::read_json;
using Ids = std::vector<int32_t>;

// Streams `ids` and checks both guarantees: every delta is whole UTF-8 characters, and the
// deltas add up to decode().
void expect_stream_matches_decode(const Tokenizer& tok, const Ids& ids, bool skip_special) {
  IncrementalDetokenizer stream(tok, skip_special);
  std::string joined;
  for (const int32_t id : ids) {
    const std::string delta = stream.push(id);
    EXPECT_EQ(find_invalid_utf8(delta), std::nullopt) << "delta " << escaped(delta);
    joined += delta;
  }
  const std::string rest = stream.flush();
  EXPECT_EQ(find_invalid_utf8(rest), std::nullopt);
  joined += rest;
  EXPECT_EQ(escaped(joined), escaped(tok.decode(ids, skip_special)))
      << "ids " << nlohmann::json(ids).dump() << " skip_special " << skip_special;
}

void stream_all_cases(const Tokenizer& tok, const std::filesystem::path& cases_file) {
  const nlohmann::json cases = read_json(cases_file);
  for (const auto& c : cases) {
    for (const char* key : {"ids", "ids_with_special"}) {
      const Ids ids = c[key];
      expect_stream_matches_decode(tok, ids, false);
      expect_stream_matches_decode(tok, ids, true);
    }
  }
}

// Random ids, biased towards the ones that make streaming hard: single bytes (split
// characters), special and control tokens, and (SentencePiece) pieces with a leading space.
void stream_random(const Tokenizer& tok, std::span<const int32_t> favoured, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> any(0, tok.vocab_size() - 1);
  std::uniform_int_distribution<size_t> pick(0, favoured.size() - 1);
  std::uniform_int_distribution<int> length(1, 16);
  for (int round = 0; round < 3000; ++round) {
    Ids ids(static_cast<size_t>(length(rng)));
    for (int32_t& id : ids) id = (rng() % 3 == 0) ? any(rng) : favoured[pick(rng)];
    expect_stream_matches_decode(tok, ids, round % 2 == 0);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(TokenizerStreaming, ByteLevelBpeCases) {
  const auto tok = BpeTokenizer::load(data_dir() / "kjv-bpe" / "tokenizer.json");
  stream_all_cases(*tok, data_dir() / "kjv-bpe" / "tokenizer_cases.json");
}

TEST(TokenizerStreaming, ByteLevelBpeRandomIds) {
  const auto tok = BpeTokenizer::load(data_dir() / "kjv-bpe" / "tokenizer.json");
  Ids favoured;
  for (int32_t b = 0; b < 256; ++b) favoured.push_back(b);  // byte tokens
  for (int32_t id = tok->vocab_size() - 6; id < tok->vocab_size(); ++id) favoured.push_back(id);
  stream_random(*tok, favoured, 1);
}

TEST(TokenizerStreaming, SentencePieceCases) {
  const SentencePieceTokenizer tok(data_dir() / "kjv-sp" / "tokenizer.model");
  stream_all_cases(tok, data_dir() / "kjv-sp" / "tokenizer_cases.json");
}

Ids sentencepiece_favoured(const Tokenizer& tok) {
  Ids favoured = {0, 1, 2};  // unk, bos, eos
  for (int32_t id = 3; id < 3 + 256; ++id) favoured.push_back(id);  // <0xNN>
  for (const char* piece : {"▁", "▁▁", "▁And", "And", "▁the", "e"}) {
    if (const auto id = tok.token_to_id(piece)) favoured.push_back(*id);
  }
  return favoured;
}

TEST(TokenizerStreaming, SentencePieceRandomIds) {
  const SentencePieceTokenizer tok(data_dir() / "kjv-sp" / "tokenizer.model");
  stream_random(tok, sentencepiece_favoured(tok), 2);
}

// add_dummy_prefix=false, remove_extra_whitespaces=true: every leading space is dropped.
TEST(TokenizerStreaming, SentencePieceWithoutDummyPrefix) {
  const SentencePieceTokenizer tok(data_dir() / "sp-strip-whitespace" / "tokenizer.model");
  EXPECT_TRUE(tok.detokenization_rules().strip_leading_spaces);
  stream_random(tok, sentencepiece_favoured(tok), 3);
}

TEST(TokenizerStreaming, HoldsSplitCharacterUntilComplete) {
  const auto tok = BpeTokenizer::load(data_dir() / "kjv-bpe" / "tokenizer.json");
  IncrementalDetokenizer stream(*tok, false);
  EXPECT_EQ(stream.push(0xF0), "");
  EXPECT_EQ(stream.push(0x9F), "");
  EXPECT_EQ(stream.push(0x98), "");
  EXPECT_EQ(stream.push(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(stream.push(0xE2), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
}

TEST(TokenizerStreaming, SentencePieceDropsOnlyTheFirstSpace) {
  const SentencePieceTokenizer tok(data_dir() / "kjv-sp" / "tokenizer.model");
  const int32_t word = tok.token_to_id("▁And").value();
  IncrementalDetokenizer stream(tok, false);
  EXPECT_EQ(stream.push(1), "");
  EXPECT_EQ(stream.push(word), "And");
  EXPECT_EQ(stream.push(word), " And");
  EXPECT_EQ(stream.flush(), "");
}

}  // namespace
}  // namespace shardserve::model
