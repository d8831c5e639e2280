// The exact acceptance rule of speculative decoding (kernels/cpu/sampling.h: verify_draft_token)
// as a pure function: for random target / draft distributions over 8 tokens, a draft token drawn
// from the draft and verified comes out distributed as the target. A chi-square test over 200k
// draws with fixed seeds, at the 0.999 quantile; the same test rejects the wrong rules (accept
// always, resample from the target, the ratio upside down, the residual upside down), run here
// on the same draws, so the threshold is shown to have the power to catch them.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "common/counter_rng.h"
#include "kernels/cpu/sampling.h"

namespace shardserve::kernels::cpu {
namespace {

constexpr int kV = 8;
constexpr int kDraws = 200000;

double chi_square(const std::vector<double>& counts, const std::vector<double>& probs, double n,
                  int* df) {
  double stat = 0, pooled_obs = 0, pooled_exp = 0;
  int cells = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const double e = probs[i] * n;
    if (e < 5) {
      pooled_obs += counts[i];
      pooled_exp += e;
      continue;
    }
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pooled_exp > 0 || pooled_obs > 0) {
    // Observations where the hypothesis puts (almost) no mass are decisive evidence against it.
    stat += (pooled_obs - pooled_exp) * (pooled_obs - pooled_exp) / std::max(pooled_exp, 1e-3);
    ++cells;
  }
  *df = std::max(cells - 1, 1);
  return stat;
}

// Wilson-Hilferty approximation of the chi-square 0.999 quantile.
double critical(int df) {
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + 3.09 * std::sqrt(a), 3);
}

std::vector<double> random_distribution(std::mt19937& rng, double zero_fraction) {
  std::gamma_distribution<double> g(0.7);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> p(kV);
  double total = 0;
  for (auto& x : p) {
    x = u(rng) < zero_fraction ? 0.0 : g(rng);
    total += x;
  }
  if (total == 0) p[0] = total = 1;
  for (auto& x : p) x /= total;
  return p;
}

// A verification rule: (target, draft, d, u_accept, u_resample) -> token.
using Rule = std::function<int32_t(const std::vector<double>&, const std::vector<double>&, int32_t,
                                   double, double)>;

int32_t exact(const std::vector<double>& p, const std::vector<double>& q, int32_t d, double ua,
              double ur) {
  return verify_draft_token(p, q, d, ua, ur).token;
}

// A draw from normalize(max(0, a - b)) (the target itself if that is all zero).
int32_t residual_draw(const std::vector<double>& a, const std::vector<double>& b, double ur) {
  std::vector<double> r(kV);
  double total = 0;
  for (int i = 0; i < kV; ++i) total += r[i] = std::max(0.0, a[i] - b[i]);
  return total > 0 ? sample_from_distribution(r, ur * total) : sample_from_distribution(a, ur);
}

// Wrong rules, as an implementation might get them wrong.
int32_t accept_always(const std::vector<double>&, const std::vector<double>&, int32_t d, double,
                      double) {
  return d;
}
int32_t resample_from_target(const std::vector<double>& p, const std::vector<double>& q, int32_t d,
                             double ua, double ur) {
  if (ua * q[d] < p[d]) return d;
  return sample_from_distribution(p, ur);
}
int32_t ratio_upside_down(const std::vector<double>& p, const std::vector<double>& q, int32_t d,
                          double ua, double ur) {
  if (ua * p[d] < q[d]) return d;  // min(1, q/p)
  return residual_draw(p, q, ur);
}
int32_t residual_upside_down(const std::vector<double>& p, const std::vector<double>& q, int32_t d,
                             double ua, double ur) {
  if (ua * q[d] < p[d]) return d;
  return residual_draw(q, p, ur);  // max(0, q - p)
}

struct Outcome {
  double chi2;
  int df;
  double accepted_fraction;
};

// Draws d ~ draft and verifies it kDraws times with the counter streams the sampler uses.
Outcome run(const Rule& rule, const std::vector<double>& p, const std::vector<double>& q,
            uint64_t seed, const std::vector<double>& hypothesis) {
  std::vector<double> counts(kV, 0.0);
  int64_t accepted = 0;
  for (int i = 0; i < kDraws; ++i) {
    const int32_t d = sample_from_distribution(q, counter_uniform(seed, i, 2));
    const int32_t t = rule(p, q, d, counter_uniform(seed, i, 1), counter_uniform(seed, i, 0));
    counts[t] += 1;
    accepted += t == d;
  }
  Outcome o;
  o.chi2 = chi_square(counts, hypothesis, kDraws, &o.df);
  o.accepted_fraction = double(accepted) / kDraws;
  return o;
}

