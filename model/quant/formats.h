#pragma once
// The two published 4/8-bit weight layouts shardserve reads and writes, and one neutral form
// (QuantizedLinear) that the quantizers produce and the writers pack.
//
// GPTQ (AutoGPTQ / GPTQModel, checkpoint_format "gptq" = v1, "gptq_v2"), per linear
// `<name>.{qweight,qzeros,scales,g_idx}`, pack factor pf = 32 / bits:
//   qweight int32 [in / pf, out]: word (r, o) holds input rows r*pf .. r*pf+pf-1 of output o,
//                  row r*pf + j in bits [j*bits, (j+1)*bits) (lowest bits first);
//   qzeros  int32 [groups, out / pf]: word (g, c) holds outputs c*pf + j, lowest bits first;
//                  v1 stores zero - 1 (readers add 1 back), v2 stores the zero itself;
//   scales  fp16  [groups, out];   g_idx int32 [in]: the group of each input row;
//   w[o][i] = scales[g][o] * (q[i][o] - zero[g][o]),  g = g_idx[i].
// AWQ GEMM (AutoAWQ version "gemm"), 4 bits, per linear `<name>.{qweight,qzeros,scales}`:
//   qweight int32 [in, out / 8]: packed along the OUTPUT dimension; nibble j (bits 4j..4j+3)
//                  of word (i, c) holds output c*8 + kAwqOrder[j], kAwqOrder = 0 2 4 6 1 3 5 7;
//   qzeros  int32 [groups, out / 8], the same packing;  scales fp16 [groups, out];
//   w[o][i] = scales[i / group][o] * (q[i][o] - zero[i / group][o]).
#include <array>
#include <cstdint>
#include <vector>

namespace shardserve::quant {

inline constexpr std::array<int, 8> kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};
// kAwqReverse[k] = the nibble that holds output c*8 + k (kAwqOrder[kAwqReverse[k]] == k).
inline constexpr std::array<int, 8> kAwqReverse = {0, 4, 1, 5, 2, 6, 3, 7};

// A quantized linear in nn.Linear orientation ([out, in]), independent of any file layout.
struct QuantizedLinear {
  int bits = 4;
  int64_t out_features = 0;
  int64_t in_features = 0;
  int64_t group_size = 0;       // the real group width (in_features for "-1")
  int64_t num_groups = 0;
  std::vector<uint8_t> q;       // [out, in] codes in [0, 2^bits)
  std::vector<int32_t> zeros;   // [groups, out] zero points in [0, 2^bits)
  std::vector<float> scales;    // [groups, out], each exactly representable in fp16
  std::vector<int32_t> g_idx;   // [in] group of each input feature

  // The dequantized weight, computed as float(scale) * float(q - zero): every reader of a
  // quantized checkpoint in shardserve uses exactly this expression.
  float weight(int64_t o, int64_t i) const {
    const int64_t g = g_idx[i];
    return scales[g * out_features + o] *
           static_cast<float>(static_cast<int32_t>(q[o * in_features + i]) -
                              zeros[g * out_features + o]);
  }
  std::vector<float> dequantize() const;  // [out, in]
  // Allocates codes/zeros/scales and sets g_idx to i / group_size.
  static QuantizedLinear empty(int bits, int64_t out, int64_t in, int64_t group_size);
  void check() const;  // throws unless sizes and value ranges are consistent
  // Output rows [begin, begin + count) as a linear of their own (the quantizers work on fused
  // q/k/v and gate/up; checkpoints store each projection separately).
  QuantizedLinear rows(int64_t begin, int64_t count) const;
};

// --- bit packing, exactly as the published layouts (values must fit in `bits` bits) ---
// values [rows, cols] -> [rows / pf, cols]: pf consecutive rows per word (GPTQ qweight).
std::vector<int32_t> pack_rows(const std::vector<int32_t>& values, int64_t rows, int64_t cols,
                               int bits);
std::vector<int32_t> unpack_rows(const std::vector<int32_t>& words, int64_t rows, int64_t cols,
                                 int bits);
// values [rows, cols] -> [rows, cols / pf]: pf consecutive columns per word (GPTQ qzeros).
std::vector<int32_t> pack_cols(const std::vector<int32_t>& values, int64_t rows, int64_t cols,
                               int bits);
std::vector<int32_t> unpack_cols(const std::vector<int32_t>& words, int64_t rows, int64_t cols,
                                 int bits);
// values [rows, cols] -> [rows, cols / 8] in the AWQ order (AWQ qweight and qzeros).
std::vector<int32_t> pack_awq(const std::vector<int32_t>& values, int64_t rows, int64_t cols);
std::vector<int32_t> unpack_awq(const std::vector<int32_t>& words, int64_t rows, int64_t cols);

// Single elements straight from packed words (what the loader uses to read only a rank's
// slice). `cols` is the unpacked column count.
inline int32_t packed_row_value(const int32_t* words, int64_t cols, int64_t r, int64_t c,
                                int bits) {
  const int pf = 32 / bits;
  const uint32_t w = static_cast<uint32_t>(words[(r / pf) * cols + c]);
  return static_cast<int32_t>((w >> (bits * (r % pf))) & ((1u << bits) - 1));
}
inline int32_t packed_col_value(const int32_t* words, int64_t cols, int64_t r, int64_t c,
                                int bits) {
  const int pf = 32 / bits;
  const uint32_t w = static_cast<uint32_t>(words[r * (cols / pf) + c / pf]);
  return static_cast<int32_t>((w >> (bits * (c % pf))) & ((1u << bits) - 1));
}
inline int32_t packed_awq_value(const int32_t* words, int64_t cols, int64_t r, int64_t c) {
  const uint32_t w = static_cast<uint32_t>(words[r * (cols / 8) + c / 8]);
  return static_cast<int32_t>((w >> (4 * kAwqReverse[c % 8])) & 0xfu);
}

// --- whole linears in each format ---
struct GptqTensors {
  std::vector<int32_t> qweight;   // [in / pf, out]
  std::vector<int32_t> qzeros;    // [groups, out / pf]
  std::vector<uint16_t> scales;   // fp16 bits [groups, out]
  std::vector<int32_t> g_idx;     // [in]
};
struct AwqTensors {
  std::vector<int32_t> qweight;   // [in, out / 8]
  std::vector<int32_t> qzeros;    // [groups, out / 8]
  std::vector<uint16_t> scales;   // fp16 bits [groups, out]
};

// `zero_minus_one`: the v1 convention (stores zero - 1; a zero of 0 cannot be stored and is
// refused: quantizers writing v1 keep zeros >= 1).
GptqTensors to_gptq(const QuantizedLinear& linear, bool zero_minus_one);
// Requires 4 bits and g_idx[i] == i / group_size (AWQ has no g_idx).
AwqTensors to_awq(const QuantizedLinear& linear);

// float -> nearest fp16 (round to nearest even) and back; quantizers round scales with it.
uint16_t fp16_bits(float value);
float round_to_fp16(float value);

}  // namespace shardserve::quant
