#pragma once
// Reading the quantized linears of a GPTQ / AWQ checkpoint (layouts in model/quant/formats.h):
// the tensors are validated (presence, dtype, shape, g_idx range) when a linear is opened, and
// elements are then read straight from the memory-mapped packed words, so a tensor-parallel
// rank dequantizes only its own rows and columns.
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/quant/formats.h"
#include "model/safetensors.h"

namespace shardserve::quant {

// True when `prefix` (e.g. "model.layers.0.self_attn.q_proj") is stored quantized: it has a
// qweight, or it has no plain weight (so that opening it reports what is missing). A linear
// named in AWQ's modules_to_not_convert is always read as a plain weight.
bool is_quantized_linear(const model::Checkpoint& checkpoint,
                         const model::QuantizationConfig& config, const std::string& prefix);

class QuantizedLinearView {
 public:
  // Throws an Error naming the file, the tensor and the expectation when a tensor is missing
  // (e.g. "has qweight but no qzeros"), has the wrong dtype or shape, or g_idx is out of range.
  QuantizedLinearView(const model::Checkpoint& checkpoint,
                      const model::QuantizationConfig& config, const std::string& prefix,
                      int64_t out_features, int64_t in_features);

  // The dequantized weight w[o][i] = float(scale) * float(q - zero) (QuantizedLinear::weight).
  float weight(int64_t o, int64_t i) const;
  int32_t code(int64_t o, int64_t i) const;
  int32_t zero(int64_t group, int64_t o) const;
  float scale(int64_t group, int64_t o) const;
  int32_t group_of(int64_t i) const { return g_idx_[i]; }

  // Appends rows [row_begin, +rows) (output features) x columns [col_begin, +cols) (input
  // features) of the dequantized [out, in] weight to `out`, row-major, as float32.
  void append_block(int64_t row_begin, int64_t rows, int64_t col_begin, int64_t cols,
                    std::vector<float>& out) const;
  QuantizedLinear read() const;  // the whole linear in neutral form

  int bits() const { return bits_; }
  int64_t group_size() const { return group_size_; }
  int64_t num_groups() const { return groups_; }

 private:
  model::QuantizationConfig::Method method_;
  int bits_;
  bool zero_minus_one_;
  int64_t out_, in_, group_size_, groups_;
  const model::TensorView* qweight_ = nullptr;
  const model::TensorView* qzeros_ = nullptr;
  const model::TensorView* scales_ = nullptr;
  std::vector<int32_t> g_idx_;
};

}  // namespace shardserve::quant
