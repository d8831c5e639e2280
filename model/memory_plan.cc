#include "model/memory_plan.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace shardserve::model {
namespace {

constexpr int64_t kBf16Bytes = 2;  // embeddings, norms, LM head and quantization scales

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void require_layout(const KvLayout& layout) {
  require(layout.num_layers > 0 && layout.kv_heads_per_rank > 0 && layout.head_dim > 0 &&
              layout.dtype_bytes > 0 && layout.block_size > 0,
          "KV layout needs positive sizes, got layers {} kv_heads_per_rank {} head_dim {} "
          "dtype_bytes {} block_size {}",
          layout.num_layers, layout.kv_heads_per_rank, layout.head_dim, layout.dtype_bytes,
          layout.block_size);
}

}  // namespace

std::string WeightFormat::name() const {
  switch (kind) {
    case Kind::kBf16: return "bf16";
    case Kind::kFp16: return "fp16";
    case Kind::kInt8: return group_size == 0 ? "int8" : "int8-g" + std::to_string(group_size);
    case Kind::kInt4: return "int4-g" + std::to_string(group_size);
  }
  return "?";
}

WeightFormat parse_weight_format(std::string_view text) {
  if (text == "bf16") return {WeightFormat::Kind::kBf16, 0};
  if (text == "fp16") return {WeightFormat::Kind::kFp16, 0};
  if (text == "int8") return {WeightFormat::Kind::kInt8, 0};
  // 128 is the group size nearly every published GPTQ/AWQ LLaMA checkpoint uses.
  if (text == "int4") return {WeightFormat::Kind::kInt4, 128};
  for (auto [prefix, kind] : {std::pair{std::string_view("int4-g"), WeightFormat::Kind::kInt4},
                              std::pair{std::string_view("int8-g"), WeightFormat::Kind::kInt8}}) {
    if (!text.starts_with(prefix)) continue;
    const std::string digits(text.substr(prefix.size()));
    if (digits == "-1") return {kind, -1};
    bool all_digits = !digits.empty() && digits.size() <= 9;
    for (char c : digits) all_digits = all_digits && c >= '0' && c <= '9';
    if (all_digits && std::stoll(digits) > 0) return {kind, std::stoll(digits)};
  }
  fail("unknown weight format '{}': expected bf16, fp16, int8, int4 or int<4|8>-g<group size>",
       text);
}

WeightFormat weight_format_of(const QuantizationConfig& quantization) {
  require(quantization.bits == 4 || quantization.bits == 8,
          "quantization_config bits {} has no weight format (supported: 4, 8)",
          quantization.bits);
  require(quantization.group_size > 0 || quantization.group_size == -1,
          "quantization_config group_size {} has no weight format (a width or -1)",
          quantization.group_size);
  return {quantization.bits == 4 ? WeightFormat::Kind::kInt4 : WeightFormat::Kind::kInt8,
          quantization.group_size};
}

KvDtype parse_kv_dtype(std::string_view text) {
  if (text == "bf16") return KvDtype::kBf16;
  if (text == "fp16") return KvDtype::kFp16;
  if (text == "fp32") return KvDtype::kFp32;
  if (text == "fp8") return KvDtype::kFp8;
  fail("unknown KV dtype '{}': expected bf16, fp16, fp32 or fp8", text);
}

int64_t kv_dtype_bytes(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kBf16:
    case KvDtype::kFp16: return 2;
    case KvDtype::kFp32: return 4;
    case KvDtype::kFp8: return 1;
  }
  fail("invalid KvDtype value {}", static_cast<int>(dtype));
}

std::string_view kv_dtype_name(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kBf16: return "bf16";
    case KvDtype::kFp16: return "fp16";
    case KvDtype::kFp32: return "fp32";
    case KvDtype::kFp8: return "fp8";
  }
  return "?";
}

HeadLayout shard_heads(const ModelConfig& config, int64_t tp) {
  require(tp >= 1, "tensor-parallel size must be at least 1, got {}", tp);
  const int64_t heads = config.num_attention_heads;
  const int64_t kv_heads = config.num_key_value_heads;
  require(heads > 0 && kv_heads > 0, "model needs positive head counts, got {} heads, {} KV heads",
          heads, kv_heads);
  require(heads % tp == 0, "tensor-parallel size {} does not divide num_attention_heads {}", tp,
          heads);
  if (tp <= kv_heads) {
    require(kv_heads % tp == 0, "tensor-parallel size {} does not divide num_key_value_heads {}",
            tp, kv_heads);
  } else {
    require(tp % kv_heads == 0,
            "tensor-parallel size {} exceeds num_key_value_heads {} but is not a multiple of it "
            "(each KV head must be replicated on the same number of ranks)",
            tp, kv_heads);
  }
  require(config.intermediate_size % tp == 0,
          "tensor-parallel size {} does not divide intermediate_size {}", tp,
          config.intermediate_size);
  HeadLayout layout;
  layout.q_heads_per_rank = heads / tp;
  layout.kv_heads_per_rank = std::max<int64_t>(1, kv_heads / tp);
  layout.kv_replicas = std::max<int64_t>(1, tp / kv_heads);
  return layout;
}

