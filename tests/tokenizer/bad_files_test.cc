// Files the loader must refuse, each with a message that says which file and what is wrong.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_support.h"
#include "tests/tokenizer/tiny_bpe.h"

namespace shardserve::model {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using testing::ScratchDir;
using testing::write_file;

// Writes `json` as tokenizer.json in a scratch folder and loads the folder.
void load_json(const nlohmann::json& json, const ScratchDir& dir) {
  write_file(dir.path() / "tokenizer.json", json.dump());
  load_tokenizer(dir.path());
}

template <typename Matcher>
void expect_refused(const nlohmann::json& json, Matcher matcher) {
  ScratchDir dir;
  EXPECT_THAT([&] { load_json(json, dir); }, ThrowsMessage<Error>(matcher));
}

TEST(TokenizerBadFiles, MissingFolderOrFiles) {
  ScratchDir dir;
  EXPECT_THAT([&] { load_tokenizer(dir.path() / "nope"); },
              ThrowsMessage<Error>(HasSubstr("not a directory")));
  EXPECT_THAT([&] { load_tokenizer(dir.path()); },
              ThrowsMessage<Error>(HasSubstr("has neither tokenizer.json nor tokenizer.model")));
  EXPECT_THAT([&] { BpeTokenizer::load(dir.path() / "tokenizer.json"); },
              ThrowsMessage<Error>(AllOf(HasSubstr("tokenizer.json"), HasSubstr("no such file"))));
  EXPECT_THAT([&] { SentencePieceTokenizer(dir.path() / "tokenizer.model"); },
              ThrowsMessage<Error>(AllOf(HasSubstr("tokenizer.model"), HasSubstr("no such file"))));
}

TEST(TokenizerBadFiles, InvalidJson) {
  ScratchDir dir;
  write_file(dir.path() / "tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
  EXPECT_THAT([&] { load_tokenizer(dir.path()); },
              ThrowsMessage<Error>(AllOf(HasSubstr("tokenizer.json is not valid JSON"),
                                         HasSubstr("parse error"))));
}

TEST(TokenizerBadFiles, UnknownModelType) {
  nlohmann::json json = testing::tiny_bpe_json();
  json["model"]["type"] = "Unigram";
  expect_refused(json, AllOf(HasSubstr("tokenizer.json: model"),
                             HasSubstr("model type \"Unigram\" is not supported")));
}

TEST(TokenizerBadFiles, MalformedMerges) {
  nlohmann::json json = testing::tiny_bpe_json();
  json["model"]["merges"][2] = "Ġt";
  expect_refused(json, AllOf(HasSubstr("model.merges[2]"), HasSubstr("\"Ġt\""),
                             HasSubstr("two tokens, one space")));
  json["model"]["merges"][2] = nlohmann::json::array({"Ġt"});
  expect_refused(json, AllOf(HasSubstr("model.merges[2]"), HasSubstr("[left, right]")));
  json["model"]["merges"][2] = "Ġt hx";
  expect_refused(json, AllOf(HasSubstr("model.merges[2]"),
                             HasSubstr("needs token \"hx\", which is not in model.vocab")));
  json["model"]["merges"][2] = "h a";  // both in the vocabulary, "ha" is not
  expect_refused(json, HasSubstr("needs token \"ha\""));
}

TEST(TokenizerBadFiles, UnknownPreTokenizer) {
  nlohmann::json json = testing::tiny_bpe_json();
  json["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Digits"}, {"individual_digits", true}};
  expect_refused(json, AllOf(HasSubstr("pre_tokenizer.pretokenizers[0].type"),
                             HasSubstr("pre-tokenizer type \"Digits\" is not supported")));
  json["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}};
  expect_refused(json, HasSubstr("the pre-tokenizer must end in ByteLevel"));
}

TEST(TokenizerBadFiles, BadSplitRegex) {
  nlohmann::json json = testing::tiny_bpe_json();
  json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  expect_refused(json, AllOf(HasSubstr("pre_tokenizer.pretokenizers[0].pattern"),
                             HasSubstr("does not compile")));
  json = testing::tiny_bpe_json();
  json["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  expect_refused(json, HasSubstr("Split behavior \"Removed\" is not supported"));
}

TEST(TokenizerBadFiles, OtherUnsupportedComponents) {
  nlohmann::json json = testing::tiny_bpe_json();
  json["normalizer"] = {{"type", "NFC"}};
  expect_refused(json, AllOf(HasSubstr("tokenizer.json: normalizer"),
                             HasSubstr("normalizer type \"NFC\" is not supported")));
  json = testing::tiny_bpe_json();
  json["decoder"] = {{"type", "Metaspace"}};
  expect_refused(json, AllOf(HasSubstr("decoder"), HasSubstr("\"Metaspace\" is not supported")));
  json = testing::tiny_bpe_json();
  json["post_processor"] = {{"type", "RobertaProcessing"}};
  expect_refused(json, HasSubstr("post-processor type \"RobertaProcessing\" is not supported"));
  json = testing::tiny_bpe_json();
  json["model"]["dropout"] = 0.1;
  expect_refused(json, AllOf(HasSubstr("model.dropout"), HasSubstr("not supported")));
  json = testing::tiny_bpe_json();
  json["truncation"] = {{"max_length", 8}};
  expect_refused(json, AllOf(HasSubstr("truncation"), HasSubstr("encode would truncate")));
  json = testing::tiny_bpe_json();
  json["model"].erase("vocab");
  expect_refused(json, HasSubstr("tokenizer.json: model.vocab is missing"));
}

TEST(TokenizerBadFiles, AddedTokenIdThatHuggingFaceWouldNotGive) {
  nlohmann::json json = testing::tiny_bpe_json();
  json["added_tokens"][1]["id"] = 300;
  expect_refused(json, AllOf(HasSubstr("added_tokens[1].id"),
                             HasSubstr("\"<|eot_id|>\" has id 300, but HuggingFace gives it id 263")));
}

TEST(TokenizerBadFiles, CorruptSentencePieceModel) {
  ScratchDir dir;
  write_file(dir.path() / "tokenizer.model", std::string("\x0a\xff\xff\xff\x0fgarbage", 12));
  EXPECT_THAT([&] { load_tokenizer(dir.path()); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cannot load SentencePiece model"),
                                         HasSubstr("tokenizer.model"))));
}

TEST(TokenizerBadFiles, ConfigNamingAnUnknownToken) {
  ScratchDir dir;
  write_file(dir.path() / "tokenizer.json", testing::tiny_bpe_json().dump());
  write_file(dir.path() / "tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  EXPECT_THAT([&] { load_tokenizer(dir.path()); },
              ThrowsMessage<Error>(HasSubstr("eos_token \"<|nope|>\" is not a token")));
  write_file(dir.path() / "tokenizer_config.json", R"({"add_bos_token": "yes"})");
  EXPECT_THAT([&] { load_tokenizer(dir.path()); },
              ThrowsMessage<Error>(AllOf(HasSubstr("tokenizer_config.json: add_bos_token"),
                                         HasSubstr("expected true or false"))));
}

}  // namespace
}  // namespace shardserve::model
