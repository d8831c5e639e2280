// The committed fixtures (tests/fixtures/, made by tools/fixtures/make_fixtures.py with
// transformers, tokenizers and sentencepiece): ids, ids with BOS, decoded text and streaming,
// for every case. A missing fixture is a failure, not a skip.
#include <gtest/gtest.h>

#include <random>

#include "model/tokenizer/incremental_detokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_support.h"

namespace shardserve::model {
namespace {

using testing::escaped;
using testing::read_json;
using Ids = std::vector<int32_t>;

void check_fixture(const std::string& name) {
  const auto dir = testing::source_dir() / "tests/fixtures" / name;
  const auto cases_file = dir / "tokenizer_cases.json";
  ASSERT_TRUE(std::filesystem::exists(cases_file))
      << "fixture missing: " << cases_file.string()
      << " (made by tools/fixtures/make_fixtures.py on the GPU machine)";
  const auto tok = load_tokenizer(dir);
  const nlohmann::json cases = read_json(cases_file);
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const std::string text = c["text"];
    SCOPED_TRACE("text: " + escaped(text));
    const Ids ids = c["ids"];
    EXPECT_EQ(tok->encode(text, false), ids);
    EXPECT_EQ(tok->encode(text, true), c["ids_with_special"].get<Ids>());
    EXPECT_EQ(escaped(tok->decode(ids, false)), escaped(c["decoded"]));
    IncrementalDetokenizer stream(*tok, false);
    std::string streamed;
    for (const int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    EXPECT_EQ(escaped(streamed), escaped(c["decoded"]));
  }
  // Random ids (a third of them byte tokens or pieces, which split characters) stream to
  // exactly what decode() gives.
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> any(0, tok->vocab_size() - 1);
  std::uniform_int_distribution<int32_t> low(0, 300);
  for (int round = 0; round < 1000 && !::testing::Test::HasFailure(); ++round) {
    Ids ids(1 + rng() % 12);
    for (int32_t& id : ids) id = rng() % 3 == 0 ? low(rng) : any(rng);
    const bool skip = round % 2 == 1;
    IncrementalDetokenizer stream(*tok, skip);
    std::string streamed;
    for (const int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    EXPECT_EQ(escaped(streamed), escaped(tok->decode(ids, skip))) << nlohmann::json(ids).dump();
  }
  // The prompts of reference.json, as transformers tokenized them (with BOS).
  const auto reference = dir / "reference.json";
  if (std::filesystem::exists(reference)) {
    // (Held in a variable: a range-for over a member of a temporary reads freed memory.)
    const nlohmann::json prompts = read_json(reference)["prompts"];
    for (const auto& p : prompts) {
      EXPECT_EQ(tok->encode(p["text"].get<std::string>(), true), p["ids"].get<Ids>())
          << "prompt " << p["text"];
    }
  }
}

TEST(TokenizerFixtures, Llama3Bpe) { check_fixture("llama3-bpe"); }
TEST(TokenizerFixtures, Llama2SentencePiece) { check_fixture("llama2-sp"); }

}  // namespace
}  // namespace shardserve::model
