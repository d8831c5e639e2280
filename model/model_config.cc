#include "model/model_config.h"

#include <cctype>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace shardserve::model {
namespace {

using nlohmann::json;

// Reads an optional integer field; a present field of another type is an error.
int64_t get_int(const json& j, const char* key, const std::string& source, int64_t fallback,
                bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    require(!required, "{}: required field '{}' is missing", source, key);
    return fallback;
  }
  require(it->is_number_integer(), "{}: field '{}' must be an integer, got {}", source, key,
          it->dump());
  return it->get<int64_t>();
}

double get_number(const json& j, const char* key, const std::string& source, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  require(it->is_number(), "{}: field '{}' must be a number, got {}", source, key, it->dump());
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, const std::string& source, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  require(it->is_boolean(), "{}: field '{}' must be true or false, got {}", source, key,
          it->dump());
  return it->get<bool>();
}

std::string get_string(const json& j, const char* key, const std::string& where,
                       const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  require(it->is_string(), "{}.{} must be a string, got {}", where, key, it->dump());
  return it->get<std::string>();
}

std::vector<int32_t> get_token_ids(const json& j, const char* key, const std::string& source) {
  std::vector<int32_t> ids;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ids;
  auto add = [&](const json& v) {
    require(v.is_number_integer() && v.get<int64_t>() >= 0 &&
                v.get<int64_t>() <= std::numeric_limits<int32_t>::max(),
            "{}: field '{}' must hold token ids in [0, 2^31), got {}", source, key, v.dump());
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  };
  if (it->is_array()) {
    for (const auto& v : *it) add(v);
  } else {
    add(*it);
  }
  return ids;
}

// transformers < 5 writes `rope_theta` and `rope_scaling`; transformers 5 writes one
// `rope_parameters` object holding both. Either is accepted; the first found wins.
void parse_rope(const json& config, const std::string& source, ModelConfig& out) {
  json scaling;
  if (auto it = config.find("rope_parameters"); it != config.end() && it->is_object()) {
    scaling = *it;
    out.rope_theta = get_number(scaling, "rope_theta", source + " rope_parameters",
                                get_number(config, "rope_theta", source, 10000.0));
  } else {
    out.rope_theta = get_number(config, "rope_theta", source, 10000.0);
    if (auto s = config.find("rope_scaling"); s != config.end() && !s->is_null()) {
      require(s->is_object(), "{}: 'rope_scaling' must be an object, got {}", source, s->dump());
      scaling = *s;
    }
  }
  require(out.rope_theta > 0, "{}: rope_theta must be positive, got {}", source, out.rope_theta);
  if (scaling.is_null()) return;
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto t = scaling.find(key); t != scaling.end()) {
      require(t->is_string(), "{}: rope scaling '{}' must be a string", source, key);
      type = t->get<std::string>();
      break;
    }
  }
  const std::string where = source + " rope scaling";
  if (type == "default") return;
  if (type == "llama3") {
    out.rope_scaling.type = RopeScaling::Type::kLlama3;
    out.rope_scaling.factor = get_number(scaling, "factor", where, 8.0);
    out.rope_scaling.low_freq_factor = get_number(scaling, "low_freq_factor", where, 1.0);
    out.rope_scaling.high_freq_factor = get_number(scaling, "high_freq_factor", where, 4.0);
    out.rope_scaling.original_max_position_embeddings =
        get_int(scaling, "original_max_position_embeddings", where, 8192, true);
    require(out.rope_scaling.factor > 0 &&
                out.rope_scaling.high_freq_factor > out.rope_scaling.low_freq_factor &&
                out.rope_scaling.low_freq_factor > 0 &&
                out.rope_scaling.original_max_position_embeddings > 0,
            "{}: llama3 scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0 "
            "(got factor {}, low {}, high {})",
            where, out.rope_scaling.factor, out.rope_scaling.low_freq_factor,
            out.rope_scaling.high_freq_factor);
    return;
  }
  if (type == "linear") {
    out.rope_scaling.type = RopeScaling::Type::kLinear;
    out.rope_scaling.factor = get_number(scaling, "factor", where, 1.0);
    require(out.rope_scaling.factor > 0, "{}: linear factor must be positive", where);
    return;
  }
  fail("{}: rope_type '{}' is not supported (supported: default, llama3, linear)", where, type);
}

// The first of `keys` present (AutoAWQ's own files spell bits / group_size w_bit / q_group_size).
const char* first_key(const json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    if (auto it = j.find(k); it != j.end() && !it->is_null()) return k;
  }
  return *keys.begin();
}

}  // namespace

