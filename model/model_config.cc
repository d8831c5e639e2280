#include "model/model_config.h"

#include <fstream>
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

std::vector<int32_t> get_token_ids(const json& j, const char* key, const std::string& source) {
  std::vector<int32_t> ids;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ids;
  auto add = [&](const json& v) {
    require(v.is_number_integer() && v.get<int64_t>() >= 0,
            "{}: field '{}' must hold non-negative token ids, got {}", source, key, v.dump());
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

}  // namespace

ModelConfig parse_model_config(const json& config, const std::string& source) {
  require(config.is_object(), "{}: expected a JSON object", source);
  ModelConfig c;
  c.model_type = config.value("model_type", std::string());
  // `architectures` names the class transformers would build; it outranks model_type.
  if (auto a = config.find("architectures"); a != config.end() && a->is_array() && !a->empty()) {
    bool llama = false;
    for (const auto& name : *a) llama = llama || name == "LlamaForCausalLM";
    require(llama, "{}: architecture {} is not supported (supported: LlamaForCausalLM)", source,
            a->dump());
  }
  require(c.model_type == "llama", "{}: model_type '{}' is not supported (supported: llama)", source,
          c.model_type);
  if (config.contains("quantization_config")) {
    fail("{}: quantization_config is present but quantized checkpoints are not supported yet",
         source);
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
  require(c.head_dim > 0 && c.head_dim % 2 == 0, "{}: head_dim must be positive and even, got {}",
          source, c.head_dim);
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
  const std::string act = config.value("hidden_act", std::string("silu"));
  require(act == "silu", "{}: hidden_act '{}' is not supported (supported: silu)", source, act);
  if (auto d = config.find("torch_dtype"); d != config.end() && d->is_string()) {
    c.torch_dtype = d->get<std::string>();
  } else if (auto d2 = config.find("dtype"); d2 != config.end() && d2->is_string()) {
    c.torch_dtype = d2->get<std::string>();
  }
  auto bos = get_token_ids(config, "bos_token_id", source);
  require(bos.size() <= 1, "{}: bos_token_id must be a single id", source);
  if (!bos.empty()) c.bos_token_id = bos.front();
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