int64_t linear_weight_bytes(int64_t out_features, int64_t in_features, const WeightFormat& format) {
  require(out_features > 0 && in_features > 0, "linear layer needs positive sizes, got [{}, {}]",
          out_features, in_features);
  const int64_t elements = out_features * in_features;
  switch (format.kind) {
    case WeightFormat::Kind::kBf16:
    case WeightFormat::Kind::kFp16: return elements * 2;
    case WeightFormat::Kind::kInt8:
      if (format.group_size == 0) return elements + out_features * kBf16Bytes;
      [[fallthrough]];  // group-wise int8 is GPTQ's layout, like int4
    case WeightFormat::Kind::kInt4: {
      const int64_t bits = format.kind == WeightFormat::Kind::kInt4 ? 4 : 8;
      const int64_t per_int32 = 32 / bits;
      const int64_t g = format.group_size;
      require(g > 0 || g == -1, "{} needs a positive group size or -1, got {}", format.name(), g);
      require(g == -1 || in_features % g == 0,
              "{} group size {} does not divide the {} input features of a [{}, {}] linear "
              "shard",
              format.name(), g, in_features, out_features, in_features);
      require(in_features % per_int32 == 0 && out_features % per_int32 == 0,
              "{} packs {} values to an int32, which a [{}, {}] linear shard does not split into",
              format.name(), per_int32, out_features, in_features);
      const int64_t groups = g == -1 ? 1 : in_features / g;
      const int64_t qweight = (in_features / per_int32) * out_features * 4;
      const int64_t scales = groups * out_features * kBf16Bytes;
      const int64_t qzeros = groups * (out_features / per_int32) * 4;
      return qweight + scales + qzeros;
    }
  }
  fail("invalid WeightFormat kind {}", static_cast<int>(format.kind));
}

RankWeights rank_weights(const ModelConfig& config, int64_t tp, const WeightFormat& format) {
  const HeadLayout heads = shard_heads(config, tp);
  require(config.hidden_size > 0 && config.vocab_size > 0 && config.num_hidden_layers > 0 &&
              config.head_dim > 0,
          "model needs positive sizes, got hidden {} vocab {} layers {} head_dim {}",
          config.hidden_size, config.vocab_size, config.num_hidden_layers, config.head_dim);
  const int64_t hidden = config.hidden_size;
  const int64_t q_out = heads.q_heads_per_rank * config.head_dim;
  const int64_t kv_out = heads.kv_heads_per_rank * config.head_dim;
  const int64_t mlp = config.intermediate_size / tp;

  struct Shape {
    int64_t out, in;
  };
  const Shape shapes[] = {
      {q_out, hidden},  {kv_out, hidden}, {kv_out, hidden},  // q, k, v: column-parallel
      {hidden, q_out},                                       // o: row-parallel
      {mlp, hidden},    {mlp, hidden},                       // gate, up: column-parallel
      {hidden, mlp},                                         // down: row-parallel
  };
  int64_t layer_bytes = 0;
  int64_t layer_params = 0;
  for (const Shape& s : shapes) {
    layer_bytes += linear_weight_bytes(s.out, s.in, format);
    layer_params += s.out * s.in;
  }

  // Vocab-parallel: each rank holds ceil(vocab / tp) rows (the last shard padded), as the
  // worker allocates them.
  const int64_t vocab_rows = ceil_div(config.vocab_size, tp);
  const int64_t table_bytes = vocab_rows * hidden * kBf16Bytes;

  RankWeights w;
  w.tied_embeddings = config.tie_word_embeddings;
  w.embedding_bytes = table_bytes;
  w.lm_head_bytes = config.tie_word_embeddings ? 0 : table_bytes;
  w.layer_linear_bytes = layer_bytes * config.num_hidden_layers;
  w.layer_linear_params = layer_params * config.num_hidden_layers;
  // Two RMSNorms per layer (input, post-attention) and the final norm.
  w.norm_bytes = (2 * config.num_hidden_layers + 1) * hidden * kBf16Bytes;
  w.lm_head_params = vocab_rows * hidden;
  return w;
}

KvLayout kv_layout(const ModelConfig& config, int64_t tp, KvDtype dtype, int64_t block_size) {
  require(block_size > 0, "KV block size must be positive, got {}", block_size);
  KvLayout layout;
  layout.num_layers = config.num_hidden_layers;
  layout.kv_heads_per_rank = shard_heads(config, tp).kv_heads_per_rank;
  layout.head_dim = config.head_dim;
  layout.dtype_bytes = kv_dtype_bytes(dtype);
  layout.block_size = block_size;
  require_layout(layout);
  return layout;
}

int64_t kv_bytes_per_token(const KvLayout& layout) {
  require_layout(layout);
  return 2 * layout.num_layers * layout.kv_heads_per_rank * layout.head_dim * layout.dtype_bytes;
}

int64_t kv_bytes_per_block(const KvLayout& layout) {
  return layout.block_size * kv_bytes_per_token(layout);
}

int64_t kv_pool_bytes(int64_t free_bytes, double fraction) {
  require(free_bytes >= 0, "free device memory must not be negative, got {} bytes", free_bytes);
  require(fraction > 0.0 && fraction <= 1.0, "KV memory fraction must be in (0, 1], got {}",
          fraction);
  // free_bytes < 2^53 on any device, so the product is exact enough to floor.
  return static_cast<int64_t>(std::floor(static_cast<double>(free_bytes) * fraction));
}

int64_t kv_blocks_that_fit(int64_t available_bytes, const KvLayout& layout) {
  require(available_bytes >= 0, "memory available for the KV cache must not be negative, got {}",
          available_bytes);
  return available_bytes / kv_bytes_per_block(layout);
}

int64_t kv_blocks_for_tokens(int64_t tokens, const KvLayout& layout) {
  require_layout(layout);
  require(tokens >= 0, "token count must not be negative, got {}", tokens);
  return ceil_div(tokens, layout.block_size);
}

}  // namespace shardserve::model
