#include "model/memory_plan.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace shardserve::model {
namespace {

constexpr int64_t kBf16Bytes = 2;  // embeddings, norms, LM head and quantization scales
constexpr int64_t kInt4PerInt32 = 8;  // GPTQ packs eight 4-bit values into one int32

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
    case Kind::kInt8: return "int8";
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
  constexpr std::string_view kInt4Prefix = "int4-g";
  if (text.starts_with(kInt4Prefix)) {
    const std::string digits(text.substr(kInt4Prefix.size()));
    bool all_digits = !digits.empty() && digits.size() <= 9;
    for (char c : digits) all_digits = all_digits && c >= '0' && c <= '9';
    if (all_digits && std::stoll(digits) > 0) {
      return {WeightFormat::Kind::kInt4, std::stoll(digits)};
    }
  }
  fail("unknown weight format '{}': expected bf16, fp16, int8, int4 or int4-g<group size>", text);
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
    case WeightFormat::Kind::kInt8: return elements + out_features * kBf16Bytes;
    case WeightFormat::Kind::kInt4: {
      const int64_t g = format.group_size;
      require(g > 0, "int4 needs a positive group size, got {}", g);
      require(in_features % g == 0,
              "int4 group size {} does not divide the {} input features of a [{}, {}] linear "
              "shard",
              g, in_features, out_features, in_features);
      require(out_features % kInt4PerInt32 == 0,
              "int4 packs zero points 8 to an int32, but a [{}, {}] linear shard has {} output "
              "features",
              out_features, in_features, out_features);
      const int64_t groups = in_features / g;
      const int64_t qweight = elements / 2;  // int32 [in/8, out]: half a byte per weight
      const int64_t scales = groups * out_features * kBf16Bytes;
      const int64_t qzeros = groups * (out_features / kInt4PerInt32) * 4;
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
