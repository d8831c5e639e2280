#pragma once
#include <cstdint>

namespace shardserve::kernels::cpu {

// SwiGLU's elementwise half: out = silu(gate) * up, silu(x) = x * sigmoid(x).
// gate_up: [rows, 2 * width] with gate in the first `width` columns and up in the second
// (the worker fuses both projections into one matmul); out: [rows, width].
void silu_mul(const float* gate_up, float* out, int64_t rows, int64_t width);

}  // namespace shardserve::kernels::cpu
