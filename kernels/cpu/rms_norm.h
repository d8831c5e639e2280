#pragma once
#include <cstdint>

namespace shardserve::kernels::cpu {

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight, per row, as LlamaRMSNorm does in float32.
// x, out: [rows, dim] (may alias); weight: [dim].
void rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
              float eps);

// The pre-norm residual stream fused: residual += delta; out = rms_norm(residual).
// residual, delta, out: [rows, dim]; weight: [dim].
void add_rms_norm(float* residual, const float* delta, const float* weight, float* out,
                  int64_t rows, int64_t dim, float eps);

}  // namespace shardserve::kernels::cpu
