#include "model/tokenizer/byte_level_alphabet.h"

#include "model/tokenizer/utf8.h"

namespace shardserve::model {

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_code_point_.fill(-1);
  // Printable Latin-1 bytes stand for themselves; the others (controls, space, DEL, NBSP,
  // soft hyphen) are given code points from U+0100 on, in byte order.
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
    append_utf8(cp, chars_[b]);
    byte_of_code_point_[cp] = b;
  }
}

std::optional<std::string> ByteLevelAlphabet::to_bytes(std::string_view token) const {
  std::string bytes;
  bytes.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    if (static_cast<unsigned char>(token[i]) < 0x80) {
      // Only ASCII '!'..'~' are in the alphabet.
      const int b = byte_of_code_point_[static_cast<unsigned char>(token[i])];
      if (b < 0) return std::nullopt;
      bytes.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    size_t len = 0;
    const char32_t cp = decode_utf8_char(token.substr(i), &len);
    if (len == 1 || cp >= byte_of_code_point_.size() || byte_of_code_point_[cp] < 0) {
      return std::nullopt;
    }
    bytes.push_back(static_cast<char>(byte_of_code_point_[cp]));
    i += len;
  }
  return bytes;
}

std::string ByteLevelAlphabet::to_token(std::string_view bytes) const {
  std::string token;
  token.reserve(bytes.size() * 2);
  for (const char c : bytes) token.append(chars_[static_cast<unsigned char>(c)]);
  return token;
}

}  // namespace shardserve::model
