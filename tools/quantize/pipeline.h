#pragma once
// The quantize tool's work, as a library (the tool's main and tests/quant call it): load a
// model, run RTN, GPTQ or AWQ over its linears with calibration token windows, and hand back
// the quantized linears (and, for AWQ, the RMSNorm weights its scales were folded into).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/quant/formats.h"
#include "model/quant/quantizer.h"
#include "model/quant/writer.h"
#include "tools/quantize/numerics.h"

namespace shardserve::quantize {

enum class Method { kRtn, kGptq, kAwq };
Method parse_method(const std::string& name);  // "rtn", "gptq", "awq"
const char* method_name(Method method);

struct Options {
  Method method = Method::kGptq;
  quant::WriteOptions::Format format = quant::WriteOptions::Format::kGptq;
  int bits = 4;
  int64_t group_size = 128;
  bool sym = true;            // gptq format only; the awq format is asymmetric
  bool desc_act = false;      // gptq method only
  bool gptq_v1 = true;        // checkpoint_format gptq (else gptq_v2)
  double damp = 0.01;
  int64_t block = 128;
  int awq_grid = 20;
  int64_t awq_tokens = 4096;  // calibration tokens used for AWQ's output errors (evenly spaced)
  int64_t seq_len = 512;      // calibration window: [BOS] + seq_len - 1 text tokens
};

// Throws an Error naming the option for combinations the formats cannot hold (awq format with
// 8 bits or act-order, ...).
void validate(const Options& options);

// The quantization grid the options imply (AWQ format -> AWQ grid; GPTQ v1 asym -> zeros >= 1).
quant::QuantGrid grid_for(const Options& options);

struct Result {
  std::map<std::string, quant::QuantizedLinear> linears;  // "model.layers.0.self_attn.q_proj"
  std::map<std::string, std::vector<float>> overrides;    // AWQ: folded RMSNorm weights
  nlohmann::json report;  // device; per layer and stage: losses, AWQ alphas, seconds
};

// Progress: (done units, total units, layer, stage name). Units are layer stages.
using Progress = std::function<void(int64_t done, int64_t total, int64_t layer,
                                    const std::string& what)>;

// Calibration windows from token ids: `count` windows of [bos] + seq_len - 1 consecutive ids,
// non-overlapping, from the start. Throws when the ids are too few.
std::vector<int32_t> calibration_windows(const std::vector<int32_t>& ids, int32_t bos,
                                         int64_t seq_len, int64_t count);

// `calibration`: token windows (a multiple of options.seq_len); unused by RTN. `numerics`: where
// the GPTQ / AWQ arithmetic runs (null: CpuNumerics); its name goes into the report as
// "device", with each layer's seconds.
Result quantize_model(const std::filesystem::path& model_dir,
                      const std::vector<int32_t>& calibration, const Options& options,
                      const Progress& progress = {}, Numerics* numerics = nullptr);

// The quantization_config "shardserve" entry recording how a model was made.
nlohmann::json provenance(const Options& options, int64_t calibration_tokens);

}  // namespace shardserve::quantize
