#pragma once
// y = x · Wᵀ in float32, the layout every projection of the model uses: weights stored as
// PyTorch stores nn.Linear, [out_features, in_features], row-major.
#include <cstdint>

namespace shardserve::kernels::cpu {

// x: [m, k] row-major; w: [n, k] row-major; y: [m, n] row-major (overwritten).
// Each y element is one dot product in an order fixed in the code, so its bits do not depend on
// the thread count, on m (a row alone or batched), or on the machine (matmul.cc says how).
void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k);

}  // namespace shardserve::kernels::cpu
