#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "common/counter_rng.h"
#include "kernels/cpu/sampling.h"

namespace shardserve::kernels::cpu {
namespace {

using messages::SamplingParams;

// logits whose softmax is exactly {0.5, 0.3, 0.15, 0.05}
std::vector<float> four_way() {
  return {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
}

SamplingParams sampled(float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  return p;
}

TEST(Sampling, GreedyTakesArgmaxLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0;
  const std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  for (double u : {0.0, 0.5, 0.999}) EXPECT_EQ(sample_token(logits.data(), 4, p, {}, u).token, 1);
}

TEST(Sampling, TemperatureScalesTheSoftmax) {
  const auto logits = four_way();
  const auto probs = sampling_distribution(logits.data(), 4, sampled(2.0f), {});
  // softmax(log p / 2) = sqrt(p) / sum sqrt(p)
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.15) + std::sqrt(0.05);
  EXPECT_NEAR(probs[0], std::sqrt(0.5) / z, 1e-6);
  EXPECT_NEAR(probs[3], std::sqrt(0.05) / z, 1e-6);
}

TEST(Sampling, TopKTopPAndMinPKeepTheDocumentedSets) {
  const auto logits = four_way();
  auto p = sampled();
  p.top_k = 2;
  auto probs = sampling_distribution(logits.data(), 4, p, {});
  EXPECT_NEAR(probs[0], 0.625, 1e-6);
  EXPECT_NEAR(probs[1], 0.375, 1e-6);
  EXPECT_EQ(probs[2], 0.0);
  p = sampled();
  p.top_p = 0.75f;  // 0.5 falls short, 0.5 + 0.3 reaches it: two tokens
  probs = sampling_distribution(logits.data(), 4, p, {});
  EXPECT_NEAR(probs[1], 0.375, 1e-6);
  EXPECT_EQ(probs[2], 0.0);
  p.top_p = 0.81f;  // needs the third
  probs = sampling_distribution(logits.data(), 4, p, {});
  EXPECT_NEAR(probs[2], 0.15 / 0.95, 1e-6);
  EXPECT_EQ(probs[3], 0.0);
  p = sampled();
  p.min_p = 0.35f;  // keep p >= 0.175
  probs = sampling_distribution(logits.data(), 4, p, {});
  EXPECT_NEAR(probs[0], 0.625, 1e-6);
  EXPECT_EQ(probs[2], 0.0);
  p.top_k = 1;  // top-k 1 is greedy whatever the draw
  for (double u : {0.0, 0.7, 0.9999}) EXPECT_EQ(sample_token(logits.data(), 4, p, {}, u).token, 0);
}

// The sampler orders only as much of the vocabulary as a cut needs (64 candidates, then twice
// as many, ...). Against a plain full sort, on 3,000 tokens where the cuts fall past 64 and past
// 128 candidates, with runs of equal logits (ties go by id) around them.
TEST(Sampling, CutsOnALargeVocabularyEqualAFullSort) {
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t vocab = 3000;
  std::vector<float> logits(vocab);
  for (auto& v : logits) v = std::round(normal(rng) * 8.0f) / 8.0f;  // many exact ties
  auto reference = [&](const SamplingParams& p) {
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    const int64_t limit = p.top_k > 0 ? std::min<int64_t>(p.top_k, vocab) : vocab;
    std::vector<double> w(limit);
    double total = 0;
    for (int64_t i = 0; i < limit; ++i)
      total += w[i] = std::exp(double(logits[order[i]]) / p.temperature -
                               double(logits[order[0]]) / p.temperature);
    int64_t keep = limit;
    if (p.top_p < 1.0f) {
      double cumulative = 0;
      for (int64_t i = 0; i < limit; ++i)
        if ((cumulative += w[i] / total) >= p.top_p) {
          keep = i + 1;
          break;
        }
    }
    if (p.min_p > 0.0f) {
      int64_t cut = 1;
      while (cut < keep && w[cut] >= p.min_p * w[0]) ++cut;
      keep = cut;
    }
    double kept = 0;
    for (int64_t i = 0; i < keep; ++i) kept += w[i];
    std::vector<double> probs(vocab, 0.0);
    for (int64_t i = 0; i < keep; ++i) probs[order[i]] = w[i] / kept;
    return std::pair{probs, keep};
  };
  struct Case {
    int32_t top_k;
    float top_p, min_p;
    int64_t at_least;  // the cut lies past this many candidates: the doubling is exercised
  };
  for (const Case& c : {Case{0, 0.3f, 0.0f, 128}, Case{0, 0.9f, 0.0f, 1024},
                        Case{0, 1.0f, 0.05f, 128}, Case{700, 0.95f, 0.0f, 256},
                        Case{100, 1.0f, 0.0f, 99}, Case{0, 0.6f, 0.01f, 256}}) {
    auto p = sampled(1.0f);
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    const auto [want, keep] = reference(p);
    ASSERT_GT(keep, c.at_least) << "top_k " << c.top_k << " top_p " << c.top_p << " min_p "
                                << c.min_p << ": the case does not reach the doubling";
    const auto got = sampling_distribution(logits.data(), vocab, p, {});
    for (int64_t t = 0; t < vocab; ++t) {
      ASSERT_EQ(got[t] == 0.0, want[t] == 0.0)
          << "token " << t << " kept differently (top_k " << c.top_k << ", top_p " << c.top_p
          << ", min_p " << c.min_p << ", " << keep << " kept)";
      ASSERT_NEAR(got[t], want[t], 1e-12 * std::max(1.0, want[t])) << "token " << t;
    }
  }
  // No cut at all: every token, its softmax weight.
  const auto all = sampling_distribution(logits.data(), vocab, sampled(0.7f), {});
  const auto [want, keep] = reference(sampled(0.7f));  // (another temperature, too)
  ASSERT_EQ(keep, vocab);
  for (int64_t t = 0; t < vocab; ++t) ASSERT_NEAR(all[t], want[t], 1e-12) << "token " << t;
}

TEST(Sampling, PenaltiesFollowTheHfAndOpenAiRules) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  // token 0 (logit 2) seen -> 1; token 1 (logit 1.5) unseen stays the argmax.
  std::vector<float> logits = {2.0f, 1.5f, -1.0f};
  PenaltyHistory h;
  h.seen_tokens = {0, 2};
  EXPECT_EQ(sample_token(logits.data(), 3, p, h, 0.5).token, 1);
  // A negative logit is multiplied: -1 -> -2, so with temperature 1 the exact distribution is
  // softmax({1, 1.5, -2}).
  p.temperature = 1.0f;
  auto probs = sampling_distribution(logits.data(), 3, p, h);
  const double z = std::exp(1.0) + std::exp(1.5) + std::exp(-2.0);
  EXPECT_NEAR(probs[2], std::exp(-2.0) / z, 1e-6);
  // frequency 0.5 x count 3 + presence 1 on token 1: 1.5 - 1.5 - 1 = -1.
  SamplingParams q;
  q.frequency_penalty = 0.5f;
  q.presence_penalty = 1.0f;
  PenaltyHistory out;
  out.output_counts = {{1, 3}};
  probs = sampling_distribution(logits.data(), 3, q, out);
  const double z2 = std::exp(2.0) + std::exp(-1.0) + std::exp(-1.0);
  EXPECT_NEAR(probs[1], std::exp(-1.0) / z2, 1e-6);
}

TEST(Sampling, DrawsFollowTheDistribution) {
  // Chi-square goodness of fit over 40000 counter-stream draws: 3 degrees of freedom, the 0.1%
  // critical value is 16.27. A sampler that ignored the cumulative order or the temperature
  // would be far above it.
  const auto logits = four_way();
  const auto p = sampled(1.0f);
  const std::vector<double> expected = {0.5, 0.3, 0.15, 0.05};
  std::vector<int> counts(4, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    ++counts[sample_token(logits.data(), 4, p, {}, counter_uniform(1234, i)).token];
  }
  double chi2 = 0;
  for (int t = 0; t < 4; ++t) {
    const double e = expected[t] * n;
    chi2 += (counts[t] - e) * (counts[t] - e) / e;
  }
  EXPECT_LT(chi2, 16.27);
}

TEST(Sampling, LogprobsAreTheRawLogSoftmax) {
  const auto logits = four_way();
  auto p = sampled(0.5f);
  p.logprobs = 3;
  p.top_k = 1;
  const Sample s = sample_token(logits.data(), 4, p, {}, 0.3);
  EXPECT_EQ(s.token, 0);
  EXPECT_NEAR(s.logprob, std::log(0.5), 1e-6);
  ASSERT_EQ(s.top_ids, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_NEAR(s.top_logprobs[2], std::log(0.15), 1e-6);
}

TEST(CounterRng, IsAPureFunctionOfSeedPositionAndStream) {
  EXPECT_EQ(counter_uniform(7, 100), counter_uniform(7, 100));
  EXPECT_NE(counter_uniform(7, 100), counter_uniform(7, 101));
  EXPECT_NE(counter_uniform(7, 100), counter_uniform(8, 100));
  EXPECT_NE(counter_uniform(7, 100, 0), counter_uniform(7, 100, 1));
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double u = counter_uniform(99, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.01);
}

}  // namespace
}  // namespace shardserve::kernels::cpu
