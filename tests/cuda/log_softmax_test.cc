// logsumexp_rows against a double-precision reference (what kernels/cpu/sampling.cc's
// describe_token computes for a token's logprob) on fresh random rows, the output poisoned;
// padding columns and NaN entries ignored.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace shardserve::kernels::cuda {
namespace {
using namespace shardserve::kernels::cuda::testing;

double reference_lse(const float* row, int64_t vocab) {
  double m = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i)
    if (!std::isnan(row[i])) m = std::max(m, double(row[i]));
  double s = 0;
  for (int64_t i = 0; i < vocab; ++i)
    if (!std::isnan(row[i])) s += std::exp(double(row[i]) - m);
  return m + std::log(s);
}

TEST(CudaLogSoftmax, LogsumexpMatchesDoubleReference) {
  SHARDSERVE_REQUIRE_GPU();
  Stream stream;
  std::mt19937 rng(input_seed());
  for (int64_t vocab : {1, 61, 1000, 32000, 128256}) {
    for (float scale : {1.0f, 30.0f}) {
      const int64_t rows = 7, stride = vocab + 5;
      auto logits = random_floats(rows * stride, rng, scale);
      logits[0 * stride + vocab / 2] = NAN;                 // skipped
      logits[1 * stride + vocab] = 1e30f;                   // padding: ignored
      logits[2 * stride + (vocab - 1)] = 80.0f;             // one dominant entry
      auto d_logits = upload(logits);
      DeviceBuffer d_lse(rows * 4, "lse");
      poison(d_lse);
      logsumexp_rows(d_logits.as<float>(), rows, vocab, stride, d_lse.as<float>(), stream.get());
      stream.synchronize();
      const auto got = download<float>(d_lse, rows);
      for (int64_t r = 0; r < rows; ++r) {
        const double want = reference_lse(logits.data() + r * stride, vocab);
        if (vocab == 1 && r == 0) {
          EXPECT_TRUE(std::isinf(got[r]) && got[r] < 0) << "an all-NaN row has lse -inf";
          continue;
        }
        EXPECT_NEAR(got[r], want, 2e-6 * std::max(1.0, std::fabs(want)) + 1e-5)
            << "row " << r << " vocab " << vocab << " scale " << scale;
      }
    }
  }
}

TEST(CudaLogSoftmax, RefusesBadSizes) {
  SHARDSERVE_REQUIRE_GPU();
  try {
    logsumexp_rows(nullptr, 2, 10, 5, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("logsumexp_rows: bad sizes rows=2 vocab=10 row_stride=5"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shardserve::kernels::cuda
