#include "model/tokenizer/utf8.h"

namespace shardserve::model {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool is_trail(unsigned char b) { return (b & 0xC0) == 0x80; }

// Bytes a well-formed sequence starting with `lead` has, or 0 if `lead` cannot start one.
int sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// The second byte's allowed range depends on the lead byte: it excludes overlong forms,
// surrogates and code points above U+10FFFF (Unicode Table 3-7).
bool second_byte_ok(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return is_trail(b);
  }
}

// Length of the valid prefix of the sequence at bytes[0]: the whole sequence length when it is
// complete and valid; otherwise how many bytes form a maximal subpart, with `complete` false.
size_t scan_sequence(std::string_view bytes, bool* complete, bool* truncated) {
  const auto lead = static_cast<unsigned char>(bytes[0]);
  const int need = sequence_length(lead);
  *truncated = false;
  if (need == 0) {
    *complete = false;
    return 1;
  }
  size_t have = 1;
  while (have < static_cast<size_t>(need)) {
    if (have == bytes.size()) {
      *complete = false;
      *truncated = true;
      return have;
    }
    const auto b = static_cast<unsigned char>(bytes[have]);
    if (!(have == 1 ? second_byte_ok(lead, b) : is_trail(b))) {
      *complete = false;
      return have;
    }
    ++have;
  }
  *complete = true;
  return have;
}

// SentencePiece's per-character check: the announced length must be present, with trail bytes
// and a code point that is not overlong, not a surrogate and at most U+10FFFF.
bool sentencepiece_char_ok(std::string_view bytes, size_t need) {
  if (bytes.size() < need) return false;
  const auto b0 = static_cast<unsigned char>(bytes[0]);
  if (need == 1) return b0 < 0x80;
  char32_t cp = 0;
  char32_t min = 0;
  if (need == 2) {
    cp = b0 & 0x1F;
    min = 0x80;
  } else if (need == 3) {
    cp = b0 & 0x0F;
    min = 0x800;
  } else {
    cp = b0 & 0x07;
    min = 0x10000;
  }
  for (size_t i = 1; i < need; ++i) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (!is_trail(b)) return false;
    cp = (cp << 6) | (b & 0x3F);
  }
  return cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

size_t sentencepiece_announced_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

}  // namespace

std::optional<size_t> find_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    bool complete = false;
    bool truncated = false;
    const size_t n = scan_sequence(text.substr(i), &complete, &truncated);
    if (!complete) return i;
    i += n;
  }
  return std::nullopt;
}

size_t repair_utf8(std::string_view bytes, Utf8Repair repair, bool at_end, std::string& out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const std::string_view rest = bytes.substr(i);
    if (repair == Utf8Repair::kMaximalSubpart) {
      bool complete = false;
      bool truncated = false;
      const size_t n = scan_sequence(rest, &complete, &truncated);
      if (complete) {
        out.append(rest.substr(0, n));
      } else {
        if (truncated && !at_end) break;
        out.append(kReplacement);
      }
      i += n;
    } else {
      const size_t need = sentencepiece_announced_length(static_cast<unsigned char>(rest[0]));
      if (rest.size() < need && !at_end) break;
      if (sentencepiece_char_ok(rest, need)) {
        out.append(rest.substr(0, need));
        i += need;
      } else {
        out.append(kReplacement);
        i += 1;
      }
    }
  }
  return i;
}

size_t utf8_char_length(std::string_view text) {
  const int n = sequence_length(static_cast<unsigned char>(text[0]));
  if (n == 0 || static_cast<size_t>(n) > text.size()) return 1;
  return static_cast<size_t>(n);
}

char32_t decode_utf8_char(std::string_view text, size_t* length) {
  const auto b0 = static_cast<unsigned char>(text[0]);
  const size_t n = utf8_char_length(text);
  *length = n;
  if (n == 1) return b0;
  char32_t cp = b0 & (0x7F >> n);
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<unsigned char>(text[i]) & 0x3F);
  return cp;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_unicode_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

}  // namespace shardserve::model
