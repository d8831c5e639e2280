#pragma once
// GPT-2's byte-level alphabet: every byte is shown as one printable Unicode character
// (space as "Ġ", newline as "Ċ"), which is how byte-level BPE vocabularies spell tokens.
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace shardserve::model {

class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();

  // The character (as UTF-8) standing for `byte`.
  std::string_view char_for(unsigned char byte) const { return chars_[byte]; }

  // The bytes a token spelled in this alphabet stands for; nullopt if some character of
  // `token` is not in the alphabet.
  std::optional<std::string> to_bytes(std::string_view token) const;

  // `bytes` spelled in the alphabet.
  std::string to_token(std::string_view bytes) const;

 private:
  std::array<std::string, 256> chars_;
  // Indexed by code point: the alphabet's characters are all below U+0144.
  std::array<int, 0x144> byte_of_code_point_;
};

}  // namespace shardserve::model
