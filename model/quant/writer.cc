#include "model/quant/writer.h"

#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/half.h"
#include "model/safetensors_writer.h"

namespace shardserve::quant {
namespace {

namespace fs = std::filesystem;
using model::DType;
using model::TensorData;
using nlohmann::json;

json read_json(const fs::path& path) {
  std::ifstream in(path);
  require(in.good(), "cannot open {}", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", path.string(), e.what());
  }
}

void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path, std::ios::trunc);
  require(out.good(), "cannot write {}", path.string());
  out << j.dump(2) << "\n";
  require(out.good(), "error while writing {}", path.string());
}

const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    case DType::kF32: return "float32";
    default: fail("quantized model: dtype {} is not a float storage type", model::dtype_name(d));
  }
}

template <typename T>
TensorData raw_tensor(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  TensorData t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(T));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

// The source directory's files other than weights and config (tokenizer, generation config).
void copy_side_files(const fs::path& source, const fs::path& out) {
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "tokenizer.model"}) {
    if (fs::exists(source / name)) {
      fs::copy_file(source / name, out / name, fs::copy_options::overwrite_existing);
    }
  }
}

// Non-quantized tensors of the source (overrides applied) converted to `dtype`.
void add_float_tensors(const model::Checkpoint& ckpt,
                       const std::map<std::string, QuantizedLinear>& linears,
                       const std::map<std::string, std::vector<float>>& overrides, DType dtype,
                       std::map<std::string, TensorData>& tensors, int64_t& bytes) {
  for (const auto& name : ckpt.names()) {
    const std::string suffix = ".weight";
    if (name.size() > suffix.size() && name.ends_with(suffix) &&
        linears.count(name.substr(0, name.size() - suffix.size()))) {
      continue;
    }
    const model::TensorView& t = ckpt.tensor(name);
    auto it = overrides.find(name);
    std::vector<float> values = it != overrides.end() ? it->second : read_float_tensor(t);
    require(static_cast<int64_t>(values.size()) == t.numel(),
            "quantized model: override of '{}' has {} values, the tensor {}", name, values.size(),
            t.numel());
    tensors[name] = model::make_tensor(dtype, t.shape, values);
    bytes += static_cast<int64_t>(tensors[name].bytes.size());
  }
  for (const auto& [name, values] : overrides) {
    require(ckpt.contains(name), "quantized model: override '{}' is not a tensor of {}", name,
            ckpt.source().string());
  }
}

void prepare_out_dir(const fs::path& source, const fs::path& out) {
  require(fs::weakly_canonical(source) != fs::weakly_canonical(out),
          "quantized model: the output directory {} is the source directory", out.string());
  fs::create_directories(out);
}

int64_t bytes_of(const fs::path& p) { return static_cast<int64_t>(fs::file_size(p)); }

}  // namespace

std::vector<float> read_float_tensor(const model::TensorView& t) {
  std::vector<float> v(t.numel());
  const std::byte* p = t.data.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint16_t h;
    switch (t.dtype) {
      case DType::kF32:
        std::memcpy(&v[i], p + i * 4, 4);
        break;
      case DType::kBF16:
        std::memcpy(&h, p + i * 2, 2);
        v[i] = bf16_to_float(h);
        break;
      case DType::kF16:
        std::memcpy(&h, p + i * 2, 2);
        v[i] = fp16_to_float(h);
        break;
      default:
        fail("{}: tensor '{}' has dtype {}; expected F32, F16 or BF16", t.file, t.name,
             model::dtype_name(t.dtype));
    }
  }
  return v;
}

json quantization_config_json(const QuantizedLinear& l, const WriteOptions& o) {
  const int64_t group = l.group_size == l.in_features && l.num_groups == 1 ? -1 : l.group_size;
  json q;
  if (o.format == WriteOptions::Format::kGptq) {
    // AutoGPTQ's BaseQuantizeConfig fields, as transformers' GPTQConfig and vLLM read them.
    q = {{"quant_method", "gptq"},
         {"bits", l.bits},
         {"group_size", group},
         {"desc_act", o.desc_act},
         {"sym", o.sym},
         {"damp_percent", o.damp_percent},
         {"static_groups", false},
         {"true_sequential", true},
         {"lm_head", false},
         {"checkpoint_format", o.gptq_v1 ? "gptq" : "gptq_v2"},
         {"model_file_base_name", "model"}};
  } else {
    // AutoAWQ's AwqConfig as written into config.json (transformers' AwqConfig fields).
    q = {{"quant_method", "awq"},
         {"bits", l.bits},
         {"group_size", group},
         {"zero_point", true},
         {"version", "gemm"},
         {"modules_to_not_convert", nullptr}};
  }
  if (o.extra.is_object()) q["shardserve"] = o.extra;
  return q;
}

