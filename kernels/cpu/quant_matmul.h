#pragma once
// y = x · Ŵᵀ with Ŵ kept group-wise quantized (4 or 8 bits) and dequantized on the fly: the CPU
// layout a GPTQ or AWQ linear is converted to at load (model/quant converts; this file knows
// only raw buffers). 4-bit codes take an eighth of float32's memory (two codes per byte), plus
// one float scale and zero per output and group.
//
// Layout: input columns in `perm` order (identity unless act-order), so that every group is a
// run of consecutive columns [group_begin[g], group_begin[g + 1]); codes [n, k] packed row by
// row, 4-bit as two codes per byte (low nibble = even column), 8-bit one per byte;
// scales / zeros [n, groups]. Ŵ[j][perm[c]] = scale[j][g] * (code[j][c] - zero[j][g]).
#include <cstdint>
#include <vector>

namespace shardserve::kernels::cpu {

struct QuantMatrix {
  int bits = 4;
  int64_t n = 0;                     // output features
  int64_t k = 0;                     // input features
  std::vector<int32_t> perm;         // [k] input column of each stored column
  std::vector<int64_t> group_begin;  // [groups + 1] stored-column offsets of the groups
  std::vector<uint8_t> codes;        // [n, row_bytes()]
  std::vector<float> scales;         // [n, groups]
  std::vector<float> zeros;          // [n, groups]

  int64_t groups() const { return static_cast<int64_t>(group_begin.size()) - 1; }
  int64_t row_bytes() const { return bits == 4 ? (k + 1) / 2 : k; }
  int64_t bytes() const;  // memory held by the codes, scales, zeros and permutation
};

// Builds the layout from unpacked values: q [n, k] codes (output-major, input columns in their
// own order), zeros / scales [groups, n] (as GPTQ and AWQ store them), g_idx [k] the group of
// each input column. Columns are sorted by group (stably), so any g_idx works (act-order too).
QuantMatrix make_quant_matrix(int bits, int64_t n, int64_t k, const uint8_t* q,
                              const int32_t* zeros, const float* scales, const int32_t* g_idx,
                              int64_t groups);

// x: [m, k] row-major; y: [m, n] (overwritten). Per row of x: the permuted copy and its group
// sums are formed once, then each output is sum_g scale * (codes · x_g - zero * sum(x_g)).
void quant_matmul_nt(const float* x, const QuantMatrix& w, float* y, int64_t m);

// The dense [n, k] weight the kernel computes with (for tests and the twin).
std::vector<float> dequantize(const QuantMatrix& w);

}  // namespace shardserve::kernels::cpu
