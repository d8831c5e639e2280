#include "model/quant/formats.h"

#include <cstring>

#include "common/error.h"
#include "common/half.h"
#include "model/safetensors_writer.h"

namespace shardserve::quant {
namespace {

void check_pack_args(const std::vector<int32_t>& values, int64_t rows, int64_t cols, int bits,
                     const char* what) {
  require(bits == 2 || bits == 4 || bits == 8, "{}: bits {} is not 2, 4 or 8", what, bits);
  require(static_cast<int64_t>(values.size()) == rows * cols, "{}: {} values for [{}, {}]", what,
          values.size(), rows, cols);
  const int32_t max = (1 << bits) - 1;
  for (int32_t v : values) {
    require(v >= 0 && v <= max, "{}: value {} does not fit in {} bits", what, v, bits);
  }
}

}  // namespace

std::vector<float> QuantizedLinear::dequantize() const {
  std::vector<float> w(out_features * in_features);
  for (int64_t o = 0; o < out_features; ++o)
    for (int64_t i = 0; i < in_features; ++i) w[o * in_features + i] = weight(o, i);
  return w;
}

QuantizedLinear QuantizedLinear::empty(int bits, int64_t out, int64_t in, int64_t group_size) {
  require(bits == 4 || bits == 8, "quantized linear: bits {} is not supported (supported: 4, 8)",
          bits);
  require(out > 0 && in > 0, "quantized linear: shape [{}, {}] is empty", out, in);
  QuantizedLinear l;
  l.bits = bits;
  l.out_features = out;
  l.in_features = in;
  l.group_size = group_size <= 0 ? in : group_size;
  require(in % l.group_size == 0,
          "quantized linear: in_features {} is not a multiple of group_size {}", in,
          l.group_size);
  l.num_groups = in / l.group_size;
  l.q.assign(out * in, 0);
  l.zeros.assign(l.num_groups * out, 0);
  l.scales.assign(l.num_groups * out, 0.0f);
  l.g_idx.resize(in);
  for (int64_t i = 0; i < in; ++i) l.g_idx[i] = static_cast<int32_t>(i / l.group_size);
  return l;
}

void QuantizedLinear::check() const {
  const int32_t max = (1 << bits) - 1;
  require(static_cast<int64_t>(q.size()) == out_features * in_features &&
              static_cast<int64_t>(zeros.size()) == num_groups * out_features &&
              static_cast<int64_t>(scales.size()) == num_groups * out_features &&
              static_cast<int64_t>(g_idx.size()) == in_features,
          "quantized linear [{}, {}]: inconsistent sizes", out_features, in_features);
  for (uint8_t v : q) require(v <= max, "quantized linear: code {} exceeds {} bits", v, bits);
  for (int32_t z : zeros) {
    require(z >= 0 && z <= max, "quantized linear: zero {} outside [0, {}]", z, max);
  }
  for (int32_t g : g_idx) {
    require(g >= 0 && g < num_groups, "quantized linear: g_idx {} outside [0, {})", g,
            num_groups);
  }
}

QuantizedLinear QuantizedLinear::rows(int64_t begin, int64_t count) const {
  require(begin >= 0 && count > 0 && begin + count <= out_features,
          "quantized linear: rows [{}, +{}) outside {} rows", begin, count, out_features);
  QuantizedLinear r;
  r.bits = bits;
  r.out_features = count;
  r.in_features = in_features;
  r.group_size = group_size;
  r.num_groups = num_groups;
  r.q.assign(q.begin() + begin * in_features, q.begin() + (begin + count) * in_features);
  r.zeros.resize(num_groups * count);
  r.scales.resize(num_groups * count);
  for (int64_t g = 0; g < num_groups; ++g)
    for (int64_t o = 0; o < count; ++o) {
      r.zeros[g * count + o] = zeros[g * out_features + begin + o];
      r.scales[g * count + o] = scales[g * out_features + begin + o];
    }
  r.g_idx = g_idx;
  return r;
}

std::vector<int32_t> pack_rows(const std::vector<int32_t>& values, int64_t rows, int64_t cols,
                               int bits) {
  check_pack_args(values, rows, cols, bits, "pack_rows");
  const int pf = 32 / bits;
  require(rows % pf == 0, "pack_rows: {} rows is not a multiple of {}", rows, pf);
  std::vector<uint32_t> words((rows / pf) * cols, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      words[(r / pf) * cols + c] |= static_cast<uint32_t>(values[r * cols + c])
                                    << (bits * (r % pf));
  return {words.begin(), words.end()};  // same bits, read as int32 (the files' dtype)
}

std::vector<int32_t> unpack_rows(const std::vector<int32_t>& words, int64_t rows, int64_t cols,
                                 int bits) {
  const int pf = 32 / bits;
  require(rows % pf == 0 && static_cast<int64_t>(words.size()) == rows / pf * cols,
          "unpack_rows: {} words for [{}, {}] at {} bits", words.size(), rows, cols, bits);
  std::vector<int32_t> values(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      values[r * cols + c] = packed_row_value(words.data(), cols, r, c, bits);
  return values;
}

std::vector<int32_t> pack_cols(const std::vector<int32_t>& values, int64_t rows, int64_t cols,
                               int bits) {
  check_pack_args(values, rows, cols, bits, "pack_cols");
  const int pf = 32 / bits;
  require(cols % pf == 0, "pack_cols: {} columns is not a multiple of {}", cols, pf);
  std::vector<uint32_t> words(rows * (cols / pf), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      words[r * (cols / pf) + c / pf] |= static_cast<uint32_t>(values[r * cols + c])
                                         << (bits * (c % pf));
  return {words.begin(), words.end()};
}

std::vector<int32_t> unpack_cols(const std::vector<int32_t>& words, int64_t rows, int64_t cols,
                                 int bits) {
  const int pf = 32 / bits;
  require(cols % pf == 0 && static_cast<int64_t>(words.size()) == rows * (cols / pf),
          "unpack_cols: {} words for [{}, {}] at {} bits", words.size(), rows, cols, bits);
  std::vector<int32_t> values(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      values[r * cols + c] = packed_col_value(words.data(), cols, r, c, bits);
  return values;
}

std::vector<int32_t> pack_awq(const std::vector<int32_t>& values, int64_t rows, int64_t cols) {
  check_pack_args(values, rows, cols, 4, "pack_awq");
  require(cols % 8 == 0, "pack_awq: {} columns is not a multiple of 8", cols);
  std::vector<uint32_t> words(rows * (cols / 8), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c8 = 0; c8 < cols / 8; ++c8)
      for (int j = 0; j < 8; ++j)
        words[r * (cols / 8) + c8] |=
            static_cast<uint32_t>(values[r * cols + c8 * 8 + kAwqOrder[j]]) << (4 * j);
  return {words.begin(), words.end()};
}

std::vector<int32_t> unpack_awq(const std::vector<int32_t>& words, int64_t rows, int64_t cols) {
  require(cols % 8 == 0 && static_cast<int64_t>(words.size()) == rows * (cols / 8),
          "unpack_awq: {} words for [{}, {}]", words.size(), rows, cols);
  std::vector<int32_t> values(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) values[r * cols + c] = packed_awq_value(words.data(), cols, r, c);
  return values;
}

namespace {

// codes [out, in] -> [in, out] as int32 (both formats index codes by input row first).
std::vector<int32_t> codes_in_major(const QuantizedLinear& l) {
  std::vector<int32_t> t(l.in_features * l.out_features);
  for (int64_t o = 0; o < l.out_features; ++o)
    for (int64_t i = 0; i < l.in_features; ++i)
      t[i * l.out_features + o] = l.q[o * l.in_features + i];
  return t;
}

std::vector<uint16_t> scales_fp16(const QuantizedLinear& l) {
  std::vector<uint16_t> s(l.scales.size());
  for (std::size_t k = 0; k < s.size(); ++k) {
    s[k] = fp16_bits(l.scales[k]);
    require(fp16_to_float(s[k]) == l.scales[k],
            "quantized linear: scale {} is not representable in fp16", l.scales[k]);
  }
  return s;
}

}  // namespace

GptqTensors to_gptq(const QuantizedLinear& l, bool zero_minus_one) {
  l.check();
  GptqTensors t;
  t.qweight = pack_rows(codes_in_major(l), l.in_features, l.out_features, l.bits);
  std::vector<int32_t> z = l.zeros;
  if (zero_minus_one) {
    for (int32_t& v : z) {
      require(v >= 1, "gptq v1 (checkpoint_format gptq) cannot store a zero point of 0");
      --v;
    }
  }
  t.qzeros = pack_cols(z, l.num_groups, l.out_features, l.bits);
  t.scales = scales_fp16(l);
  t.g_idx = l.g_idx;
  return t;
}

AwqTensors to_awq(const QuantizedLinear& l) {
  l.check();
  require(l.bits == 4, "awq gemm stores 4-bit weights, not {}", l.bits);
  for (int64_t i = 0; i < l.in_features; ++i) {
    require(l.g_idx[i] == i / l.group_size,
            "awq gemm has no g_idx: input {} must be in group {}, not {}", i, i / l.group_size,
            l.g_idx[i]);
  }
  AwqTensors t;
  t.qweight = pack_awq(codes_in_major(l), l.in_features, l.out_features);
  t.qzeros = pack_awq(l.zeros, l.num_groups, l.out_features);
  t.scales = scales_fp16(l);
  return t;
}

uint16_t fp16_bits(float value) {
  const model::TensorData t = model::make_tensor(model::DType::kF16, {1}, {value});
  uint16_t h;
  std::memcpy(&h, t.bytes.data(), 2);
  return h;
}

float round_to_fp16(float value) { return fp16_to_float(fp16_bits(value)); }

}  // namespace shardserve::quant