WrittenSizes write_quantized_model(const fs::path& source_dir, const fs::path& out_dir,
                                   const std::map<std::string, QuantizedLinear>& linears,
                                   const std::map<std::string, std::vector<float>>& overrides,
                                   const WriteOptions& options) {
  require(!linears.empty(), "quantized model: no linear to write");
  prepare_out_dir(source_dir, out_dir);
  const auto ckpt = model::Checkpoint::open(source_dir);
  std::map<std::string, TensorData> tensors;
  WrittenSizes sizes;
  add_float_tensors(ckpt, linears, overrides, options.float_dtype, tensors, sizes.other_bytes);
  for (const auto& [prefix, l] : linears) {
    const int pf = 32 / l.bits;
    std::map<std::string, TensorData> parts;
    if (options.format == WriteOptions::Format::kGptq) {
      const GptqTensors g = to_gptq(l, options.gptq_v1);
      parts[".qweight"] = raw_tensor(DType::kI32, {l.in_features / pf, l.out_features}, g.qweight);
      parts[".qzeros"] = raw_tensor(DType::kI32, {l.num_groups, l.out_features / pf}, g.qzeros);
      parts[".scales"] = raw_tensor(DType::kF16, {l.num_groups, l.out_features}, g.scales);
      parts[".g_idx"] = raw_tensor(DType::kI32, {l.in_features}, g.g_idx);
    } else {
      const AwqTensors a = to_awq(l);
      parts[".qweight"] = raw_tensor(DType::kI32, {l.in_features, l.out_features / 8}, a.qweight);
      parts[".qzeros"] = raw_tensor(DType::kI32, {l.num_groups, l.out_features / 8}, a.qzeros);
      parts[".scales"] = raw_tensor(DType::kF16, {l.num_groups, l.out_features}, a.scales);
    }
    for (auto& [suffix, t] : parts) {
      sizes.linear_bytes += static_cast<int64_t>(t.bytes.size());
      tensors[prefix + suffix] = std::move(t);
    }
  }
  model::write_safetensors(out_dir / "model.safetensors", tensors, {{"format", "pt"}});
  sizes.file_bytes = bytes_of(out_dir / "model.safetensors");

  json config = read_json(source_dir / "config.json");
  const json q = quantization_config_json(linears.begin()->second, options);
  config["quantization_config"] = q;
  config["torch_dtype"] = torch_dtype_name(options.float_dtype);
  write_json(out_dir / "config.json", config);
  if (options.format == WriteOptions::Format::kGptq) {
    json file = q;
    file.erase("shardserve");
    write_json(out_dir / "quantize_config.json", file);
  }
  copy_side_files(source_dir, out_dir);
  return sizes;
}

WrittenSizes write_dequantized_model(const fs::path& source_dir, const fs::path& out_dir,
                                     const std::map<std::string, QuantizedLinear>& linears,
                                     const std::map<std::string, std::vector<float>>& overrides,
                                     DType float_dtype, DType linear_dtype) {
  prepare_out_dir(source_dir, out_dir);
  const auto ckpt = model::Checkpoint::open(source_dir);
  std::map<std::string, TensorData> tensors;
  WrittenSizes sizes;
  add_float_tensors(ckpt, linears, overrides, float_dtype, tensors, sizes.other_bytes);
  for (const auto& [prefix, l] : linears) {
    tensors[prefix + ".weight"] =
        model::make_tensor(linear_dtype, {l.out_features, l.in_features}, l.dequantize());
    sizes.linear_bytes += static_cast<int64_t>(tensors[prefix + ".weight"].bytes.size());
  }
  model::write_safetensors(out_dir / "model.safetensors", tensors, {{"format", "pt"}});
  sizes.file_bytes = bytes_of(out_dir / "model.safetensors");
  json config = read_json(source_dir / "config.json");
  config.erase("quantization_config");
  config["torch_dtype"] = torch_dtype_name(float_dtype);
  write_json(out_dir / "config.json", config);
  copy_side_files(source_dir, out_dir);
  return sizes;
}

}  // namespace shardserve::quant
