// Validation of a decoded submit into the scheduler's RequestSpec: each out-of-range value,
// empty or over-long prompt and unknown token is refused naming the field and the value; good
// requests become the spec the scheduler needs.
#include "api/validate.h"

#include <gtest/gtest.h>

#include <limits>

#include "model/tokenizer/tokenizer.h"
#include "tests/api/test_support.h"

namespace shardserve::api {
namespace {

class Validate : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = model::load_tokenizer(testing::fixture("llama3-bpe"));
    model_.name = "llama3-bpe";
    model_.vocab_size = 1000;
    model_.max_model_len = 256;
    model_.block_size = 16;
    model_.kv_blocks_per_replica = 1000;
    model_.max_num_seqs = 8;
    ctx_.model = &model_;
    ctx_.tokenizer = tokenizer_.get();
    ctx_.chat_format = ChatFormat::kLlama3;
  }
  static SubmitRequest base() {
    SubmitRequest s;
    s.id = "r";
    s.prompt_ids = std::vector<int32_t>{1, 2, 3};
    return s;
  }
  void expect_refused(const SubmitRequest& s, const std::string& field, const std::string& part) {
    try {
      validate_submit(s, ctx_);
      ADD_FAILURE() << "accepted; expected an error on " << field;
    } catch (const ProtocolError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidRequest);
      EXPECT_EQ(e.field(), field) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  }
  std::unique_ptr<model::Tokenizer> tokenizer_;
  ModelInfo model_;
  ValidationContext ctx_;
};

