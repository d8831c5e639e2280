// The GPU quantizer (tools/quantize/cuda/cuda_numerics.h) against model/quant's CPU reference
// on fresh random inputs (SHARDSERVE_TEST_SEED replays a run): the Hessian, GPTQ from a given
// Hessian and from activations (act-order, group sizes 32 / 128 / -1, 4 and 8 bits, sym and
// asym, both grids, a partial last block, dead inputs), and AWQ's scale search. Label gpu:
// every test skips itself where no CUDA device exists.
//
// Tolerances, and why:
// - Hessian: the CPU sums each 256-token chunk in float (error at most gamma_256 * sum |x_i x_j|
//   <= gamma_256 sqrt(H_ii H_jj) by Cauchy-Schwarz, summed over chunks the same), the GPU sums
//   in double; so |H_gpu - H_cpu| <= gamma_256 sqrt(H_ii H_jj), gamma_256 = 256u / (1 - 256u),
//   u = 2^-24 (a worst-case bound; typical differences are ~100x smaller).
// - GPTQ: both run in double; they differ only in rounding (cuSOLVER's factorisations vs the
//   hand-written loops, a GEMM's summation order vs sequential rank-1 updates), so weights
//   agree to ~1e-12 relative, and a code can differ only where w / scale lies that close to a
//   rounding tie (or a group's range that close to an fp16 boundary of its scale) -- then the
//   row's later columns get a different error and may differ too. Expected: none at these
//   sizes; allowed: 0.1 % of codes and of scales, dequantized weights within 2 % (relative L2:
//   0.1 % of the codes one step off), the loss to 1e-9 when the codes agree. From activations
//   the GPU result must equal its own two steps exactly; against the CPU, whose Hessian
//   carries float rounding, a tie-broken code propagates through its row, so only the loss
//   (1 %) and the share of differing codes (5 %) are bounded.
// - AWQ: the outputs x W^T are float32 GEMMs on both sides, in different summation orders, so
//   each mean squared error moves by ~1e-7 of itself: the losses must agree to 1e-4, and when
//   the same alpha wins (a different one needs two candidates within that of each other) the
//   scales exactly (both compute them with quant::awq_candidate_scales).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/quant/quantizer.h"
#include "tests/cuda/cuda_test_util.h"
#include "tools/quantize/cuda/cuda_numerics.h"
#include "tools/quantize/numerics.h"