QuantizationConfig parse_quantization_config(const json& q, const std::string& source) {
  const std::string where = source + ": quantization_config";
  require(q.is_object(), "{} must be an object, got {}", where, q.dump());
  QuantizationConfig out;
  const std::string method = get_string(q, "quant_method", where, "");
  require(!method.empty(), "{}.quant_method is missing (supported: gptq, awq)", where);
  const char* bits_key = first_key(q, {"bits", "w_bit"});
  const char* group_key = first_key(q, {"group_size", "q_group_size"});
  const int64_t bits = get_int(q, bits_key, where, 0, true);
  out.group_size = get_int(q, group_key, where, 0, true);
  require(out.group_size == -1 || out.group_size == 32 || out.group_size == 64 ||
              out.group_size == 128,
          "{}.{} {} is not supported (supported: 32, 64, 128, -1)", where, group_key,
          out.group_size);
  if (method == "gptq") {
    out.method = QuantizationConfig::Method::kGptq;
    require(bits == 4 || bits == 8, "{}.{} {} is not supported for gptq (supported: 4, 8)", where,
            bits_key, bits);
    out.desc_act = get_bool(q, "desc_act", where, false);
    out.sym = get_bool(q, "sym", where, true);
    // AutoGPTQ and older GPTQModel write checkpoint_format, newer GPTQModel writes format.
    const char* format_key = first_key(q, {"checkpoint_format", "format"});
    out.checkpoint_format = get_string(q, format_key, where, "gptq");
    require(out.checkpoint_format == "gptq" || out.checkpoint_format == "gptq_v2",
            "{}.{} '{}' is not supported (supported: gptq, gptq_v2)", where, format_key,
            out.checkpoint_format);
    out.zero_minus_one = out.checkpoint_format == "gptq";
    require(!get_bool(q, "is_marlin_format", where, false),
            "{}.is_marlin_format true is not supported (supported: false)", where);
    require(!get_bool(q, "lm_head", where, false),
            "{}.lm_head true (a quantized lm_head) is not supported (supported: false)", where);
    const std::string pack = get_string(q, "pack_dtype", where, "int32");
    require(pack == "int32", "{}.pack_dtype '{}' is not supported (supported: int32)", where,
            pack);
  } else if (method == "awq") {
    out.method = QuantizationConfig::Method::kAwq;
    require(bits == 4, "{}.{} {} is not supported for awq (supported: 4)", where, bits_key, bits);
    out.checkpoint_format = get_string(q, "version", where, "gemm");
    for (auto& ch : out.checkpoint_format) ch = static_cast<char>(std::tolower(ch));
    require(out.checkpoint_format == "gemm",
            "{}.version '{}' is not supported (supported: gemm)", where, out.checkpoint_format);
    require(get_bool(q, "zero_point", where, true),
            "{}.zero_point false is not supported (supported: true)", where);
    out.sym = false;
    out.zero_minus_one = false;
    if (auto m = q.find("modules_to_not_convert"); m != q.end() && !m->is_null()) {
      require(m->is_array(), "{}.modules_to_not_convert must be a list, got {}", where, m->dump());
      for (const auto& name : *m) {
        require(name.is_string(), "{}.modules_to_not_convert must hold names, got {}", where,
                name.dump());
        out.modules_to_not_convert.push_back(name.get<std::string>());
      }
    }
  } else {
    fail("{}.quant_method '{}' is not supported (supported: gptq, awq)", where, method);
  }
  out.bits = static_cast<int>(bits);
  return out;
}

