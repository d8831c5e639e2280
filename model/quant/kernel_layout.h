#pragma once
// A quantized linear in the layout of the CPU int4/int8 kernel (kernels/cpu/quant_matmul.h).
#include "kernels/cpu/quant_matmul.h"
#include "model/quant/formats.h"

namespace shardserve::quant {

inline kernels::cpu::QuantMatrix to_kernel_layout(const QuantizedLinear& l) {
  l.check();
  return kernels::cpu::make_quant_matrix(l.bits, l.out_features, l.in_features, l.q.data(),
                                         l.zeros.data(), l.scales.data(), l.g_idx.data(),
                                         l.num_groups);
}

}  // namespace shardserve::quant
