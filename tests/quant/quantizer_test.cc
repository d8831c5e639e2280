// The quantizers on synthetic data: RTN's error bound, GPTQ reducing to RTN when the Hessian is
// diagonal and beating it on correlated inputs, act-order's grouping, AWQ's scale search.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

#include "common/error.h"
#include "model/quant/quantizer.h"

namespace shardserve::quant {
namespace {

std::vector<float> randn(int64_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Correlated activations: x = z A + outlier channels, [n, in].
std::vector<float> activations(int64_t n, int64_t in, uint32_t seed) {
  const auto z = randn(n * in, seed);
  const auto a = randn(in * in, seed + 1, 0.3f);
  std::vector<float> x(n * in, 0.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < in; ++j) {
      float s = z[r * in + j];
      for (int64_t k = 0; k < in; ++k) s += z[r * in + k] * a[k * in + j];
      x[r * in + j] = s * (j % 16 == 3 ? 8.0f : 1.0f);  // a few large channels, as LLMs have
    }
  return x;
}

// || x (W - Wq)^T ||^2 / (n out)
double output_mse(const std::vector<float>& x, int64_t n, const std::vector<float>& w,
                  const std::vector<float>& wq, int64_t out, int64_t in) {
  double e = 0;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double d = 0;
      for (int64_t i = 0; i < in; ++i) d += double(x[r * in + i]) * (w[o * in + i] - wq[o * in + i]);
      e += d * d;
    }
  return e / double(n * out);
}

std::vector<double> hessian_of(const std::vector<float>& x, int64_t n, int64_t in) {
  std::vector<double> h(in * in, 0.0);
  accumulate_hessian(x.data(), n, in, 2.0 / n, h);
  return h;
}

TEST(Rtn, EveryWeightWithinHalfAStep) {
  const int64_t out = 24, in = 128;
  const auto w = randn(out * in, 1, 0.05f);
  struct G {
    QuantGrid::Style style;
    int bits;
    int64_t group;
    bool sym;
    int min_zero;
  };
  for (const G g : {G{QuantGrid::Style::kGptq, 4, 32, true, 0}, G{QuantGrid::Style::kGptq, 4, 128, false, 0},
                    G{QuantGrid::Style::kGptq, 4, -1, false, 1}, G{QuantGrid::Style::kGptq, 8, 64, true, 0},
                    G{QuantGrid::Style::kGptq, 8, 32, false, 1}, G{QuantGrid::Style::kAwq, 4, 32, false, 0},
                    G{QuantGrid::Style::kAwq, 4, 128, false, 0}}) {
    QuantGrid grid{g.style, g.bits, g.group, g.sym, g.min_zero};
    const QuantizedLinear q = quantize_rtn(w, out, in, grid);
    q.check();
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        const float s = q.scales[q.g_idx[i] * out + o];
        // half a step (scales are rounded up to fp16, so the grid spans the group)
        ASSERT_LE(std::abs(w[o * in + i] - q.weight(o, i)), 0.5f * s * 1.001f + 1e-7f)
            << "bits " << g.bits << " group " << g.group << " at " << o << "," << i;
      }
    if (g.min_zero == 1) {
      for (int32_t z : q.zeros) EXPECT_GE(z, 1);
    }
  }
}

TEST(Rtn, SymmetricGptqGridPutsTheZeroInTheMiddle) {
  const auto w = randn(8 * 32, 2);
  const auto q4 = quantize_rtn(w, 8, 32, {QuantGrid::Style::kGptq, 4, 32, true, 0});
  for (int32_t z : q4.zeros) EXPECT_EQ(z, 8);
  const auto q8 = quantize_rtn(w, 8, 32, {QuantGrid::Style::kGptq, 8, 32, true, 0});
  for (int32_t z : q8.zeros) EXPECT_EQ(z, 128);
}

TEST(Hessian, AccumulationEqualsTheDirectSum) {
  const int64_t n = 300, in = 12;
  const auto x = randn(n * in, 3);
  const auto h = hessian_of(x, n, in);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < in; ++j) {
      double s = 0;
      for (int64_t r = 0; r < n; ++r) s += double(x[r * in + i]) * x[r * in + j];
      EXPECT_NEAR(h[i * in + j], 2.0 * s / n, 1e-4 * std::max(1.0, std::abs(2.0 * s / n)));
    }
}

TEST(Gptq, DiagonalHessianGivesRoundToNearest) {
  // With H diagonal, H^-1's Cholesky factor is diagonal: no error is fed forward, and GPTQ's
  // codes are RTN's (group parameters come from the same, unchanged weights).
  const int64_t out = 16, in = 64;
  const auto w = randn(out * in, 4, 0.1f);
  std::vector<double> h(in * in, 0.0);
  for (int64_t i = 0; i < in; ++i) h[i * in + i] = 1.0 + 0.1 * (i % 7);
  for (int64_t group : {32, -1}) {
    const QuantGrid grid{QuantGrid::Style::kGptq, 4, group, true, 0};
    const QuantizedLinear rtn = quantize_rtn(w, out, in, grid);
    const QuantizedLinear g = quantize_gptq(w, out, in, h, grid, {});
    EXPECT_EQ(g.q, rtn.q);
    EXPECT_EQ(g.scales, rtn.scales);
    if (group == -1) {  // act-order permutes columns but one group keeps every parameter
      GptqOptions ao;
      ao.act_order = true;
      EXPECT_EQ(quantize_gptq(w, out, in, h, grid, ao).q, rtn.q);
    }
  }
}

