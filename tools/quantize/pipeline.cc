#include "tools/quantize/pipeline.h"

#include <chrono>
#include <cmath>

#include "common/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "tools/quantize/calibration.h"
#include "worker/llama_weights.h"
#include "worker/tensor_parallel.h"

namespace shardserve::quantize {
namespace {

using nlohmann::json;
using quant::QuantizedLinear;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Rows of x evenly spaced over its `n` rows, at most `m` of them.
std::vector<float> subsample(const std::vector<float>& x, int64_t n, int64_t in, int64_t m) {
  if (m <= 0 || m >= n) return x;
  std::vector<float> out(m * in);
  for (int64_t k = 0; k < m; ++k) {
    const int64_t r = k * n / m;
    std::copy(x.begin() + r * in, x.begin() + (r + 1) * in, out.begin() + k * in);
  }
  return out;
}

std::vector<float> abs_mean(const std::vector<float>& x, int64_t n, int64_t in) {
  std::vector<double> acc(in, 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < in; ++i) acc[i] += std::fabs(x[r * in + i]);
  std::vector<float> m(in);
  for (int64_t i = 0; i < in; ++i) m[i] = static_cast<float>(acc[i] / static_cast<double>(n));
  return m;
}

void scale_columns(std::vector<float>& w, int64_t rows, int64_t in, const std::vector<float>& s) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < in; ++i) w[r * in + i] *= s[i];
}

// The fused matrices of one layer and how they split into the checkpoint's projections.
struct LayerLinears {
  std::vector<float>* weight;
  int64_t out, in;
  std::vector<std::pair<std::string, int64_t>> parts;  // (name suffix, rows)
};

std::vector<LayerLinears> layer_linears(worker::LayerWeights& w, const model::ModelConfig& c) {
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  return {
      {&w.qkv, c.q_size() + 2 * c.kv_size(), H,
       {{"self_attn.q_proj", c.q_size()}, {"self_attn.k_proj", c.kv_size()},
        {"self_attn.v_proj", c.kv_size()}}},
      {&w.o, H, c.q_size(), {{"self_attn.o_proj", H}}},
      {&w.gate_up, 2 * F, H, {{"mlp.gate_proj", F}, {"mlp.up_proj", F}}},
      {&w.down, H, F, {{"mlp.down_proj", H}}},
  };
}

void store(Result& r, int64_t layer, const LayerLinears& ll, const QuantizedLinear& q) {
  int64_t row = 0;
  for (const auto& [suffix, rows] : ll.parts) {
    r.linears["model.layers." + std::to_string(layer) + "." + suffix] = q.rows(row, rows);
    row += rows;
  }
}

}  // namespace

Method parse_method(const std::string& name) {
  if (name == "rtn") return Method::kRtn;
  if (name == "gptq") return Method::kGptq;
  if (name == "awq") return Method::kAwq;
  fail("--method '{}' is not supported (supported: rtn, gptq, awq)", name);
}

const char* method_name(Method m) {
  switch (m) {
    case Method::kRtn: return "rtn";
    case Method::kGptq: return "gptq";
    case Method::kAwq: return "awq";
  }
  return "?";
}

void validate(const Options& o) {
  const bool awq_format = o.format == quant::WriteOptions::Format::kAwq;
  require(o.bits == 4 || o.bits == 8, "--bits {} is not supported (supported: 4, 8)", o.bits);
  require(o.group_size == -1 || o.group_size == 32 || o.group_size == 64 || o.group_size == 128,
          "--group-size {} is not supported (supported: 32, 64, 128, -1)", o.group_size);
  require(!awq_format || o.bits == 4, "--format awq stores 4-bit weights only, not --bits {}",
          o.bits);
  require(!awq_format || !o.desc_act, "--format awq has no g_idx, so --desc-act is not possible");
  require(!o.desc_act || o.method == Method::kGptq, "--desc-act is a GPTQ option (method {})",
          method_name(o.method));
  require(o.damp > 0 && o.damp < 1, "--damp {} outside (0, 1)", o.damp);
  require(o.block > 0 && (o.group_size == -1 || o.block % o.group_size == 0),
          "--block {} must be a positive multiple of --group-size {}", o.block, o.group_size);
  require(o.awq_grid > 0, "--awq-grid {} must be positive", o.awq_grid);
  require(o.seq_len >= 2, "--seq-len {} must be at least 2", o.seq_len);
}

