#pragma once
// UTF-8 checks and the two ways decoders repair invalid byte sequences. Token boundaries fall
// inside characters, so decoders join token bytes first and repair the result; streaming has
// to repair exactly as the whole-sequence decoder would, hence one implementation for both.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shardserve::model {

// How an invalid or incomplete UTF-8 sequence becomes U+FFFD.
enum class Utf8Repair : uint8_t {
  // One U+FFFD per maximal subpart of an ill-formed sequence (Unicode §3.9; what Rust's
  // String::from_utf8_lossy and so HuggingFace's ByteLevel decoder do).
  kMaximalSubpart,
  // One U+FFFD per byte that does not start a valid character (what SentencePiece does with
  // runs of <0xNN> byte pieces).
  kPerByte,
};

// Byte offset of the first byte that is not part of a valid UTF-8 character, if any.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// Appends the repaired text of bytes[0..n) to `out` and returns n, the number of bytes decided.
// With `at_end` false, a trailing sequence that more bytes could still complete (or, for
// kPerByte, that is shorter than its lead byte announces) is left undecided; with `at_end` true
// every byte is decided.
size_t repair_utf8(std::string_view bytes, Utf8Repair repair, bool at_end, std::string& out);

// Length in bytes of the UTF-8 character at the start of `text` (1 for an invalid lead byte).
size_t utf8_char_length(std::string_view text);

// Decodes the character at the start of valid UTF-8 `text`.
char32_t decode_utf8_char(std::string_view text, size_t* length);

void append_utf8(char32_t code_point, std::string& out);

// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s accept).
bool is_unicode_whitespace(char32_t code_point);

}  // namespace shardserve::model
