#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tokenizer/regex_splitter.h"

#include <pcre2.h>

#include "common/error.h"
#include "model/tokenizer/utf8.h"

namespace shardserve::model {
namespace {

// Oniguruma's Unicode \s: U+0009..U+000D, U+0085 and the Z categories. PCRE2's \s also takes
// U+180E (through \h), which Unicode stopped calling a space in 6.3.
constexpr std::string_view kSpaceSet = "\\t-\\r\\x{85}\\p{Z}";

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

}  // namespace

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  std::string where;
  ~Compiled() { pcre2_code_free(code); }
};

std::string oniguruma_compatible_pattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      ++i;
      if (next == 's') {
        if (in_class) {
          out.append(kSpaceSet);
        } else {
          out.append("[").append(kSpaceSet).append("]");
        }
        continue;
      }
      // A negated set cannot be written inside a class; there PCRE2's \S stays (it differs
      // only on U+180E).
      if (next == 'S' && !in_class) {
        out.append("[^").append(kSpaceSet).append("]");
        continue;
      }
      out.push_back(c);
      out.push_back(next);
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      // POSIX class like [:alpha:] inside a set.
      const size_t end = pattern.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out.append(pattern.substr(i, end + 2 - i));
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

RegexSplitter::RegexSplitter(const std::string& pattern, const std::string& where)
    : compiled_(std::make_unique<Compiled>()) {
  compiled_->where = where;
  const std::string rewritten = oniguruma_compatible_pattern(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                  PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (compiled_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof message);
    fail("{}: regex {:?} does not compile (PCRE2, as {:?}): {} at offset {}", where, pattern,
         rewritten, reinterpret_cast<const char*>(message), error_offset);
  }
  // Without JIT (a PCRE2 built without it) the interpreter gives the same matches, slower.
  pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE);
}

RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;

void RegexSplitter::split(std::string_view text,
                          const std::function<void(std::string_view)>& piece) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr));
  require(md != nullptr, "{}: out of memory creating PCRE2 match data", compiled_->where);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = 0;  // end of the last match: where the next unmatched stretch begins
  size_t search = 0;
  while (search <= text.size()) {
    // Callers hand in validated UTF-8, so PCRE2 need not re-check the subject on every call
    // (which would make splitting quadratic).
    const int rc = pcre2_match(compiled_->code, subject, text.size(), search, PCRE2_NO_UTF_CHECK,
                               md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail("{}: regex match failed at byte {} of a {}-byte piece: {}", compiled_->where, search,
           text.size(), reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t begin = ov[0];
    const size_t end = ov[1];
    if (end == begin) {
      // An empty match makes no piece; move on by one character.
      if (begin >= text.size()) break;
      search = begin + utf8_char_length(text.substr(begin));
      continue;
    }
    if (begin > gap_start) piece(text.substr(gap_start, begin - gap_start));
    piece(text.substr(begin, end - begin));
    gap_start = end;
    search = end;
  }
  if (gap_start < text.size()) piece(text.substr(gap_start));
}

}  // namespace shardserve::model
