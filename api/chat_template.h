#pragma once
// Chat prompts without a Jinja engine: the two LLaMA chat formats implemented natively, chosen by
// recognising the template source a model ships (tokenizer_config.json "chat_template" or
// chat_template.jinja). Rendering gives exactly the string transformers' apply_chat_template
// gives for that template (tests/api/chat_template_cases.json), as segments: template text and
// the template's special tokens, so the ids can be formed without re-parsing special-token text
// (SentencePiece tokenizers, Llama 2's, do not parse "<s>" in text).
//
//   llama2: [BOS]"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]"" {assistant} "[EOS][BOS]...
//           (meta-llama/Llama-2-*-chat-hf's template: roles alternate user/assistant after an
//           optional first system message; contents stripped; no generation prompt exists)
//   llama3: [BOS]<|start_header_id|>{role}<|end_header_id|>"\n\n{content|trim}"<|eot_id|>...
//           then, with add_generation_prompt, <|start_header_id|>assistant<|end_header_id|>"\n\n"
//           (meta-llama/Meta-Llama-3-*-Instruct's template)
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/protocol.h"
#include "model/tokenizer/tokenizer.h"

namespace shardserve::api {

enum class ChatFormat { kLlama2, kLlama3 };

std::string_view to_string(ChatFormat format);
// "llama2" / "llama3"; nullopt otherwise.
std::optional<ChatFormat> parse_chat_format(std::string_view name);

// The family of a template's Jinja source. Throws shardserve::Error naming what was found when
// it is neither (or is a variant whose output these formats do not reproduce, e.g. Llama 3.1's
// tool-use template with its "Cutting Knowledge Date" system header).
ChatFormat detect_chat_format(std::string_view template_source);

struct ChatSegment {
  bool special = false;  // a special token spelled as in the tokenizer ("<s>", "<|eot_id|>")
  std::string text;
  friend bool operator==(const ChatSegment&, const ChatSegment&) = default;
};

struct RenderedChat {
  std::vector<ChatSegment> segments;
  std::string text() const;  // what apply_chat_template(tokenize=False) returns
};

// The special tokens' spellings the templates use as bos_token / eos_token.
struct ChatTokens {
  std::string bos;
  std::string eos;
};
// From the tokenizer: its BOS and first EOS token; Error when it lacks one the format needs.
ChatTokens chat_tokens(const model::Tokenizer& tokenizer, ChatFormat format);

// Throws ProtocolError(kInvalidRequest, "messages[i].role", ...) for a conversation the format
// cannot express (llama2: roles not alternating, a system message not first).
RenderedChat render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                         bool add_generation_prompt, const ChatTokens& tokens);

// Special segments become their token ids; text segments are encoded without special tokens,
// as transformers' apply_chat_template(tokenize=True) encodes them (for a SentencePiece tokenizer:
// no word-boundary mark after a special token).
std::vector<int32_t> chat_token_ids(const RenderedChat& chat, const model::Tokenizer& tokenizer);

// Python's str.strip() (what Jinja's `trim` and `.strip()` do): Unicode whitespace at both ends.
std::string python_strip(std::string_view text);

// The chat format of a loaded tokenizer: `forced` if given, else recognised from its template.
// Throws Error saying why chats cannot be served (no template, unrecognised template).
ChatFormat resolve_chat_format(const model::Tokenizer& tokenizer, std::optional<ChatFormat> forced);

}  // namespace shardserve::api
