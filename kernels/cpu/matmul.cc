#include "kernels/cpu/matmul.h"

namespace shardserve::kernels::cpu {
namespace {

// Four weight rows per pass: each x row is loaded once per four outputs, and the four
// independent accumulators keep the FMA units busy. `omp simd` lets the compiler vectorise the
// reductions (it fixes one summation order, so the result is still deterministic).
void dot4(const float* x, const float* w0, const float* w1, const float* w2, const float* w3,
          int64_t k, float* out) {
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
  for (int64_t i = 0; i < k; ++i) {
    a0 += x[i] * w0[i];
    a1 += x[i] * w1[i];
    a2 += x[i] * w2[i];
    a3 += x[i] * w3[i];
  }
  out[0] = a0;
  out[1] = a1;
  out[2] = a2;
  out[3] = a3;
}

float dot1(const float* x, const float* w, int64_t k) {
  float a = 0;
#pragma omp simd reduction(+ : a)
  for (int64_t i = 0; i < k; ++i) a += x[i] * w[i];
  return a;
}

}  // namespace

void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k) {
  const int64_t n4 = n / 4 * 4;
#pragma omp parallel for schedule(static) if (m * n * k > (1 << 18))
  for (int64_t j = 0; j < n4; j += 4) {
    const float* w0 = w + j * k;
    for (int64_t r = 0; r < m; ++r) {
      float out[4];
      dot4(x + r * k, w0, w0 + k, w0 + 2 * k, w0 + 3 * k, k, out);
      for (int c = 0; c < 4; ++c) y[r * n + j + c] = out[c];
    }
  }
  for (int64_t j = n4; j < n; ++j) {
    for (int64_t r = 0; r < m; ++r) y[r * n + j] = dot1(x + r * k, w + j * k, k);
  }
}

}  // namespace shardserve::kernels::cpu