TEST_F(Validate, GoodRequestBecomesTheSpec) {
  SubmitRequest s = base();
  s.max_tokens = 10;
  s.temperature = 0.7f;
  s.top_k = -1;
  s.seed = 42;
  s.stop = {"END"};
  s.stop_token_ids = {997};
  s.priority = 3;
  s.ignore_eos = true;
  s.logprobs = 2;
  const auto v = validate_submit(s, ctx_);
  EXPECT_EQ(v.spec.prompt_token_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(v.spec.max_tokens, 10);
  EXPECT_EQ(v.spec.sampling.temperature, 0.7f);
  EXPECT_EQ(v.spec.sampling.top_k, 0);  // -1 = off
  EXPECT_EQ(v.spec.sampling.seed, 42u);
  EXPECT_EQ(v.spec.sampling.logprobs, 2);
  EXPECT_EQ(v.spec.stop_strings, std::vector<std::string>{"END"});
  EXPECT_EQ(v.spec.stop_token_ids, std::vector<int32_t>{997});
  EXPECT_EQ(v.spec.priority, 3);
  EXPECT_TRUE(v.spec.ignore_eos);
  EXPECT_NE(v.spec.text_stream, nullptr);
  EXPECT_EQ(v.prompt_tokens, 3);
}

TEST_F(Validate, MaxTokensDefaultsToTheRestOfTheContext) {
  const auto v = validate_submit(base(), ctx_);
  EXPECT_EQ(v.max_tokens, 253);
  model_.kv_blocks_per_replica = 4;  // 64 tokens: the pool, not the context, limits
  EXPECT_EQ(validate_submit(base(), ctx_).max_tokens, 61);
}

TEST_F(Validate, TextPromptIsTokenizedWithBos) {
  SubmitRequest s = base();
  s.prompt_ids.reset();
  s.prompt = "In the beginning";
  const auto v = validate_submit(s, ctx_);
  EXPECT_EQ(v.spec.prompt_token_ids, tokenizer_->encode("In the beginning", true));
  EXPECT_EQ(v.spec.prompt_token_ids.front(), 988);
  s.add_special_tokens = false;
  EXPECT_EQ(validate_submit(s, ctx_).spec.prompt_token_ids,
            tokenizer_->encode("In the beginning", false));
}

TEST_F(Validate, ChatIsRenderedWithTheFormat) {
  SubmitRequest s = base();
  s.prompt_ids.reset();
  s.messages =
      std::vector<ChatMessage>{{"system", "You are terse."}, {"user", "Who created the heaven?"}};
  const auto v = validate_submit(s, ctx_);
  // tests/fixtures/llama3-bpe/tokenizer_cases.json: transformers' rendering of this chat.
  const auto cases = testing::read_json(testing::fixture("llama3-bpe/tokenizer_cases.json"));
  EXPECT_EQ(v.spec.prompt_token_ids, cases.back()["ids"].get<std::vector<int32_t>>());
}

TEST_F(Validate, EachBadValueIsRefused) {
  auto with = [](auto change) {
    SubmitRequest s = base();
    change(s);
    return s;
  };
  expect_refused(with([](auto& s) { s.id = ""; }), "id", "id must not be empty");
  expect_refused(with([](auto& s) { s.id = std::string(129, 'x'); }), "id",
                 "at most 128 bytes, got 129");
  expect_refused(with([](auto& s) { s.id = "a\nb"; }), "id", "control characters");
  expect_refused(with([](auto& s) { s.temperature = -0.5f; }), "temperature",
                 "temperature must be in [0, 100], got -0.5");
  expect_refused(with([](auto& s) { s.temperature = 1000.0f; }), "temperature", "got 1000");
  expect_refused(with([](auto& s) { s.top_p = 0.0f; }), "top_p", "top_p must be in (0, 1], got 0");
  expect_refused(with([](auto& s) { s.top_p = 1.5f; }), "top_p", "got 1.5");
  expect_refused(with([](auto& s) { s.top_k = -2; }), "top_k",
                 "top_k must be >= 0 (0 or -1: off), got -2");
  expect_refused(with([](auto& s) { s.min_p = 2.0f; }), "min_p", "min_p must be in [0, 1], got 2");
  expect_refused(with([](auto& s) { s.repetition_penalty = 0.0f; }), "repetition_penalty",
                 "(0, 100], got 0");
  expect_refused(with([](auto& s) { s.frequency_penalty = 2.5f; }), "frequency_penalty",
                 "[-2, 2], got 2.5");
  expect_refused(with([](auto& s) { s.presence_penalty = -3.0f; }), "presence_penalty",
                 "[-2, 2], got -3");
  expect_refused(with([](auto& s) { s.logprobs = 21; }), "logprobs",
                 "logprobs must be in [0, 20], got 21");
  expect_refused(with([](auto& s) { s.logprobs = -1; }), "logprobs", "got -1");
  expect_refused(with([](auto& s) {
                   s.stop = {"ok", ""};
                 }),
                 "stop[1]", "stop[1] is an empty stop string");
  expect_refused(with([](auto& s) { s.stop = std::vector<std::string>(17, "x"); }), "stop",
                 "at most 16 stop strings, got 17");
  expect_refused(with([](auto& s) { s.stop = {std::string(300, 'x')}; }), "stop[0]",
                 "at most 256 bytes, got 300");
  expect_refused(with([](auto& s) {
                   s.stop_token_ids = {5, 1000};
                 }),
                 "stop_token_ids[1]",
                 "stop_token_ids[1] = 1000 is not a token id (the vocabulary has ids 0..999)");
  expect_refused(with([](auto& s) { s.prompt_ids = std::vector<int32_t>{}; }), "prompt_ids",
                 "prompt_ids is empty");
  expect_refused(with([](auto& s) {
                   s.prompt_ids = std::vector<int32_t>{1, -4};
                 }),
                 "prompt_ids[1]", "= -4 is not a token id");
  expect_refused(with([](auto& s) {
                   s.prompt_ids = std::vector<int32_t>{3, 2000};
                 }),
                 "prompt_ids[1]", "= 2000");
  expect_refused(with([](auto& s) { s.prompt_ids = std::vector<int32_t>(256, 5); }), "prompt_ids",
                 "the prompt has 256 tokens; the context length is 256 tokens, so it leaves no "
                 "room to generate");
  expect_refused(with([](auto& s) { s.max_tokens = 0; }), "max_tokens",
                 "max_tokens must be at least 1, got 0");
  expect_refused(with([](auto& s) { s.max_tokens = 254; }), "max_tokens",
                 "max_tokens = 254 with a prompt of 3 tokens exceeds 256 tokens (the context "
                 "length is 256); at most 253 here");
  expect_refused(with([](auto& s) {
                   s.prompt_ids.reset();
                   s.prompt = "";
                 }),
                 "prompt", "prompt is empty");
  expect_refused(with([](auto& s) {
                   s.prompt_ids.reset();
                   s.prompt = std::string(2 << 20, 'a');
                 }),
                 "prompt", "prompt must be at most 1048576 bytes, got 2097152");
  expect_refused(with([](auto& s) {
                   s.prompt_ids.reset();
                   std::string text;
                   for (int i = 0; i < 300; ++i) text += " the";
                   s.prompt = text;
                 }),
                 "prompt", "leaves no room to generate");
  expect_refused(with([](auto& s) {
                   s.prompt_ids.reset();
                   s.messages = std::vector<ChatMessage>{};
                 }),
                 "messages", "messages is empty");
  expect_refused(with([](auto& s) {
                   s.prompt_ids.reset();
                   s.messages = std::vector<ChatMessage>{{"robot", "x"}};
                 }),
                 "messages[0].role",
                 "must be \"system\", \"user\" or \"assistant\", got \"robot\"");
}

// timeout_s: positive, within the service's limits.max_request_seconds (the default deadline
// when not given), or 30 days without one.
TEST_F(Validate, TimeoutIsCheckedAgainstTheServiceLimit) {
  SubmitRequest s = base();
  EXPECT_EQ(validate_submit(s, ctx_).timeout_s, 0.0);  // no limit, none asked: no deadline
  s.timeout_s = 12.5;
  EXPECT_EQ(validate_submit(s, ctx_).timeout_s, 12.5);
  for (double bad : {0.0, -3.0, std::numeric_limits<double>::infinity()}) {
    s.timeout_s = bad;
    expect_refused(s, "timeout_s", "timeout_s must be a positive number of seconds");
  }
  s.timeout_s = 31 * 86400.0;
  expect_refused(s, "timeout_s", "over 2592000 s (30 days)");
  ctx_.limits.max_request_seconds = 10;
  s.timeout_s.reset();
  EXPECT_EQ(validate_submit(s, ctx_).timeout_s, 10.0);  // the service's deadline
  s.timeout_s = 4;
  EXPECT_EQ(validate_submit(s, ctx_).timeout_s, 4.0);
  s.timeout_s = 11;
  expect_refused(s, "timeout_s",
                 "timeout_s = 11 is over the service's limit of 10 s (limit "
                 "limits.max_request_seconds)");
}

TEST_F(Validate, KvPoolLimitIsNamed) {
  model_.kv_blocks_per_replica = 2;  // 32 tokens
  SubmitRequest s = base();
  s.max_tokens = 40;
  expect_refused(s, "max_tokens", "the KV pool of one replica holds 32");
}

TEST_F(Validate, WithoutTokenizerOnlyIdsAreServed) {
  ctx_.tokenizer = nullptr;
  SubmitRequest s = base();
  EXPECT_EQ(validate_submit(s, ctx_).spec.text_stream, nullptr);
  s.stop = {"x"};
  expect_refused(s, "stop", "stop strings need the model's tokenizer");
  s = base();
  s.prompt_ids.reset();
  s.prompt = "hi";
  expect_refused(s, "prompt", "text prompts need the model's tokenizer");
}

TEST_F(Validate, ChatsRefusedWithoutAFormatSayWhy) {
  ctx_.chat_format.reset();
  model_.chat_format_error = "the model ships no chat template";
  SubmitRequest s = base();
  s.prompt_ids.reset();
  s.messages = std::vector<ChatMessage>{{"user", "hi"}};
  expect_refused(s, "messages",
                 "this service does not serve chats: the model ships no chat template");
}

}  // namespace
}  // namespace shardserve::api
