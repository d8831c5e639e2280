#pragma once
// The LLaMA-family architecture as read from a HuggingFace config.json (plus
// generation_config.json when the folder has one). Validated once, in load_model_config:
// every other layer may assume the invariants documented on the fields.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace shardserve::model {

// RoPE frequency scaling. Only the schemes real LLaMA checkpoints use are accepted.
struct RopeScaling {
  enum class Type { kNone, kLlama3, kLinear };
  Type type = Type::kNone;
  double factor = 1.0;                 // kLlama3, kLinear
  double low_freq_factor = 1.0;        // kLlama3
  double high_freq_factor = 4.0;       // kLlama3
  int64_t original_max_position_embeddings = 8192;  // kLlama3
};

// The `quantization_config` of a GPTQ (AutoGPTQ / GPTQModel) or AWQ (AutoAWQ, GEMM layout)
// checkpoint, validated by parse_model_config: every variant not listed here is refused with a
// message naming the field and its value. model/quant reads the tensors it describes.
struct QuantizationConfig {
  enum class Method { kGptq, kAwq };
  Method method = Method::kGptq;
  int bits = 4;                 // gptq: 4 or 8; awq: 4
  int64_t group_size = 128;     // 32, 64, 128, or -1 (one group spanning all input features)
  bool desc_act = false;        // gptq act-order: g_idx is then a permutation-grouped order
  bool sym = true;              // informative: zeros are stored (and used) either way
  // gptq checkpoint_format "gptq" (v1) stores zero - 1 in qzeros; "gptq_v2" and awq store zero.
  bool zero_minus_one = true;
  std::string checkpoint_format;  // "gptq", "gptq_v2" (gptq) or "gemm" (awq version)
  std::vector<std::string> modules_to_not_convert;  // awq: linears kept in float (substrings)
};

struct ModelConfig {
  std::string model_type;     // "llama"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // divides num_attention_heads (GQA group = heads / kv_heads)
  int64_t head_dim = 0;             // hidden_size / num_attention_heads unless config sets it
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;      // refused when true (no LLaMA checkpoint uses it)
  std::string torch_dtype;          // the checkpoint's declared dtype, informative only
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // every id that ends generation (config + generation_config)
  std::optional<QuantizationConfig> quantization;  // set for GPTQ / AWQ checkpoints

  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
  int64_t gqa_group() const { return num_attention_heads / num_key_value_heads; }
};

// Parses and validates a config.json object; `source` names the file in error messages.
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& source);

// Parses and validates a config.json `quantization_config` object.
QuantizationConfig parse_quantization_config(const nlohmann::json& q, const std::string& source);

// Reads <dir>/config.json and, when present, <dir>/generation_config.json (whose eos ids are
// merged into eos_token_ids, as transformers' generate() does).
ModelConfig load_model_config(const std::filesystem::path& model_dir);

}  // namespace shardserve::model
