#include "kernels/cpu/rms_norm.h"

#include <cmath>

namespace shardserve::kernels::cpu {

void rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
              float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    // Accumulate the mean square in double: the reference computes it in float32 over a
    // different summation order, and double keeps our side's rounding negligible.
    double sum_sq = 0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(sum_sq / dim) + eps);
    for (int64_t i = 0; i < dim; ++i) o[i] = weight[i] * (xr[i] * inv);
  }
}

void add_rms_norm(float* residual, const float* delta, const float* weight, float* out,
                  int64_t rows, int64_t dim, float eps) {
  for (int64_t i = 0; i < rows * dim; ++i) residual[i] += delta[i];
  rms_norm(residual, weight, out, rows, dim, eps);
}

}  // namespace shardserve::kernels::cpu
