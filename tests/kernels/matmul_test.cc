// kernels/cpu/matmul.h: the float32 projection every CPU forward pass runs, against a double
// reference, and the promise its callers lean on (the speculative verifier, the TP ranks, the
// batched decode): an output's bits depend on its own x row and weight row only, never on how
// many rows are batched with it, where it falls in a tile, or how many threads run.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/matmul.h"

namespace shardserve::kernels::cpu {
namespace {

std::vector<float> random_floats(std::size_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& f : v) f = dist(rng);
  return v;
}

struct Shape {
  int64_t m, n, k;
};

// m = 7 (a 4-row tile and a 3-row one), m = 5 (4 and 1) and other small m, n not a multiple of
// 4 (the column tail), k not a multiple of 8 (the lane tail), k below one vector, and the model's
// own shapes.
const Shape kShapes[] = {{1, 1, 1},   {1, 5, 7},     {3, 7, 9},      {2, 4, 8},
                         {5, 13, 31}, {16, 512, 256}, {7, 1539, 768}, {64, 258, 100}};

TEST(Matmul, MatchesADoubleReferenceWithinTheFloatBound) {
  std::mt19937 rng(std::random_device{}());
  for (const Shape& s : kShapes) {
    const auto x = random_floats(s.m * s.k, rng), w = random_floats(s.n * s.k, rng);
    std::vector<float> y(s.m * s.n, NAN);
    matmul_nt(x.data(), w.data(), y.data(), s.m, s.n, s.k);
    for (int64_t r = 0; r < s.m; ++r)
      for (int64_t j = 0; j < s.n; ++j) {
        double want = 0, magnitude = 0;
        for (int64_t i = 0; i < s.k; ++i) {
          want += double(x[r * s.k + i]) * w[j * s.k + i];
          magnitude += std::abs(double(x[r * s.k + i]) * w[j * s.k + i]);
        }
        // Any float summation order is within k ulp-sized steps of the exact sum.
        const double bound = 2.0 * s.k * 0x1p-24 * magnitude + 1e-30;
        ASSERT_NEAR(y[r * s.n + j], want, bound)
            << "m=" << s.m << " n=" << s.n << " k=" << s.k << " at row " << r << ", column " << j;
      }
  }
}

TEST(Matmul, EachRowsBitsAreTheSameAloneOrBatchedAndOnAnyThreadCount) {
  std::mt19937 rng(std::random_device{}());
  for (const Shape& s : kShapes) {
    const auto x = random_floats(s.m * s.k, rng), w = random_floats(s.n * s.k, rng);
    std::vector<float> batched(s.m * s.n);
    matmul_nt(x.data(), w.data(), batched.data(), s.m, s.n, s.k);
    for (int64_t r = 0; r < s.m; ++r) {
      std::vector<float> alone(s.n);
      matmul_nt(x.data() + r * s.k, w.data(), alone.data(), 1, s.n, s.k);
      ASSERT_EQ(std::memcmp(alone.data(), batched.data() + r * s.n, s.n * sizeof(float)), 0)
          << "m=" << s.m << " n=" << s.n << " k=" << s.k << ": row " << r
          << " differs between a batch and alone";
    }
    // Starting one row later moves every row to another place in its tile, and some rows
    // between the 4-row tiles and the 1- to 3-row one that takes the rest.
    if (s.m > 1) {
      std::vector<float> shifted((s.m - 1) * s.n);
      matmul_nt(x.data() + s.k, w.data(), shifted.data(), s.m - 1, s.n, s.k);
      ASSERT_EQ(std::memcmp(shifted.data(), batched.data() + s.n, shifted.size() * sizeof(float)),
                0)
          << "m=" << s.m << " n=" << s.n << " k=" << s.k << ": rows moved within their tiles";
    }
    const int threads = omp_get_max_threads();
    for (int t : {1, 3}) {
      omp_set_num_threads(t);
      std::vector<float> again(s.m * s.n);
      matmul_nt(x.data(), w.data(), again.data(), s.m, s.n, s.k);
      omp_set_num_threads(threads);
      ASSERT_EQ(std::memcmp(again.data(), batched.data(), again.size() * sizeof(float)), 0)
          << "m=" << s.m << " n=" << s.n << " k=" << s.k << " on " << t << " thread(s)";
    }
  }
}

TEST(Matmul, OverwritesTheOutputAndReadsOnlyItsOperands) {
  // One row, three columns, k = 9 (one vector and a tail): each output written, nothing beyond.
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<float> w(3 * 9, 0.0f);
  for (int i = 0; i < 9; ++i) {
    w[i] = 1.0f;                   // column 0: the sum, 45
    w[9 + i] = i == 8 ? 2.0f : 0;    // column 1: the tail only, 18
    w[18 + i] = i == 0 ? -1.0f : 0;  // column 2: the first lane only, -1
  }
  std::vector<float> y = {NAN, NAN, NAN, 123.0f};
  matmul_nt(x.data(), w.data(), y.data(), 1, 3, 9);
  EXPECT_EQ(y[0], 45.0f);
  EXPECT_EQ(y[1], 18.0f);
  EXPECT_EQ(y[2], -1.0f);
  EXPECT_EQ(y[3], 123.0f);
}

}  // namespace
}  // namespace shardserve::kernels::cpu
