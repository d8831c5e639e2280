#include "model/tokenizer/utf8.h"

#include <gtest/gtest.h>

namespace shardserve::model {
namespace {

const std::string kFFFD = "\xEF\xBF\xBD";

std::string repair(std::string_view bytes, Utf8Repair mode, bool at_end, size_t* used = nullptr) {
  std::string out;
  const size_t n = repair_utf8(bytes, mode, at_end, out);
  if (used) *used = n;
  return out;
}

TEST(TokenizerUtf8, FindsFirstInvalidByte) {
  EXPECT_EQ(find_invalid_utf8("plain ascii"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("ab\xC3"), 2u);                // truncated
  EXPECT_EQ(find_invalid_utf8("a\xC0\x80"), 1u);             // overlong
  EXPECT_EQ(find_invalid_utf8("\xED\xA0\x80"), 0u);          // surrogate
  EXPECT_EQ(find_invalid_utf8("x\xF4\x90\x80\x80"), 1u);     // above U+10FFFF
}

// Unicode's "maximal subpart" examples (as Rust's from_utf8_lossy replaces them).
TEST(TokenizerUtf8, MaximalSubpartRepair) {
  const auto m = Utf8Repair::kMaximalSubpart;
  EXPECT_EQ(repair("a\xE2\x82" "b", m, true), "a" + kFFFD + "b");   // one U+FFFD for E2 82
  EXPECT_EQ(repair("\xE0\x80", m, true), kFFFD + kFFFD);          // E0 80 is no prefix
  EXPECT_EQ(repair("\xF0\x9F\x98", m, true), kFFFD);              // truncated at the end
  EXPECT_EQ(repair("\xC0\xAF", m, true), kFFFD + kFFFD);
  EXPECT_EQ(repair("\x80\x80", m, true), kFFFD + kFFFD);
  EXPECT_EQ(repair("\xF0\x9F\x98\x80", m, true), "\xF0\x9F\x98\x80");
}

TEST(TokenizerUtf8, HoldsIncompleteTailUntilTheEnd) {
  size_t used = 0;
  EXPECT_EQ(repair("ab\xF0\x9F\x98", Utf8Repair::kMaximalSubpart, false, &used), "ab");
  EXPECT_EQ(used, 2u);
  EXPECT_EQ(repair("ab\xE0\x80", Utf8Repair::kMaximalSubpart, false, &used), "ab" + kFFFD + kFFFD);
  EXPECT_EQ(used, 4u);  // E0 80 can never become valid: decided at once
  EXPECT_EQ(repair("ab\xE2\x82", Utf8Repair::kPerByte, false, &used), "ab");
  EXPECT_EQ(used, 2u);
}

// SentencePiece replaces each byte that does not start a valid character.
TEST(TokenizerUtf8, PerByteRepair) {
  const auto p = Utf8Repair::kPerByte;
  EXPECT_EQ(repair("a\xE2\x82" "b", p, true), "a" + kFFFD + kFFFD + "b");
  EXPECT_EQ(repair("\xF0\x9F\x98", p, true), kFFFD + kFFFD + kFFFD);
  EXPECT_EQ(repair("\xE2\xE2\x82\xAC", p, true), kFFFD + "\xE2\x82\xAC");
  EXPECT_EQ(repair("\xC3\xA9", p, true), "\xC3\xA9");
}

TEST(TokenizerUtf8, Whitespace) {
  EXPECT_TRUE(is_unicode_whitespace(U' '));
  EXPECT_TRUE(is_unicode_whitespace(0x3000));
  EXPECT_TRUE(is_unicode_whitespace(0x85));
  EXPECT_FALSE(is_unicode_whitespace(0x180E));  // not White_Space since Unicode 6.3
  EXPECT_FALSE(is_unicode_whitespace(U'x'));
}

}  // namespace
}  // namespace shardserve::model