quant::QuantGrid grid_for(const Options& o) {
  quant::QuantGrid g;
  g.bits = o.bits;
  g.group_size = o.group_size;
  if (o.format == quant::WriteOptions::Format::kAwq) {
    g.style = quant::QuantGrid::Style::kAwq;
    g.sym = false;
  } else {
    g.style = quant::QuantGrid::Style::kGptq;
    g.sym = o.sym;
    g.min_zero = (!o.sym && o.gptq_v1) ? 1 : 0;
  }
  return g;
}

std::vector<int32_t> calibration_windows(const std::vector<int32_t>& ids, int32_t bos,
                                         int64_t seq_len, int64_t count) {
  const int64_t per = seq_len - 1;
  require(count > 0 && static_cast<int64_t>(ids.size()) >= count * per,
          "calibration: {} windows of {} tokens need {} token ids, the text has {}", count,
          seq_len, count * per, ids.size());
  std::vector<int32_t> out;
  out.reserve(count * seq_len);
  for (int64_t w = 0; w < count; ++w) {
    out.push_back(bos);
    out.insert(out.end(), ids.begin() + w * per, ids.begin() + (w + 1) * per);
  }
  return out;
}

json provenance(const Options& o, int64_t calibration_tokens) {
  json j = {{"method", method_name(o.method)}, {"tool", "shardserve tools/quantize"}};
  if (o.method != Method::kRtn) {
    j["calibration_tokens"] = calibration_tokens;
    j["calibration_seq_len"] = o.seq_len;
  }
  if (o.method == Method::kGptq) {
    j["damp_percent"] = o.damp;
    j["block"] = o.block;
  }
  if (o.method == Method::kAwq) {
    j["awq_grid"] = o.awq_grid;
    j["awq_tokens"] = o.awq_tokens;
  }
  return j;
}

