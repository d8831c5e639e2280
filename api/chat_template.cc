#include "api/chat_template.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>

#include "common/error.h"

namespace shardserve::api {
namespace {

// Decodes one UTF-8 code point at text[i]; returns its length (1 for an invalid byte).
std::size_t code_point(std::string_view text, std::size_t i, char32_t& cp) {
  const auto b = static_cast<unsigned char>(text[i]);
  std::size_t len = b < 0x80           ? 1
                    : (b >> 5) == 0x6  ? 2
                    : (b >> 4) == 0xE  ? 3
                    : (b >> 3) == 0x1E ? 4
                                       : 1;
  if (i + len > text.size()) len = 1;
  if (len == 1) {
    cp = b;
    return 1;
  }
  cp = b & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  return len;
}

// Python's str.isspace(): Unicode White_Space plus the ASCII separators \x1c-\x1f.
bool python_space(char32_t c) {
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return true;
  switch (c) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

void add_text(RenderedChat& chat, std::string text) {
  if (text.empty()) return;
  if (!chat.segments.empty() && !chat.segments.back().special)
    chat.segments.back().text += text;
  else
    chat.segments.push_back({false, std::move(text)});
}

void add_special(RenderedChat& chat, const std::string& token) {
  chat.segments.push_back({true, token});
}

RenderedChat render_llama2(const std::vector<ChatMessage>& messages, const ChatTokens& tokens) {
  RenderedChat chat;
  std::size_t first = 0;
  std::optional<std::string> system;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  for (std::size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::size_t turn = i - first;
    const std::string field = fmt::format("messages[{}].role", i);
    if (m.role == "system")
      throw ProtocolError(ErrorCode::kInvalidRequest, field,
                          fmt::format("{}: the llama2 chat format takes one system message, first "
                                      "(got 'system' at position {})",
                                      field, i));
    if ((m.role == "user") != (turn % 2 == 0))
      throw ProtocolError(ErrorCode::kInvalidRequest, field,
                          fmt::format("{}: the llama2 chat format needs roles alternating "
                                      "user/assistant/user/... after the system message (got '{}')",
                                      field, m.role));
    std::string content = m.content;
    if (turn == 0 && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + m.content;
    if (m.role == "user") {
      add_special(chat, tokens.bos);
      add_text(chat, "[INST] " + python_strip(content) + " [/INST]");
    } else {
      add_text(chat, " " + python_strip(content) + " ");
      add_special(chat, tokens.eos);
    }
  }
  return chat;
}

RenderedChat render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                           const ChatTokens& tokens) {
  RenderedChat chat;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) add_special(chat, tokens.bos);
    add_special(chat, "<|start_header_id|>");
    add_text(chat, messages[i].role);
    add_special(chat, "<|end_header_id|>");
    add_text(chat, "\n\n" + python_strip(messages[i].content));
    add_special(chat, "<|eot_id|>");
  }
  if (add_generation_prompt) {
    add_special(chat, "<|start_header_id|>");
    add_text(chat, "assistant");
    add_special(chat, "<|end_header_id|>");
    add_text(chat, "\n\n");
  }
  return chat;
}

}  // namespace

std::string_view to_string(ChatFormat format) {
  return format == ChatFormat::kLlama2 ? "llama2" : "llama3";
}

std::optional<ChatFormat> parse_chat_format(std::string_view name) {
  if (name == "llama2") return ChatFormat::kLlama2;
  if (name == "llama3") return ChatFormat::kLlama3;
  return std::nullopt;
}

std::string python_strip(std::string_view text) {
  std::size_t begin = 0, end = text.size();
  while (begin < end) {
    char32_t cp;
    const std::size_t n = code_point(text, begin, cp);
    if (!python_space(cp)) break;
    begin += n;
  }
  // From the end: step back to the start of each code point.
  while (end > begin) {
    std::size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    char32_t cp;
    if (code_point(text, start, cp) != end - start || !python_space(cp)) break;
    end = start;
  }
  return std::string(text.substr(begin, end - begin));
}