TEST(SpeculativeAcceptance, OutputFollowsTheTargetAndWrongRulesAreRejected) {
  std::mt19937 rng(20240611);
  int pairs_where_wrong_rules_fail[4] = {0, 0, 0, 0};
  constexpr int kPairs = 12;
  for (int pair = 0; pair < kPairs; ++pair) {
    // Some pairs with disjoint supports in places (zeros in the target or in the draft).
    const auto p = random_distribution(rng, pair % 3 == 1 ? 0.3 : 0.0);
    const auto q = random_distribution(rng, pair % 3 == 2 ? 0.3 : 0.0);
    const uint64_t seed = 1000 + pair;
    const Outcome ok = run(exact, p, q, seed, p);
    EXPECT_LT(ok.chi2, critical(ok.df)) << "pair " << pair << ": chi2 " << ok.chi2;
    // Acceptance probability of one draft: sum_x min(p(x), q(x)) (tokens accepted as themselves
    // plus residual draws that happen to equal d: none, since the residual is 0 at a rejected d).
    double overlap = 0;
    for (int x = 0; x < kV; ++x) overlap += std::min(p[x], q[x]);
    const double sigma = std::sqrt(overlap * (1 - overlap) / kDraws);
    EXPECT_NEAR(ok.accepted_fraction, overlap, 5 * sigma + 1e-9) << "pair " << pair;
    int w = 0;
    for (const Rule& wrong :
         {Rule(accept_always), Rule(resample_from_target), Rule(ratio_upside_down),
          Rule(residual_upside_down)}) {
      const Outcome bad = run(wrong, p, q, seed, p);
      pairs_where_wrong_rules_fail[w++] += bad.chi2 > critical(bad.df);
    }
  }
  // Every wrong rule is caught on (nearly) every pair; a correct rule would fail on about 0.1%.
  for (int w = 0; w < 4; ++w)
    EXPECT_GE(pairs_where_wrong_rules_fail[w], kPairs - 1) << "wrong rule " << w;
}

TEST(SpeculativeAcceptance, PointMassDraftsFollowTheTarget) {
  // Prompt lookup: the draft is a fixed token; verification must still give the target.
  std::mt19937 rng(7);
  const auto p = random_distribution(rng, 0.0);
  for (int32_t d : {0, 3, 7}) {
    std::vector<double> counts(kV, 0.0);
    for (int i = 0; i < kDraws; ++i) {
      const auto v =
          verify_draft_token(p, {}, d, counter_uniform(5, i, 1), counter_uniform(5, i, 0));
      counts[v.token] += 1;
      EXPECT_EQ(v.accepted, v.token == d);
    }
    int df = 0;
    const double x = chi_square(counts, p, kDraws, &df);
    EXPECT_LT(x, critical(df)) << "draft " << d;
    // Accepting always would give a point mass at d: decisively rejected.
    std::vector<double> at_d(kV, 0.0);
    at_d[d] = kDraws;
    EXPECT_GT(chi_square(at_d, p, kDraws, &df), critical(df));
  }
}

TEST(SpeculativeAcceptance, GreedyTargetAcceptsExactlyItsArgmax) {
  std::vector<double> onehot(kV, 0.0);
  onehot[5] = 1.0;
  std::mt19937 rng(3);
  const auto q = random_distribution(rng, 0.0);
  for (int i = 0; i < 1000; ++i) {
    const int32_t d = i % kV;
    const double ua = counter_uniform(9, i, 1), ur = counter_uniform(9, i, 0);
    const auto with_draft = verify_draft_token(onehot, q, d, ua, ur);
    const auto point = verify_draft_token(onehot, {}, d, ua, ur);
    EXPECT_EQ(with_draft.accepted, d == 5);
    EXPECT_EQ(with_draft.token, 5);
    EXPECT_EQ(point.accepted, d == 5);
    EXPECT_EQ(point.token, 5);
  }
}

TEST(SpeculativeAcceptance, SampleFromDistributionIsSampleTokensInverseCdf) {
  // sample_token draws through sample_from_distribution: the same token for the same uniform.
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 0.5f, 0.0f, 1.5f, -0.3f, 0.7f};
  messages::SamplingParams params;
  params.temperature = 0.8f;
  params.top_k = 5;
  const auto probs = sampling_distribution(logits.data(), kV, params, {});
  for (int i = 0; i < 200; ++i) {
    const double u = counter_uniform(1, i);
    EXPECT_EQ(sample_token(logits.data(), kV, params, {}, u).token,
              sample_from_distribution(probs, u));
  }
  PenaltyHistory h;
  add_to_history(h, 3, false);
  add_to_history(h, 4, true);
  add_to_history(h, 4, true);
  EXPECT_EQ(h.seen_tokens, (std::vector<int32_t>{3, 4}));
  ASSERT_EQ(h.output_counts.size(), 1u);
  EXPECT_EQ(h.output_counts[0], (std::pair<int32_t, int32_t>{4, 2}));
}

}  // namespace
}  // namespace shardserve::kernels::cpu
