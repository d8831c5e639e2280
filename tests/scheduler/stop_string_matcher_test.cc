// StopStringMatcher: matches across delta boundaries, holds back possible partial matches,
// and gives the same answer however the text is split.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/stop_string_matcher.h"

namespace shardserve::coordinator {
namespace {

struct Outcome {
  std::string text;
  std::optional<size_t> matched;
};

Outcome run(const std::vector<std::string>& stops, const std::vector<std::string>& deltas) {
  StopStringMatcher m(stops);
  Outcome o;
  for (const auto& d : deltas) {
    auto r = m.push(d);
    o.text += r.emit;
    if (r.matched) {
      o.matched = r.matched;
      return o;
    }
  }
  o.text += m.flush();
  return o;
}

// Reference: feed one byte at a time and stop at the first position where a stop string ends.
Outcome reference(const std::vector<std::string>& stops, const std::string& text) {
  for (size_t end = 1; end <= text.size(); ++end) {
    std::optional<size_t> best;
    for (size_t i = 0; i < stops.size(); ++i) {
      const auto& s = stops[i];
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0 &&
          (!best || s.size() > stops[*best].size()))
        best = i;
    }
    if (best) return {text.substr(0, end - stops[*best].size()), best};
  }
  return {text, std::nullopt};
}

TEST(StopStringMatcher, MatchAcrossDeltasIsNotEmitted) {
  auto o = run({"STOP"}, {"hello S", "T", "OP and more"});
  EXPECT_EQ(o.text, "hello ");
  EXPECT_EQ(o.matched, 0u);
}

TEST(StopStringMatcher, HoldsBackAPossibleStartUntilDecided) {
  StopStringMatcher m({"###"});
  EXPECT_EQ(m.push("ab#").emit, "ab");
  EXPECT_EQ(m.held_back(), 1u);
  EXPECT_EQ(m.push("#").emit, "");
  auto r = m.push("x");
  EXPECT_EQ(r.emit, "##x") << "a false alarm releases the held text";
  EXPECT_FALSE(r.matched);
  EXPECT_EQ(m.push("#").emit, "");
  EXPECT_EQ(m.flush(), "#") << "at the end of the stream held text is plain text";
}

TEST(StopStringMatcher, EarliestCompletedMatchWins) {
  // "bc" completes before "abcd" does, wherever the deltas are cut.
  EXPECT_EQ(run({"abcd", "bc"}, {"xabcd"}).text, "xa");
  EXPECT_EQ(run({"abcd", "bc"}, {"xab", "cd"}).text, "xa");
  // Same end: the longer one (earlier start) wins.
  auto o = run({"c", "abc"}, {"zzabc"});
  EXPECT_EQ(o.text, "zz");
  EXPECT_EQ(o.matched, 1u);
}

TEST(StopStringMatcher, NoStopStringsPassesTextThrough) {
  EXPECT_EQ(run({}, {"a", "b"}).text, "ab");
}

TEST(StopStringMatcher, EmptyStopStringIsRefused) {
  EXPECT_THROW(StopStringMatcher({"ok", ""}), Error);
}

TEST(StopStringMatcher, Utf8IsCutOnlyAtCharacterBoundaries) {
  // "é" is 2 bytes; the stop string starts with it, the text has "é" then other text.
  auto o = run({"\xc3\xa9!"}, {"caf\xc3", "\xa9", "?"});
  EXPECT_EQ(o.text, "caf\xc3\xa9?");
  auto p = run({"\xc3\xa9!"}, {"caf\xc3\xa9", "!"});
  EXPECT_EQ(p.text, "caf");
}

TEST(StopStringMatcher, RandomSplitsAgreeWithByteAtATimeReference) {
  std::mt19937 rng(7);
  auto rand_str = [&](int lo, int hi) {
    std::string s(std::uniform_int_distribution<int>(lo, hi)(rng), 'a');
    for (char& c : s) c = "abc"[rng() % 3];
    return s;
  };
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<std::string> stops;
    const int n = rng() % 4;
    for (int i = 0; i < n; ++i) stops.push_back(rand_str(1, 4));
    const std::string text = rand_str(0, 30);
    std::vector<std::string> deltas;
    for (size_t i = 0; i < text.size();) {
      const size_t len = std::min<size_t>(text.size() - i, rng() % 5);  // some empty deltas
      deltas.push_back(text.substr(i, len));
      i += len;
    }
    auto got = run(stops, deltas);
    auto want = reference(stops, text);
    ASSERT_EQ(got.text, want.text) << "text '" << text << "' iteration " << iter;
    ASSERT_EQ(got.matched.has_value(), want.matched.has_value()) << text;
    if (want.matched) {
      ASSERT_EQ(stops[*got.matched], stops[*want.matched]);
    }
  }
}

}  // namespace
}  // namespace shardserve::coordinator