namespace shardserve::quantize {
namespace {

using kernels::cuda::testing::input_seed;
using kernels::cuda::testing::random_floats;
using quant::QuantGrid;
using quant::QuantizedLinear;

// Correlated activations [rows, in]: a shared rank-16 component, channel scales 0.1 .. 10,
// outlier channels, and the inputs listed in `dead` never active (all zero).
std::vector<float> activations(int64_t rows, int64_t in, std::mt19937& rng,
                               const std::vector<int64_t>& dead = {}) {
  constexpr int64_t kLatent = 16;
  const auto mix = random_floats(kLatent * in, rng, 0.5f);
  std::vector<float> x = random_floats(rows * in, rng, 0.3f);
  for (int64_t r = 0; r < rows; ++r) {
    const auto z = random_floats(kLatent, rng);
    for (int64_t i = 0; i < in; ++i) {
      float acc = x[r * in + i];
      for (int64_t k = 0; k < kLatent; ++k) acc += z[k] * mix[k * in + i];
      x[r * in + i] = acc * std::pow(10.0f, (i % 9) / 4.0f - 1.0f) * (i % 37 == 5 ? 6.0f : 1.0f);
    }
  }
  for (const int64_t i : dead)
    for (int64_t r = 0; r < rows; ++r) x[r * in + i] = 0;
  return x;
}

constexpr double kGamma256 = 256.0 / 16777216.0 / (1.0 - 256.0 / 16777216.0);

TEST(CudaNumerics, HessianMatchesTheCpuWithinTheFloatBound) {
  SHARDSERVE_REQUIRE_GPU();
  std::mt19937 rng(input_seed());
  CudaNumerics gpu;
  struct Shape {
    int64_t rows, in;
  };
  for (const Shape sh : {Shape{700, 96}, Shape{1000, 256}, Shape{333, 384}}) {
    const auto x = activations(sh.rows, sh.in, rng, {7});
    const double weight = 2.0 / static_cast<double>(sh.rows);
    // Two calls (the second adds to a non-zero H), split off the 256-token chunks.
    const int64_t split = sh.rows / 3;
    std::vector<double> cpu(sh.in * sh.in, 0.0), got(sh.in * sh.in, 0.0);
    quant::accumulate_hessian(x.data(), split, sh.in, weight, cpu);
    quant::accumulate_hessian(x.data() + split * sh.in, sh.rows - split, sh.in, weight, cpu);
    gpu.accumulate_hessian(x.data(), split, sh.in, weight, got);
    gpu.accumulate_hessian(x.data() + split * sh.in, sh.rows - split, sh.in, weight, got);
    double worst = 0;
    for (int64_t i = 0; i < sh.in; ++i)
      for (int64_t j = 0; j < sh.in; ++j) {
        const double g = got[i * sh.in + j], c = cpu[i * sh.in + j];
        ASSERT_EQ(g, got[j * sh.in + i]) << "not symmetric at " << i << "," << j;
        const double scale = std::sqrt(cpu[i * sh.in + i] * cpu[j * sh.in + j]);
        ASSERT_LE(std::fabs(g - c), (kGamma256 + 1e-12) * scale)  // + the GPU's double error
            << "H[" << i << "][" << j << "] " << g << " vs " << c << ", in " << sh.in;
        if (scale > 0) worst = std::max(worst, std::fabs(g - c) / scale);
      }
    EXPECT_EQ(got[7 * sh.in + 7], 0.0) << "a dead input has an exactly zero diagonal";
    std::printf("hessian rows %lld in %lld: max |dH| / sqrt(HiiHjj) = %.3g (bound %.3g)\n",
                static_cast<long long>(sh.rows), static_cast<long long>(sh.in), worst, kGamma256);
  }
}

// GPU and CPU GPTQ results of one case, compared with the tolerances above.
void expect_same_gptq(const QuantizedLinear& got, const quant::GptqStats& gst,
                      const QuantizedLinear& want, const quant::GptqStats& wst,
                      const std::string& what) {
  ASSERT_EQ(got.q.size(), want.q.size()) << what;
  EXPECT_EQ(got.g_idx, want.g_idx) << what;
  EXPECT_EQ(gst.dead_columns, wst.dead_columns) << what;
  int64_t codes = 0, scales = 0;
  for (std::size_t k = 0; k < got.q.size(); ++k) codes += got.q[k] != want.q[k];
  for (std::size_t k = 0; k < got.scales.size(); ++k)
    scales += got.scales[k] != want.scales[k] || got.zeros[k] != want.zeros[k];
  EXPECT_LE(codes, static_cast<int64_t>(1e-3 * static_cast<double>(got.q.size()))) << what;
  EXPECT_LE(scales, static_cast<int64_t>(1e-3 * static_cast<double>(got.scales.size())) + 1)
      << what;
  const auto gw = got.dequantize(), ww = want.dequantize();
  double diff = 0, norm = 0;
  for (std::size_t k = 0; k < gw.size(); ++k) {
    diff += double(gw[k] - ww[k]) * (gw[k] - ww[k]);
    norm += double(ww[k]) * ww[k];
  }
  EXPECT_LE(std::sqrt(diff / norm), 2e-2) << what;
  if (codes == 0) {
    EXPECT_NEAR(gst.loss, wst.loss, 1e-9 * wst.loss) << what;
  }
  std::printf("%s: codes differing %lld / %zu, group params %lld / %zu, loss %.12g vs %.12g\n",
              what.c_str(), static_cast<long long>(codes), got.q.size(),
              static_cast<long long>(scales), got.scales.size(), gst.loss, wst.loss);
}

struct GptqCase {
  int64_t out, in, rows;
  int bits;
  int64_t group;
  QuantGrid::Style style;
  bool sym;
  int min_zero;
  bool act_order;
  int64_t block;
};

const GptqCase kGptqCases[] = {
    {96, 256, 700, 4, 128, QuantGrid::Style::kGptq, true, 0, false, 128},
    {64, 256, 500, 4, 32, QuantGrid::Style::kGptq, false, 1, true, 128},
    {48, 384, 900, 4, -1, QuantGrid::Style::kGptq, true, 0, true, 128},
    {72, 512, 1200, 4, 128, QuantGrid::Style::kGptq, true, 0, true, 128},
    {80, 320, 600, 8, 32, QuantGrid::Style::kGptq, true, 0, true, 64},
    {40, 200, 300, 4, -1, QuantGrid::Style::kAwq, false, 0, false, 128},  // last block 72 wide
};

std::string describe(const GptqCase& c) {
  return "out " + std::to_string(c.out) + " in " + std::to_string(c.in) + " bits " +
         std::to_string(c.bits) + " group " + std::to_string(c.group) +
         (c.style == QuantGrid::Style::kAwq ? " awq-grid" : (c.sym ? " sym" : " asym")) +
         (c.act_order ? " act-order" : "") + " block " + std::to_string(c.block);
}

TEST(CudaNumerics, GptqFromAHessianMatchesTheCpu) {
  SHARDSERVE_REQUIRE_GPU();
  std::mt19937 rng(input_seed());
  CudaNumerics gpu;
  for (const GptqCase& c : kGptqCases) {
    const auto x = activations(c.rows, c.in, rng, {3, c.in - 2});
    const auto w = random_floats(c.out * c.in, rng, 0.05f);
    std::vector<double> h(c.in * c.in, 0.0);
    quant::accumulate_hessian(x.data(), c.rows, c.in, 2.0 / static_cast<double>(c.rows), h);
    const QuantGrid grid{c.style, c.bits, c.group, c.sym, c.min_zero};
    quant::GptqOptions opt;
    opt.act_order = c.act_order;
    opt.block = c.block;
    quant::GptqStats gst, cst;
    const QuantizedLinear got = gpu.quantize_gptq(w, c.out, c.in, h, grid, opt, &gst);
    const QuantizedLinear want = quant::quantize_gptq(w, c.out, c.in, h, grid, opt, &cst);
    got.check();
    EXPECT_EQ(gst.dead_columns, 2);
    expect_same_gptq(got, gst, want, cst, describe(c));
  }
}

TEST(CudaNumerics, GptqFromActivationsIsItsHessianThenGptq) {
  SHARDSERVE_REQUIRE_GPU();
  std::mt19937 rng(input_seed());
  CudaNumerics gpu;
  CpuNumerics cpu;
  for (const GptqCase& c : {kGptqCases[0], kGptqCases[3]}) {
    const auto x = activations(c.rows, c.in, rng);
    const auto w = random_floats(c.out * c.in, rng, 0.05f);
    const QuantGrid grid{c.style, c.bits, c.group, c.sym, c.min_zero};
    quant::GptqOptions opt;
    opt.act_order = c.act_order;
    opt.block = c.block;
    quant::GptqStats gst, sst, cst;
    const QuantizedLinear got = gpu.gptq(w, c.out, c.in, x.data(), c.rows, grid, opt, &gst);
    // The same two GPU steps through the host: the same doubles, so the same result exactly.
    std::vector<double> h(c.in * c.in, 0.0);
    gpu.accumulate_hessian(x.data(), c.rows, c.in, 2.0 / static_cast<double>(c.rows), h);
    const QuantizedLinear steps = gpu.quantize_gptq(w, c.out, c.in, h, grid, opt, &sst);
    EXPECT_EQ(got.q, steps.q) << describe(c);
    EXPECT_EQ(got.scales, steps.scales) << describe(c);
    EXPECT_EQ(got.zeros, steps.zeros) << describe(c);
    EXPECT_EQ(got.g_idx, steps.g_idx) << describe(c);
    EXPECT_EQ(gst.loss, sst.loss) << describe(c);
    // Against the CPU pipeline step: its Hessian has float rounding the GPU's lacks, which the
    // error feedback may carry from one tie-broken code through the rest of its row, so only
    // the objective is compared, to 1 %, and the codes to 5 %.
    const QuantizedLinear want = cpu.gptq(w, c.out, c.in, x.data(), c.rows, grid, opt, &cst);
    int64_t codes = 0;
    for (std::size_t k = 0; k < got.q.size(); ++k) codes += got.q[k] != want.q[k];
    EXPECT_NEAR(gst.loss, cst.loss, 1e-2 * cst.loss) << describe(c);
    EXPECT_LE(codes, static_cast<int64_t>(0.05 * static_cast<double>(got.q.size()))) << describe(c);
    std::printf("%s from activations: codes differing from the CPU %lld / %zu, loss %.12g vs "
                "%.12g\n",
                describe(c).c_str(), static_cast<long long>(codes), got.q.size(), gst.loss,
                cst.loss);
  }
}

TEST(CudaNumerics, AwqSearchMatchesTheCpu) {
  SHARDSERVE_REQUIRE_GPU();
  std::mt19937 rng(input_seed());
  CudaNumerics gpu;
  const int64_t n = 600, in = 256;
  const auto x = activations(n, in, rng);
  const auto w1 = random_floats(64 * in, rng, 0.05f), w2 = random_floats(32 * in, rng, 0.05f);
  for (const int64_t group : {int64_t{32}, int64_t{128}, int64_t{-1}}) {
    const QuantGrid grid{QuantGrid::Style::kAwq, 4, group, false, 0};
    // The abs-mean from a larger sample (as the pipeline passes it), and computed from x.
    const auto big = activations(2 * n, in, rng);
    std::vector<float> mean(in, 0.0f);
    for (int64_t r = 0; r < 2 * n; ++r)
      for (int64_t i = 0; i < in; ++i) mean[i] += std::fabs(big[r * in + i]) / (2 * n);
    const std::vector<float>* means[] = {&mean, nullptr};
    for (const std::vector<float>* m : means) {
      const auto got = gpu.awq_search_scales(x.data(), n, in, {&w1, &w2}, {64, 32}, grid, 20, m);
      const auto want =
          quant::awq_search_scales(x.data(), n, in, {&w1, &w2}, {64, 32}, grid, 20, m);
      const std::string what =
          "group " + std::to_string(group) + (m != nullptr ? " given abs-mean" : " own abs-mean");
      EXPECT_NEAR(got.loss_unscaled, want.loss_unscaled, 1e-4 * want.loss_unscaled) << what;
      EXPECT_NEAR(got.loss, want.loss, 1e-4 * want.loss) << what;
      if (got.alpha == want.alpha) {
        EXPECT_EQ(got.scales, want.scales) << what;
      }
      std::printf("awq %s: alpha %.2f vs %.2f, mse %.9g vs %.9g, rtn %.9g vs %.9g\n",
                  what.c_str(), got.alpha, want.alpha, got.loss, want.loss, got.loss_unscaled,
                  want.loss_unscaled);
    }
  }
}

TEST(CudaNumerics, RefusesWhatTheCpuRefuses) {
  SHARDSERVE_REQUIRE_GPU();
  CudaNumerics gpu;
  const int64_t out = 8, in = 96;
  const std::vector<float> w(out * in, 0.1f);
  const std::vector<double> h(in * in, 1.0);
  struct Bad {
    QuantGrid grid;
    int64_t block;
  };
  for (const Bad b : {Bad{QuantGrid{QuantGrid::Style::kGptq, 4, 64, true, 0}, 128},  // 64 ∤ 96
                      Bad{QuantGrid{QuantGrid::Style::kGptq, 3, 32, true, 0}, 128},  // 3 bits
                      Bad{QuantGrid{QuantGrid::Style::kAwq, 8, 32, false, 0}, 128},  // awq 8-bit
                      Bad{QuantGrid{QuantGrid::Style::kGptq, 4, 32, true, 0}, 48}}) {  // 32 ∤ 48
    quant::GptqOptions opt;
    opt.block = b.block;
    EXPECT_THROW(gpu.quantize_gptq(w, out, in, h, b.grid, opt), Error);
    EXPECT_THROW(quant::quantize_gptq(w, out, in, h, b.grid, opt), Error);
  }
}

}  // namespace
}  // namespace shardserve::quantize