Result quantize_model(const std::filesystem::path& model_dir, const std::vector<int32_t>& calib,
                      const Options& o, const Progress& progress, Numerics* numerics) {
  validate(o);
  CpuNumerics cpu;
  Numerics& num = numerics != nullptr ? *numerics : cpu;
  const model::ModelConfig config = model::load_model_config(model_dir);
  require(!config.quantization, "{} is already quantized (quantization_config is present)",
          model_dir.string());
  const auto ckpt = model::Checkpoint::open(model_dir);
  worker::LlamaWeights w =
      worker::load_llama_weights(ckpt, config, worker::make_shard(config, 0, 1));
  const quant::QuantGrid grid = grid_for(o);
  const int64_t L = config.num_hidden_layers;
  Result result;
  result.report = {{"method", method_name(o.method)}, {"layers", json::array()}};
  // RTN is arithmetic on the CPU whatever the device (it takes well under a second).
  result.report["device"] = o.method == Method::kRtn ? "cpu" : num.name();
  const auto t_start = std::chrono::steady_clock::now();

  if (o.method == Method::kRtn) {
    for (int64_t l = 0; l < L; ++l) {
      if (progress) progress(l, L, l, "rtn");
      for (const auto& ll : layer_linears(w.layers[l], config)) {
        store(result, l, ll, quant::quantize_rtn(*ll.weight, ll.out, ll.in, grid));
      }
    }
    if (progress) progress(L, L, L - 1, "done");
    result.report["seconds"] = seconds_since(t_start);
    return result;
  }

  require(!calib.empty() && static_cast<int64_t>(calib.size()) % o.seq_len == 0,
          "calibration: {} tokens is not a whole number of {}-token windows", calib.size(),
          o.seq_len);
  CalibrationForward fwd(config, w, o.seq_len);
  std::vector<float> x = fwd.embed(calib);
  const int64_t n = static_cast<int64_t>(calib.size());
  const int64_t total = L * 4;
  double total_numerics = 0;
  for (int64_t l = 0; l < L; ++l) {
    auto& lw = w.layers[l];
    const auto linears = layer_linears(lw, config);
    json layer_report = {{"layer", l}};
    const auto t_layer = std::chrono::steady_clock::now();
    auto t_stage = t_layer;
    double layer_numerics = 0;
    StageHook hook = [&](int64_t layer, Stage stage, const std::vector<float>& input) -> bool {
      const int idx = static_cast<int>(stage);
      if (progress) progress(layer * 4 + idx, total, layer, stage_name(stage));
      const LayerLinears& ll = linears[idx];
      json st;
      bool changed = false;
      double numerics_seconds = 0;  // the Numerics call alone: what --device changes
      if (o.method == Method::kGptq) {
        quant::GptqOptions go;
        go.act_order = o.desc_act;
        go.damp = o.damp;
        go.block = o.block;
        quant::GptqStats gs;
        const auto t_num = std::chrono::steady_clock::now();
        const QuantizedLinear q =
            num.gptq(*ll.weight, ll.out, ll.in, input.data(), n, grid, go, &gs);
        numerics_seconds = seconds_since(t_num);
        store(result, layer, ll, q);
        *ll.weight = q.dequantize();  // later stages see the quantized layer (true sequential)
        st = {{"loss", gs.loss}, {"dead_columns", gs.dead_columns}};
      } else {  // AWQ: search a scale, fold it; quantization happens after the layer
        const std::vector<float> mean = abs_mean(input, n, ll.in);
        const std::vector<float> xs = subsample(input, n, ll.in, o.awq_tokens);
        const int64_t m = static_cast<int64_t>(xs.size()) / ll.in;
        const bool no_gqa = config.num_key_value_heads == config.num_attention_heads;
        if (stage == Stage::kO && !no_gqa) {
          // AutoAWQ scales v_proj -> o_proj only when their shapes match (no GQA); so do we.
          st = {{"skipped", "grouped-query attention: v_proj rows do not match o_proj inputs"}};
        } else {
          const auto t_num = std::chrono::steady_clock::now();
          const quant::AwqSearch s = num.awq_search_scales(xs.data(), m, ll.in, {ll.weight},
                                                           {ll.out}, grid, o.awq_grid, &mean);
          numerics_seconds = seconds_since(t_num);
          scale_columns(*ll.weight, ll.out, ll.in, s.scales);
          const int64_t q_rows = config.q_size(), kv = config.kv_size();
          const int64_t H = config.hidden_size, F = config.intermediate_size;
          switch (stage) {
            case Stage::kQkv:
              for (int64_t i = 0; i < H; ++i) lw.input_norm[i] /= s.scales[i];
              break;
            case Stage::kO:  // v rows (= attention channels without GQA) take 1 / s
              for (int64_t c = 0; c < kv; ++c)
                for (int64_t i = 0; i < H; ++i) lw.qkv[(q_rows + kv + c) * H + i] /= s.scales[c];
              break;
            case Stage::kGateUp:
              for (int64_t i = 0; i < H; ++i) lw.post_norm[i] /= s.scales[i];
              break;
            case Stage::kDown:  // up rows take 1 / s: act = silu(gate) * up scales with them
              for (int64_t c = 0; c < F; ++c)
                for (int64_t i = 0; i < H; ++i) lw.gate_up[(F + c) * H + i] /= s.scales[c];
              break;
          }
          changed = true;
          st = {{"alpha", s.alpha}, {"mse", s.loss}, {"mse_rtn", s.loss_unscaled}};
        }
      }
      st["seconds"] = seconds_since(t_stage);
      st["numerics_seconds"] = numerics_seconds;
      layer_numerics += numerics_seconds;
      t_stage = std::chrono::steady_clock::now();
      layer_report[stage_name(stage)] = st;
      return changed;
    };
    fwd.layer(l, x, hook);
    if (o.method == Method::kAwq) {
      for (const auto& ll : linears) {
        store(result, l, ll, quant::quantize_rtn(*ll.weight, ll.out, ll.in, grid));
      }
      const std::string p = "model.layers." + std::to_string(l) + ".";
      result.overrides[p + "input_layernorm.weight"] = lw.input_norm;
      result.overrides[p + "post_attention_layernorm.weight"] = lw.post_norm;
      // x went through the scaled full-precision layer, as AutoAWQ feeds the next layer.
    }
    layer_report["seconds"] = seconds_since(t_layer);  // calibration forward included
    layer_report["numerics_seconds"] = layer_numerics;
    total_numerics += layer_numerics;
    result.report["layers"].push_back(layer_report);
  }
  if (progress) progress(total, total, L - 1, "done");
  result.report["seconds"] = seconds_since(t_start);
  result.report["numerics_seconds"] = total_numerics;
  result.report["calibration_tokens"] = n;
  return result;
}

}  // namespace shardserve::quantize