TEST(Gptq, BeatsRoundToNearestOnCorrelatedInputs) {
  const int64_t n = 1024, in = 128, out = 32;
  const auto x = activations(n, in, 5);
  const auto w = randn(out * in, 6, 0.05f);
  const auto h = hessian_of(x, n, in);
  for (int bits : {4, 8}) {
    const QuantGrid grid{QuantGrid::Style::kGptq, bits, 32, true, 0};
    const double e_rtn = output_mse(x, n, w, quantize_rtn(w, out, in, grid).dequantize(), out, in);
    GptqStats stats;
    const QuantizedLinear g = quantize_gptq(w, out, in, h, grid, {}, &stats);
    const double e_gptq = output_mse(x, n, w, g.dequantize(), out, in);
    GptqOptions ao;
    ao.act_order = true;
    const QuantizedLinear ga = quantize_gptq(w, out, in, h, grid, ao);
    const double e_act = output_mse(x, n, w, ga.dequantize(), out, in);
    EXPECT_LT(e_gptq, 0.8 * e_rtn) << bits << " bits";
    EXPECT_LT(e_act, 0.8 * e_rtn) << bits << " bits";
    EXPECT_GT(stats.loss, 0);
  }
}

TEST(Gptq, ActOrderGroupsColumnsByDecreasingHessianDiagonal) {
  const int64_t n = 512, in = 64, out = 8;
  auto x = activations(n, in, 7);
  const auto w = randn(out * in, 8, 0.05f);
  const auto h = hessian_of(x, n, in);
  GptqOptions ao;
  ao.act_order = true;
  const QuantizedLinear g = quantize_gptq(w, out, in, h, {QuantGrid::Style::kGptq, 4, 32, true, 0}, ao);
  g.check();
  std::map<int32_t, int> members;
  for (int32_t gi : g.g_idx) ++members[gi];
  EXPECT_EQ(members[0], 32);
  EXPECT_EQ(members[1], 32);
  // The 32 columns of largest diag(H) form group 0.
  std::vector<int64_t> order(in);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return h[a * in + a] > h[b * in + b]; });
  for (int k = 0; k < 32; ++k) EXPECT_EQ(g.g_idx[order[k]], 0);
  bool monotone = true;
  for (int64_t i = 1; i < in; ++i) monotone = monotone && g.g_idx[i] >= g.g_idx[i - 1];
  EXPECT_FALSE(monotone);  // a permutation-grouped g_idx, as desc_act checkpoints have
}

TEST(Gptq, DeadInputsAreZeroed) {
  const int64_t out = 8, in = 32;
  const auto w = randn(out * in, 9, 0.05f);
  std::vector<double> h(in * in, 0.0);
  for (int64_t i = 0; i < in; ++i) h[i * in + i] = i == 5 ? 0.0 : 1.0;
  GptqStats st;
  const auto g = quantize_gptq(w, out, in, h, {QuantGrid::Style::kGptq, 4, 32, true, 0}, {}, &st);
  EXPECT_EQ(st.dead_columns, 1);
  for (int64_t o = 0; o < out; ++o) EXPECT_EQ(g.weight(o, 5), 0.0f);
}

TEST(Awq, SearchFindsAScaleThatBeatsPlainRtn) {
  const int64_t n = 512, in = 128, out = 48;
  const auto x = activations(n, in, 10);
  const auto w = randn(out * in, 11, 0.05f);
  const QuantGrid grid{QuantGrid::Style::kAwq, 4, 128, false, 0};
  const AwqSearch s = awq_search_scales(x.data(), n, in, {&w}, {out}, grid, 20);
  // alpha = 0 is plain RTN: its error is the one computed directly.
  const double direct = output_mse(x, n, w, quantize_rtn(w, out, in, grid).dequantize(), out, in);
  EXPECT_NEAR(s.loss_unscaled, direct, 1e-3 * direct);
  EXPECT_GT(s.alpha, 0.0);
  EXPECT_LT(s.loss, s.loss_unscaled);
  ASSERT_EQ(s.scales.size(), static_cast<std::size_t>(in));
  // The outlier channels (j % 16 == 3) get the larger scales.
  double big = 0, small = 0;
  for (int64_t i = 0; i < in; ++i) (i % 16 == 3 ? big : small) += s.scales[i];
  EXPECT_GT(big / 8, small / 120);
  // Folding: (W * s) quantized, divided by s, has the searched error.
  std::vector<float> ws = w;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) ws[o * in + i] *= s.scales[i];
  auto deq = quantize_rtn(ws, out, in, grid).dequantize();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) deq[o * in + i] /= s.scales[i];
  EXPECT_NEAR(output_mse(x, n, w, deq, out, in), s.loss, 1e-3 * s.loss);
}

TEST(Quantizer, RefusesUnsupportedGrids) {
  const auto w = randn(8 * 48, 12);
  EXPECT_THROW(quantize_rtn(w, 8, 48, {QuantGrid::Style::kGptq, 4, 32, true, 0}), Error);
  EXPECT_THROW(quantize_rtn(w, 8, 48, {QuantGrid::Style::kGptq, 3, -1, true, 0}), Error);
  EXPECT_THROW(quantize_rtn(w, 8, 48, {QuantGrid::Style::kAwq, 8, -1, false, 0}), Error);
}

}  // namespace
}  // namespace shardserve::quant
