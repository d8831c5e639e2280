#pragma once
// Writes a quantized model directory that AutoGPTQ / GPTQModel / vLLM (format "gptq") or
// AutoAWQ / transformers / vLLM (format "awq", GEMM) load as they load their own: one
// model.safetensors with `<linear>.qweight/qzeros/scales[/g_idx]` for every quantized linear and
// every other tensor of the source copied (converted to `float_dtype`), config.json = the
// source's plus `quantization_config` (and torch_dtype), quantize_config.json for GPTQ (AutoGPTQ
// reads that file), and the tokenizer / generation files copied. Also writes the "dequantized
// twin": the same model with each quantized linear stored dense as its dequantized weights.
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/quant/formats.h"
#include "model/safetensors.h"

namespace shardserve::quant {

struct WriteOptions {
  enum class Format { kGptq, kAwq };
  Format format = Format::kGptq;
  bool gptq_v1 = true;              // checkpoint_format "gptq" (zero - 1 stored) or "gptq_v2"
  bool sym = true;                  // recorded in quantization_config
  bool desc_act = false;            // recorded in quantization_config
  double damp_percent = 0.01;       // recorded (GPTQ)
  model::DType float_dtype = model::DType::kF16;  // for every non-quantized tensor
  nlohmann::json extra;             // merged into quantization_config (e.g. how it was made)
};

// The quantization_config object written for `linears` under `options`.
nlohmann::json quantization_config_json(const QuantizedLinear& any_linear,
                                        const WriteOptions& options);

struct WrittenSizes {
  int64_t file_bytes = 0;      // model.safetensors
  int64_t linear_bytes = 0;    // the quantized linears' tensors (qweight, qzeros, scales, g_idx)
  int64_t other_bytes = 0;     // every other tensor
};

// `linears`: prefix ("model.layers.0.mlp.down_proj") -> quantized linear. `overrides`: tensors
// whose values replace the source's (AWQ folds its scales into the RMSNorm weights).
WrittenSizes write_quantized_model(const std::filesystem::path& source_dir,
                                   const std::filesystem::path& out_dir,
                                   const std::map<std::string, QuantizedLinear>& linears,
                                   const std::map<std::string, std::vector<float>>& overrides,
                                   const WriteOptions& options);

// The dequantized twin: quantized linears stored as dense `<prefix>.weight` in `linear_dtype`
// (F32 keeps every dequantized value exactly; BF16 rounds them), the rest as in the quantized
// model (same overrides, same float_dtype), config.json without quantization_config.
WrittenSizes write_dequantized_model(const std::filesystem::path& source_dir,
                                     const std::filesystem::path& out_dir,
                                     const std::map<std::string, QuantizedLinear>& linears,
                                     const std::map<std::string, std::vector<float>>& overrides,
                                     model::DType float_dtype, model::DType linear_dtype);

// Every tensor of a checkpoint as float32 (F32/F16/BF16 tensors only), for the quantizer.
std::vector<float> read_float_tensor(const model::TensorView& tensor);

}  // namespace shardserve::quant
