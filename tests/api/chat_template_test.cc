// The native Llama 2 / Llama 3 chat formats against transformers' apply_chat_template
// (tests/api/chat_template_cases.json, made by tests/api/make_chat_cases.py with transformers
// 5.17, and the llama3-bpe fixture's own chat case), and the recognition of templates.
#include "api/chat_template.h"

#include <gtest/gtest.h>

#include "tests/api/test_support.h"

namespace shardserve::api {
namespace {

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j)
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

TEST(ChatTemplate, RendersExactlyAsTransformers) {
  const auto doc = testing::read_json(testing::source_dir() / "tests/api/chat_template_cases.json");
  const auto llama2 = model::load_tokenizer(testing::fixture("llama2-sp"));
  const auto llama3 = model::load_tokenizer(testing::fixture("llama3-bpe"));
  int checked = 0;
  for (const auto& c : doc["cases"]) {
    const ChatFormat format = *parse_chat_format(c["family"].get<std::string>());
    const model::Tokenizer& tok = format == ChatFormat::kLlama2 ? *llama2 : *llama3;
    const auto chat = render_chat(format, messages_of(c["messages"]),
                                  c["add_generation_prompt"].get<bool>(), chat_tokens(tok, format));
    SCOPED_TRACE(c["text"].get<std::string>());
    EXPECT_EQ(chat.text(), c["text"].get<std::string>());
    // The ids too: special segments as their ids, the text between them encoded alone; for
    // Llama 2's SentencePiece without the word-boundary mark after a special token, as
    // transformers' tokenize=True gives them.
    EXPECT_EQ(chat_token_ids(chat, tok), c["ids"].get<std::vector<int32_t>>());
    ++checked;
  }
  EXPECT_EQ(checked, 12);
}

TEST(ChatTemplate, Llama3FixtureCase) {
  // The llama3-bpe fixture's last tokenizer case: transformers' rendering of system + user with
  // the generation prompt, and its ids (encode without special tokens).
  const auto cases = testing::read_json(testing::fixture("llama3-bpe/tokenizer_cases.json"));
  const auto tok = model::load_tokenizer(testing::fixture("llama3-bpe"));
  const ChatFormat f = resolve_chat_format(*tok, std::nullopt);
  EXPECT_EQ(f, ChatFormat::kLlama3);
  const auto chat =
      render_chat(f, {{"system", "You are terse."}, {"user", "Who created the heaven?"}}, true,
                  chat_tokens(*tok, f));
  EXPECT_EQ(chat.text(), cases.back()["text"].get<std::string>());
  EXPECT_EQ(chat_token_ids(chat, *tok), cases.back()["ids"].get<std::vector<int32_t>>());
}

TEST(ChatTemplate, Llama2SegmentsKeepSpecialTokensOutOfText) {
  const auto tok = model::load_tokenizer(testing::fixture("llama2-sp"));
  const auto chat =
      render_chat(ChatFormat::kLlama2, {{"user", "Hi"}, {"assistant", "Yes"}, {"user", "No"}}, true,
                  chat_tokens(*tok, ChatFormat::kLlama2));
  ASSERT_EQ(chat.segments.size(), 5u);
  EXPECT_EQ(chat.segments[0], (ChatSegment{true, "<s>"}));
  EXPECT_EQ(chat.segments[1], (ChatSegment{false, "[INST] Hi [/INST] Yes "}));
  EXPECT_EQ(chat.segments[2], (ChatSegment{true, "</s>"}));
  const auto ids = chat_token_ids(chat, *tok);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1),
            2);  // two BOS, though SentencePiece never parses "<s>"
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1);
}

TEST(ChatTemplate, Llama2RolesMustAlternate) {
  const ChatTokens t{"<s>", "</s>"};
  try {
    render_chat(ChatFormat::kLlama2, {{"user", "a"}, {"user", "b"}}, true, t);
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_EQ(e.field(), "messages[1].role");
    EXPECT_NE(std::string(e.what()).find("alternating user/assistant"), std::string::npos);
  }
  try {
    render_chat(ChatFormat::kLlama2, {{"user", "a"}, {"assistant", "b"}, {"system", "c"}}, true, t);
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_EQ(e.field(), "messages[2].role");
  }
}

TEST(ChatTemplate, RecognisesTheFamiliesAndRefusesOthers) {
  const auto doc = testing::read_json(testing::source_dir() / "tests/api/chat_template_cases.json");
  EXPECT_EQ(detect_chat_format(doc["llama2_template"].get<std::string>()), ChatFormat::kLlama2);
  const auto cfg = testing::read_json(testing::fixture("llama3-bpe/tokenizer_config.json"));
  EXPECT_EQ(detect_chat_format(cfg["chat_template"].get<std::string>()), ChatFormat::kLlama3);
  const auto kjv =
      testing::read_json(testing::source_dir() / "models/kjv-llama/tokenizer_config.json");
  EXPECT_EQ(detect_chat_format(kjv["chat_template"].get<std::string>()), ChatFormat::kLlama3);

  const std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
      "+ "
      "'<|im_end|>' + '\n'}}{% endfor %}";
  try {
    detect_chat_format(chatml);
    FAIL();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("unrecognised chat template"), std::string::npos) << what;
    EXPECT_NE(what.find("markers found: <|im_start|>"), std::string::npos) << what;
    EXPECT_NE(what.find("{% for message in messages %}"), std::string::npos) << what;
  }
  const std::string llama31 =
      "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" "
      "%}{%- endif %}"
      "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: "
      "December 2023\\n\" }}"
      "{{- '<|eot_id|>' }}";
  try {
    detect_chat_format(llama31);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Llama 3.1+ tool-use template"), std::string::npos)
        << e.what();
  }
}

TEST(ChatTemplate, ModelWithoutTemplateNeedsAChoice) {
  const auto tok = model::load_tokenizer(testing::fixture("llama2-sp"));
  try {
    resolve_chat_format(*tok, std::nullopt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ships no chat template"), std::string::npos);
  }
  EXPECT_EQ(resolve_chat_format(*tok, ChatFormat::kLlama2), ChatFormat::kLlama2);
}

TEST(ChatTemplate, PythonStripIsUnicodeAware) {
  EXPECT_EQ(python_strip("  a b \n\t"), "a b");
  EXPECT_EQ(python_strip("\u3000\u00a0x\u2009"), "x");
  EXPECT_EQ(python_strip("\x1c\x1fy\x1d"), "y");
  EXPECT_EQ(python_strip("caf\u00e9 \U0001F642"), "caf\u00e9 \U0001F642");
  EXPECT_EQ(python_strip(" \n "), "");
}

}  // namespace
}  // namespace shardserve::api