ChatFormat detect_chat_format(std::string_view source) {
  static constexpr std::array<std::string_view, 9> kMarkers{"[INST]",
                                                            "[/INST]",
                                                            "<<SYS>>",
                                                            "<|start_header_id|>",
                                                            "<|end_header_id|>",
                                                            "<|eot_id|>",
                                                            "Cutting Knowledge Date",
                                                            "tools",
                                                            "<|im_start|>"};
  std::vector<std::string> found;
  for (auto m : kMarkers)
    if (contains(source, m)) found.emplace_back(m);
  const bool llama3 = contains(source, "<|start_header_id|>") &&
                      contains(source, "<|end_header_id|>") && contains(source, "<|eot_id|>");
  const bool llama2 =
      contains(source, "[INST]") && contains(source, "[/INST]") && contains(source, "<<SYS>>");
  std::string what =
      found.empty() ? "none of the markers" : fmt::format("{}", fmt::join(found, ", "));
  std::string head(source.substr(0, 60));
  for (char& c : head)
    if (c == '\n') c = ' ';
  const std::string described = fmt::format(
      "a chat template of {} characters starting \"{}{}\" (markers "
      "found: {})",
      source.size(), head, source.size() > 60 ? "..." : "", what);
  if (llama3 && !llama2) {
    if (contains(source, "Cutting Knowledge Date") || contains(source, "tools") ||
        contains(source, "ipython") || contains(source, "date_string"))
      fail(
          "{}: this is the Llama 3.1+ tool-use template, whose system header (knowledge and "
          "current dates, tools) the native llama3 format does not reproduce; start with "
          "--chat-template llama3 to use the plain Llama 3 format anyway",
          described);
    return ChatFormat::kLlama3;
  }
  if (llama2 && !llama3) {
    if (contains(source, "default_system") || contains(source, "DEFAULT_SYSTEM"))
      fail(
          "{}: a Llama 2 template with a default system prompt, which the native llama2 "
          "format does not add; start with --chat-template llama2 to use the plain format",
          described);
    return ChatFormat::kLlama2;
  }
  fail(
      "unrecognised chat template: {}; shardserve renders only the Llama 2 ([INST] ... <<SYS>>) "
      "and Llama 3 (<|start_header_id|> ... <|eot_id|>) chat formats (choose one with "
      "--chat-template llama2|llama3)",
      described);
}

std::string RenderedChat::text() const {
  std::string out;
  for (const auto& s : segments) out += s.text;
  return out;
}

ChatTokens chat_tokens(const model::Tokenizer& tokenizer, ChatFormat format) {
  ChatTokens t;
  const auto bos = tokenizer.bos_id();
  require(bos.has_value(), "the {} chat format needs a BOS token; the tokenizer has none",
          to_string(format));
  t.bos = tokenizer.id_to_token(*bos).value_or("");
  require(!t.bos.empty(), "the tokenizer's BOS id {} has no token", *bos);
  const auto eos = tokenizer.eos_ids();
  if (!eos.empty()) t.eos = tokenizer.id_to_token(eos.front()).value_or("");
  require(format != ChatFormat::kLlama2 || !t.eos.empty(),
          "the llama2 chat format needs an EOS token; the tokenizer has none");
  if (format == ChatFormat::kLlama3)
    for (const char* tok : {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"})
      require(tokenizer.token_to_id(tok).has_value(),
              "the llama3 chat format needs the token {}; the tokenizer has no such token", tok);
  return t;
}

RenderedChat render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                         bool add_generation_prompt, const ChatTokens& tokens) {
  return format == ChatFormat::kLlama2 ? render_llama2(messages, tokens)
                                       : render_llama3(messages, add_generation_prompt, tokens);
}

namespace {

// Text that follows a special token, encoded as transformers' Llama tokenizers encode it: a
// SentencePiece tokenizer with add_dummy_prefix prepends its word-boundary mark only at the very
// start of the input (legacy=False, Metaspace prepend_scheme "first"), not after "<s>" or "</s>".
// Done as transformers' slow LlamaTokenizer does: encode "<unk>" + text and drop the pieces of
// "<unk>" (SentencePiece reads "<unk>" as plain text).
std::vector<int32_t> encode_continuation(const model::Tokenizer& tokenizer, const std::string& text) {
  if (!tokenizer.detokenization_rules().strip_first_space)
    return tokenizer.encode(text, /*add_special_tokens=*/false);
  static const std::string kMarker = "<unk>";
  const auto marker = tokenizer.encode(kMarker, false);
  auto ids = tokenizer.encode(kMarker + text, false);
  if (ids.size() >= marker.size() && std::equal(marker.begin(), marker.end(), ids.begin())) {
    ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(marker.size()));
    return ids;
  }
  return tokenizer.encode(text, false);  // the marker merged with the text: keep the plain encoding
}

}  // namespace

std::vector<int32_t> chat_token_ids(const RenderedChat& chat, const model::Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  for (std::size_t i = 0; i < chat.segments.size(); ++i) {
    const auto& s = chat.segments[i];
    if (s.special) {
      const auto id = tokenizer.token_to_id(s.text);
      require(id.has_value(), "chat template token {} is not in the vocabulary", s.text);
      ids.push_back(*id);
    } else {
      const auto piece = i == 0 ? tokenizer.encode(s.text, /*add_special_tokens=*/false)
                                : encode_continuation(tokenizer, s.text);
      ids.insert(ids.end(), piece.begin(), piece.end());
    }
  }
  return ids;
}

ChatFormat resolve_chat_format(const model::Tokenizer& tokenizer,
                               std::optional<ChatFormat> forced) {
  if (forced) {
    (void)chat_tokens(tokenizer, *forced);
    return *forced;
  }
  const auto source = tokenizer.chat_template();
  if (!source)
    fail(
        "the model ships no chat template (tokenizer_config.json has no \"chat_template\" and "
        "there is no chat_template.jinja); choose one with --chat-template llama2|llama3");
  const ChatFormat f = detect_chat_format(*source);
  (void)chat_tokens(tokenizer, f);
  return f;
}

}  // namespace shardserve::api
