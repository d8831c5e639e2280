#include "model/quant/quantized_checkpoint.h"

#include <cstring>

#include "common/error.h"
#include "common/half.h"

namespace shardserve::quant {
namespace {

using model::DType;
using model::QuantizationConfig;
using model::TensorView;

const char* method_name(QuantizationConfig::Method m) {
  return m == QuantizationConfig::Method::kGptq ? "gptq" : "awq";
}

// Tensor data need not be 4-byte aligned inside a safetensors file: read words with memcpy.
uint32_t word(const TensorView& t, int64_t index) {
  uint32_t w;
  std::memcpy(&w, t.data.data() + index * 4, 4);
  return w;
}

float float_element(const TensorView& t, int64_t index) {
  uint16_t h;
  switch (t.dtype) {
    case DType::kF16:
      std::memcpy(&h, t.data.data() + index * 2, 2);
      return fp16_to_float(h);
    case DType::kBF16:
      std::memcpy(&h, t.data.data() + index * 2, 2);
      return bf16_to_float(h);
    default: {
      float f;
      std::memcpy(&f, t.data.data() + index * 4, 4);
      return f;
    }
  }
}

}  // namespace

bool is_quantized_linear(const model::Checkpoint& ckpt, const QuantizationConfig& config,
                         const std::string& prefix) {
  for (const auto& skip : config.modules_to_not_convert) {
    if (!skip.empty() && prefix.find(skip) != std::string::npos) return false;
  }
  return ckpt.contains(prefix + ".qweight") || !ckpt.contains(prefix + ".weight");
}

QuantizedLinearView::QuantizedLinearView(const model::Checkpoint& ckpt,
                                         const QuantizationConfig& config,
                                         const std::string& prefix, int64_t out, int64_t in)
    : method_(config.method),
      bits_(config.bits),
      zero_minus_one_(config.method == QuantizationConfig::Method::kGptq && config.zero_minus_one),
      out_(out),
      in_(in) {
  const bool gptq = method_ == QuantizationConfig::Method::kGptq;
  const char* method = method_name(method_);
  const std::string where = ckpt.source().string();
  const char* needs = gptq ? "gptq needs qweight, qzeros, scales and g_idx"
                           : "awq needs qweight, qzeros and scales";
  for (const char* part : {"qweight", "qzeros", "scales"}) {
    require(ckpt.contains(prefix + "." + part), "{}: quantized linear '{}' has no {} ({})", where,
            prefix, part, needs);
  }
  qweight_ = &ckpt.tensor(prefix + ".qweight");
  qzeros_ = &ckpt.tensor(prefix + ".qzeros");
  scales_ = &ckpt.tensor(prefix + ".scales");
  for (const TensorView* t : {qweight_, qzeros_}) {
    require(t->dtype == DType::kI32, "{}: tensor '{}' has dtype {}; {} packs it in I32", t->file,
            t->name, model::dtype_name(t->dtype), method);
  }
  require(scales_->dtype == DType::kF16 || scales_->dtype == DType::kBF16 ||
              scales_->dtype == DType::kF32,
          "{}: tensor '{}' has dtype {}; scales must be F16 (or BF16, F32)", scales_->file,
          scales_->name, model::dtype_name(scales_->dtype));
  group_size_ = config.group_size == -1 ? in : config.group_size;
  const int pf = 32 / bits_;
  if (gptq) {
    require(in % pf == 0 && out % pf == 0,
            "{}: quantized linear '{}' [{}, {}]: gptq {}-bit needs both dimensions to be "
            "multiples of {}",
            where, prefix, out, in, bits_, pf);
    groups_ = (in + group_size_ - 1) / group_size_;  // AutoGPTQ rounds up
    qweight_->expect_shape({in / pf, out});
    qzeros_->expect_shape({groups_, out / pf});
  } else {
    require(in % group_size_ == 0 && out % 8 == 0,
            "{}: quantized linear '{}' [{}, {}]: awq needs in_features to be a multiple of the "
            "group size {} and out_features a multiple of 8",
            where, prefix, out, in, group_size_);
    groups_ = in / group_size_;
    qweight_->expect_shape({in, out / 8});
    qzeros_->expect_shape({groups_, out / 8});
  }
  scales_->expect_shape({groups_, out});
  g_idx_.resize(in);
  if (gptq && ckpt.contains(prefix + ".g_idx")) {
    const TensorView& g = ckpt.tensor(prefix + ".g_idx");
    require(g.dtype == DType::kI32, "{}: tensor '{}' has dtype {}; g_idx must be I32", g.file,
            g.name, model::dtype_name(g.dtype));
    g.expect_shape({in});
    for (int64_t i = 0; i < in; ++i) {
      g_idx_[i] = static_cast<int32_t>(word(g, i));
      require(g_idx_[i] >= 0 && g_idx_[i] < groups_,
              "{}: tensor '{}' maps input {} to group {}, outside [0, {})", g.file, g.name, i,
              g_idx_[i], groups_);
    }
  } else {
    // AWQ has no g_idx; old GPTQ checkpoints without act-order may omit it.
    require(!(gptq && config.desc_act),
            "{}: quantized linear '{}' has no g_idx but quantization_config.desc_act is true",
            where, prefix);
    for (int64_t i = 0; i < in; ++i) g_idx_[i] = static_cast<int32_t>(i / group_size_);
  }
}

int32_t QuantizedLinearView::code(int64_t o, int64_t i) const {
  if (method_ == QuantizationConfig::Method::kGptq) {
    const int pf = 32 / bits_;
    return static_cast<int32_t>((word(*qweight_, (i / pf) * out_ + o) >> (bits_ * (i % pf))) &
                                ((1u << bits_) - 1));
  }
  return static_cast<int32_t>((word(*qweight_, i * (out_ / 8) + o / 8) >> (4 * kAwqReverse[o % 8])) &
                              0xfu);
}

int32_t QuantizedLinearView::zero(int64_t g, int64_t o) const {
  if (method_ == QuantizationConfig::Method::kGptq) {
    const int pf = 32 / bits_;
    const auto stored = static_cast<int32_t>(
        (word(*qzeros_, g * (out_ / pf) + o / pf) >> (bits_ * (o % pf))) & ((1u << bits_) - 1));
    return zero_minus_one_ ? stored + 1 : stored;
  }
  return static_cast<int32_t>((word(*qzeros_, g * (out_ / 8) + o / 8) >> (4 * kAwqReverse[o % 8])) &
                              0xfu);
}

float QuantizedLinearView::scale(int64_t g, int64_t o) const {
  return float_element(*scales_, g * out_ + o);
}

float QuantizedLinearView::weight(int64_t o, int64_t i) const {
  const int64_t g = g_idx_[i];
  return scale(g, o) * static_cast<float>(code(o, i) - zero(g, o));
}

void QuantizedLinearView::append_block(int64_t row_begin, int64_t rows, int64_t col_begin,
                                       int64_t cols, std::vector<float>& out) const {
  require(row_begin >= 0 && rows >= 0 && row_begin + rows <= out_ && col_begin >= 0 && cols >= 0 &&
              col_begin + cols <= in_,
          "quantized linear: block rows [{}, +{}) cols [{}, +{}) outside [{}, {}]", row_begin,
          rows, col_begin, cols, out_, in_);
  out.reserve(out.size() + rows * cols);
  for (int64_t o = row_begin; o < row_begin + rows; ++o) {
    for (int64_t i = col_begin; i < col_begin + cols; ++i) out.push_back(weight(o, i));
  }
}

QuantizedLinear QuantizedLinearView::read() const {
  QuantizedLinear l;
  l.bits = bits_;
  l.out_features = out_;
  l.in_features = in_;
  l.group_size = group_size_;
  l.num_groups = groups_;
  l.q.resize(out_ * in_);
  for (int64_t o = 0; o < out_; ++o)
    for (int64_t i = 0; i < in_; ++i) l.q[o * in_ + i] = static_cast<uint8_t>(code(o, i));
  l.zeros.resize(groups_ * out_);
  l.scales.resize(groups_ * out_);
  for (int64_t g = 0; g < groups_; ++g)
    for (int64_t o = 0; o < out_; ++o) {
      l.zeros[g * out_ + o] = zero(g, o);
      l.scales[g * out_ + o] = scale(g, o);
    }
  l.g_idx = g_idx_;
  return l;
}

}  // namespace shardserve::quant