ModelConfig parse_model_config(const json& config, const std::string& source) {
  require(config.is_object(), "{}: expected a JSON object", source);
  ModelConfig c;
  c.model_type = get_string(config, "model_type", source, "");
  // `architectures` names the class transformers would build; it outranks model_type.
  if (auto a = config.find("architectures"); a != config.end() && a->is_array() && !a->empty()) {
    bool llama = false;
    for (const auto& name : *a) llama = llama || name == "LlamaForCausalLM";
    require(llama, "{}: architecture {} is not supported (supported: LlamaForCausalLM)", source,
            a->dump());
  }
  require(c.model_type == "llama", "{}: model_type '{}' is not supported (supported: llama)", source,
          c.model_type);
  if (auto q = config.find("quantization_config"); q != config.end() && !q->is_null()) {
    c.quantization = parse_quantization_config(*q, source);
  }

  c.vocab_size = get_int(config, "vocab_size", source, 0, true);
  c.hidden_size = get_int(config, "hidden_size", source, 0, true);
  c.intermediate_size = get_int(config, "intermediate_size", source, 0, true);
  c.num_hidden_layers = get_int(config, "num_hidden_layers", source, 0, true);
  c.num_attention_heads = get_int(config, "num_attention_heads", source, 0, true);
  c.num_key_value_heads =
      get_int(config, "num_key_value_heads", source, c.num_attention_heads, false);
  for (auto [name, value] : {std::pair{"vocab_size", c.vocab_size},
                             {"hidden_size", c.hidden_size},
                             {"intermediate_size", c.intermediate_size},
                             {"num_hidden_layers", c.num_hidden_layers},
                             {"num_attention_heads", c.num_attention_heads},
                             {"num_key_value_heads", c.num_key_value_heads}}) {
    require(value > 0, "{}: '{}' must be positive, got {}", source, name, value);
    // Sizes are int32 in the kernels and their products must not overflow int64.
    require(value <= std::numeric_limits<int32_t>::max(), "{}: '{}' = {} is larger than 2^31 - 1",
            source, name, value);
  }
  require(c.num_attention_heads % c.num_key_value_heads == 0,
          "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source,
          c.num_attention_heads, c.num_key_value_heads);
  if (config.contains("head_dim") && !config["head_dim"].is_null()) {
    c.head_dim = get_int(config, "head_dim", source, 0, true);
  } else {
    require(c.hidden_size % c.num_attention_heads == 0,
            "{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim "
            "is given",
            source, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  require(c.head_dim > 0 && c.head_dim % 2 == 0 && c.head_dim <= 65536,
          "{}: head_dim must be positive, even and at most 65536, got {}", source, c.head_dim);
  c.max_position_embeddings = get_int(config, "max_position_embeddings", source, 2048, false);
  require(c.max_position_embeddings > 0, "{}: max_position_embeddings must be positive", source);
  c.rms_norm_eps = get_number(config, "rms_norm_eps", source, 1e-6);
  require(c.rms_norm_eps > 0, "{}: rms_norm_eps must be positive, got {}", source,
          c.rms_norm_eps);
  parse_rope(config, source, c);
  c.tie_word_embeddings = get_bool(config, "tie_word_embeddings", source, false);
  c.attention_bias = get_bool(config, "attention_bias", source, false);
  require(!c.attention_bias, "{}: attention_bias=true is not supported", source);
  require(!get_bool(config, "mlp_bias", source, false), "{}: mlp_bias=true is not supported",
          source);
  const std::string act = get_string(config, "hidden_act", source, "silu");
  require(act == "silu", "{}: hidden_act '{}' is not supported (supported: silu)", source, act);
  if (auto d = config.find("torch_dtype"); d != config.end() && d->is_string()) {
    c.torch_dtype = d->get<std::string>();
  } else if (auto d2 = config.find("dtype"); d2 != config.end() && d2->is_string()) {
    c.torch_dtype = d2->get<std::string>();
  }
  auto bos = get_token_ids(config, "bos_token_id", source);
  require(bos.size() <= 1, "{}: bos_token_id must be a single id", source);
  if (!bos.empty()) {
    require(bos.front() < c.vocab_size, "{}: bos_token_id {} is outside the vocabulary ({})",
            source, bos.front(), c.vocab_size);
    c.bos_token_id = bos.front();
  }
  c.eos_token_ids = get_token_ids(config, "eos_token_id", source);
  for (int32_t id : c.eos_token_ids) {
    require(id < c.vocab_size, "{}: eos_token_id {} is outside the vocabulary ({})", source, id,
            c.vocab_size);
  }
  return c;
}

namespace {
json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  require(in.good(), "cannot open {}", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", path.string(), e.what());
  }
}
}  // namespace

ModelConfig load_model_config(const std::filesystem::path& model_dir) {
  const auto config_path = model_dir / "config.json";
  require(std::filesystem::exists(config_path), "{} has no config.json", model_dir.string());
  ModelConfig c = parse_model_config(read_json_file(config_path), config_path.string());
  const auto generation_path = model_dir / "generation_config.json";
  if (std::filesystem::exists(generation_path)) {
    const json g = read_json_file(generation_path);
    for (int32_t id : get_token_ids(g, "eos_token_id", generation_path.string())) {
      if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
        c.eos_token_ids.push_back(id);
    }
    if (!c.bos_token_id) {
      auto bos = get_token_ids(g, "bos_token_id", generation_path.string());
      if (!bos.empty()) c.bos_token_id = bos.front();
    }
  }
  return c;
}

}  // namespace shardserve::model
