// The CPU kernel that multiplies by group-wise quantized weights without expanding them: same
// results as the float32 matmul over the dequantized weights, for 4 and 8 bits, plain and
// act-order (permuted) groupings.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quant_matmul.h"
#include "model/quant/kernel_layout.h"
#include "model/quant/quantizer.h"

namespace shardserve::quant {
namespace {

std::vector<float> randn(int64_t n, uint32_t seed, float sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(QuantMatmul, MatchesTheDenseMatmulOfTheDequantizedWeights) {
  const int64_t m = 5, n = 24, k = 128;
  const auto x = randn(m * k, 1, 1.0f);
  const auto w = randn(n * k, 2, 0.05f);
  // A Hessian with unequal diagonal, so act-order really permutes.
  const auto xs = randn(256 * k, 3, 1.0f);
  std::vector<double> h(k * k, 0.0);
  for (int64_t r = 0; r < 256; ++r)
    for (int64_t i = 0; i < k; ++i) h[i * k + i] += xs[r * k + i] * xs[r * k + i] * (1 + i % 5);
  for (int bits : {4, 8}) {
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.act_order = act_order;
      const QuantizedLinear q =
          quantize_gptq(w, n, k, h, {QuantGrid::Style::kGptq, bits, 32, true, 0}, o);
      const auto layout = to_kernel_layout(q);
      const auto dense = q.dequantize();
      EXPECT_EQ(kernels::cpu::dequantize(layout), dense);
      std::vector<float> want(m * n), got(m * n);
      kernels::cpu::matmul_nt(x.data(), dense.data(), want.data(), m, n, k);
      kernels::cpu::quant_matmul_nt(x.data(), layout, got.data(), m);
      for (int64_t i = 0; i < m * n; ++i)
        EXPECT_NEAR(got[i], want[i], 1e-4f * (1 + std::abs(want[i]))) << bits << " bits " << i;
      if (bits == 4) {  // codes 1/8 of float32; scales, zeros and the permutation on top
        EXPECT_LT(layout.bytes() * 4, static_cast<int64_t>(dense.size() * sizeof(float)));
      }
    }
  }
}

TEST(QuantMatmul, OddWidthsAndUnevenGroups) {
  // 4-bit with an odd number of columns and groups of different sizes (a g_idx as any
  // checkpoint may hold it).
  const int64_t m = 3, n = 4, k = 11, groups = 3;
  std::vector<uint8_t> q(n * k);
  std::vector<int32_t> g_idx(k), zeros(groups * n);
  std::vector<float> scales(groups * n);
  for (int64_t i = 0; i < n * k; ++i) q[i] = static_cast<uint8_t>((i * 7) % 16);
  for (int64_t i = 0; i < k; ++i) g_idx[i] = static_cast<int32_t>((i * 5) % groups);
  for (int64_t i = 0; i < groups * n; ++i) {
    zeros[i] = static_cast<int32_t>(i % 16);
    scales[i] = 0.125f * static_cast<float>(1 + i);
  }
  const auto w = kernels::cpu::make_quant_matrix(4, n, k, q.data(), zeros.data(), scales.data(),
                                                 g_idx.data(), groups);
  const auto dense = kernels::cpu::dequantize(w);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i)
      EXPECT_EQ(dense[j * k + i], scales[g_idx[i] * n + j] *
                                      static_cast<float>(q[j * k + i] - zeros[g_idx[i] * n + j]));
  const auto x = randn(m * k, 4, 1.0f);
  std::vector<float> want(m * n), got(m * n);
  kernels::cpu::matmul_nt(x.data(), dense.data(), want.data(), m, n, k);
  kernels::cpu::quant_matmul_nt(x.data(), w, got.data(), m);
  for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(got[i], want[i], 1e-4f * (1 + std::abs(want[i])));
}

TEST(QuantMatmul, EveryTileShapeAndTailMatchesTheDenseMatmul) {
  // The kernel's tiles (lanes.h): 4 weight rows and a single-row tail (n = 26), 4-row x tiles and
  // the 1-3 rows left (m = 1..9), groups of uneven length starting on odd columns (a 4-bit group
  // then begins on a high nibble), lengths below and above one 8-lane vector, both widths.
  const int64_t n = 26, k = 77, groups = 5;
  std::mt19937 rng(std::random_device{}());
  for (int bits : {4, 8}) {
    std::vector<uint8_t> q(n * k);
    std::vector<int32_t> g_idx(k), zeros(groups * n);
    std::vector<float> scales(groups * n);
    for (auto& v : q) v = static_cast<uint8_t>(rng() % (1u << bits));
    // Groups 0..4 of lengths 3, 7, 19, 20, 28 (every start odd but the first), shuffled.
    const int64_t lengths[] = {3, 7, 19, 20, 28};
    int64_t c = 0;
    for (int32_t g = 0; g < groups; ++g)
      for (int64_t i = 0; i < lengths[g]; ++i) g_idx[c++] = g;
    std::shuffle(g_idx.begin(), g_idx.end(), rng);
    for (auto& z : zeros) z = static_cast<int32_t>(rng() % (1u << bits));
    for (auto& sc : scales) sc = 0.01f * static_cast<float>(1 + rng() % 9);
    const auto w = kernels::cpu::make_quant_matrix(bits, n, k, q.data(), zeros.data(),
                                                   scales.data(), g_idx.data(), groups);
    const auto dense = kernels::cpu::dequantize(w);
    for (int64_t m = 1; m <= 9; ++m) {
      const auto x = randn(m * k, static_cast<uint32_t>(rng()), 1.0f);
      std::vector<float> want(m * n), got(m * n, NAN);
      kernels::cpu::matmul_nt(x.data(), dense.data(), want.data(), m, n, k);
      kernels::cpu::quant_matmul_nt(x.data(), w, got.data(), m);
      for (int64_t i = 0; i < m * n; ++i)
        ASSERT_NEAR(got[i], want[i], 1e-4f * (1 + std::abs(want[i])))
            << bits << " bits, m = " << m << ", row " << i / n << ", column " << i % n;
    }
  }
}

}  // namespace
}  // namespace shardserve::quant
