// quantize: writes a GPTQ or AWQ (GEMM) checkpoint of a LLaMA model that AutoGPTQ / GPTQModel,
// AutoAWQ, transformers and vLLM load as their own, and that shardserve loads too.
//   quantize --model models/kjv-llama --out /tmp/kjv-gptq --method gptq --bits 4 --group-size 128
//            --calib tools/train/data/calibration.txt
// Methods: rtn (round-to-nearest, no calibration), gptq (Hessian of calibration activations,
// Cholesky, error feedback, optional act-order), awq (activation-aware per-channel scales searched
// on calibration text, folded into the preceding RMSNorm / v_proj / up_proj, then RTN).
// --device cpu|cuda|auto (default auto: the GPU when the build has CUDA and a device is present)
// picks where GPTQ's Hessian and column loop and AWQ's scale search run; both give the same
// checkpoint within floating-point rounding (docs/quantization.md, timings there too).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "common/error.h"
#include "model/model_config.h"
#include "model/tokenizer/tokenizer.h"
#include "tools/quantize/numerics.h"
#include "tools/quantize/pipeline.h"
#if SHARDSERVE_HAVE_CUDA
#include "tools/quantize/cuda/cuda_numerics.h"
#endif

namespace shardserve {
namespace {

namespace fs = std::filesystem;

model::DType parse_dtype(const std::string& name, const char* option) {
  if (name == "float16") return model::DType::kF16;
  if (name == "bfloat16") return model::DType::kBF16;
  if (name == "float32") return model::DType::kF32;
  fail("{} '{}' is not supported (supported: float16, bfloat16, float32)", option, name);
}

// The Numerics for --device: "cpu", "cuda" (an error where there is none) or "auto".
std::unique_ptr<quantize::Numerics> make_numerics(const std::string& device) {
  require(device == "cpu" || device == "cuda" || device == "auto",
          "--device '{}' is not supported (supported: cpu, cuda, auto)", device);
#if SHARDSERVE_HAVE_CUDA
  if (device == "cuda" || (device == "auto" && quantize::cuda_numerics_available())) {
    return std::make_unique<quantize::CudaNumerics>();
  }
#else
  require(device != "cuda", "--device cuda: this build has no CUDA (nvcc was not found when it "
                            "was configured)");
#endif
  return std::make_unique<quantize::CpuNumerics>();
}

// "layer 3/6 [########------------] 40% o_proj  12.1 s, ETA 18.0 s" on one rewritten line.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label)
      : label_(std::move(label)), tty_(isatty(2) != 0), t0_(std::chrono::steady_clock::now()) {}

  void operator()(int64_t done, int64_t total, int64_t layer, const std::string& what) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double frac = total > 0 ? static_cast<double>(done) / total : 1.0;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '#');
    bar.append(kWidth - filled, '-');
    char eta[32] = "?";
    if (done > 0) std::snprintf(eta, sizeof eta, "%.1f s", elapsed / done * (total - done));
    std::fprintf(stderr, "%s%s layer %lld/%lld [%s] %3.0f%% %-8s %.1f s, ETA %s%s",
                 tty_ ? "\r" : "", label_.c_str(), static_cast<long long>(layer + 1),
                 static_cast<long long>(layers_), bar.c_str(), frac * 100, what.c_str(), elapsed,
                 eta, tty_ ? "   " : "\n");
    if (done == total && tty_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }
  void set_layers(int64_t layers) { layers_ = layers; }

 private:
  std::string label_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
  int64_t layers_ = 0;
};

int run(int argc, char** argv) {
  CLI::App app{"Quantize a LLaMA checkpoint to GPTQ or AWQ (GEMM) format"};
  std::string model_dir, out_dir, calib_path, method = "gptq", format, dtype = "float16";
  std::string twin_dir, twin_dtype = "float32", report_path, device = "auto";
  quantize::Options o;
  bool asym = false, v2 = false;
  int64_t calib_samples = 128;
  app.add_option("--model", model_dir, "source HuggingFace model directory")->required();
  app.add_option("--out", out_dir, "output directory (created)")->required();
  app.add_option("--method", method, "rtn, gptq or awq")->capture_default_str();
  app.add_option("--format", format, "checkpoint layout: gptq or awq (default: gptq for rtn)");
  app.add_option("--bits", o.bits, "4 or 8")->capture_default_str();
  app.add_option("--group-size", o.group_size, "32, 64, 128 or -1")->capture_default_str();
  app.add_flag("--asym", asym, "gptq format: asymmetric grid (default symmetric)");
  app.add_flag("--desc-act", o.desc_act, "gptq: act-order (columns by decreasing H diagonal)");
  app.add_flag("--gptq-v2", v2, "write checkpoint_format gptq_v2 (zeros stored as is)");
  app.add_option("--damp", o.damp, "gptq: damping, fraction of mean diag(H)")
      ->capture_default_str();
  app.add_option("--block", o.block, "gptq: lazy-batch block width")->capture_default_str();
  app.add_option("--awq-grid", o.awq_grid, "awq: grid points for alpha in [0, 1)")
      ->capture_default_str();
  app.add_option("--awq-tokens", o.awq_tokens, "awq: calibration tokens for the output error")
      ->capture_default_str();
  app.add_option("--calib", calib_path, "calibration text (UTF-8), for gptq and awq")
      ->check(CLI::ExistingFile);
  app.add_option("--calib-samples", calib_samples, "calibration windows")->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "tokens per calibration window (BOS included)")
      ->capture_default_str();
  app.add_option("--dtype", dtype, "non-quantized tensors: float16 or bfloat16")
      ->capture_default_str();
  app.add_option("--twin", twin_dir, "also write the dequantized twin here");
  app.add_option("--twin-dtype", twin_dtype, "twin's linears: float32 (exact) or bfloat16")
      ->capture_default_str();
  app.add_option("--report", report_path, "write a JSON report (losses, sizes, timings)");
  app.add_option("--device", device, "where GPTQ / AWQ arithmetic runs: cpu, cuda or auto")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  o.method = quantize::parse_method(method);
  if (format.empty()) format = o.method == quantize::Method::kAwq ? "awq" : "gptq";
  require(format == "gptq" || format == "awq",
          "--format '{}' is not supported (supported: gptq, awq)", format);
  o.format = format == "awq" ? quant::WriteOptions::Format::kAwq
                             : quant::WriteOptions::Format::kGptq;
  o.sym = !asym;
  o.gptq_v1 = !v2;
  quantize::validate(o);

  std::vector<int32_t> calib;
  if (o.method != quantize::Method::kRtn) {
    require(!calib_path.empty(), "--method {} needs --calib (calibration text)", method);
    const auto config = model::load_model_config(model_dir);
    const auto tokenizer = model::load_tokenizer(model_dir);
    require(tokenizer->bos_id().has_value() || config.bos_token_id.has_value(),
            "{}: calibration windows start with BOS and the model has none", model_dir);
    const int32_t bos = tokenizer->bos_id().value_or(config.bos_token_id.value_or(0));
    std::ifstream in(calib_path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    const auto ids = tokenizer->encode(text.str(), false);
    calib = quantize::calibration_windows(ids, bos, o.seq_len, calib_samples);
  }

  const std::unique_ptr<quantize::Numerics> numerics = make_numerics(device);
  ProgressBar bar(std::string("quantize ") + method + " " + std::to_string(o.bits) + "-bit (" +
                  numerics->name() + ")");
  bar.set_layers(model::load_model_config(model_dir).num_hidden_layers);
  const auto t0 = std::chrono::steady_clock::now();
  quantize::Result r =
      quantize::quantize_model(model_dir, calib, o, std::ref(bar), numerics.get());
  const double quantize_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  quant::WriteOptions w;
  w.format = o.format;
  w.gptq_v1 = o.gptq_v1;
  w.sym = o.format == quant::WriteOptions::Format::kAwq ? false : o.sym;
  w.desc_act = o.desc_act;
  w.damp_percent = o.damp;
  w.float_dtype = parse_dtype(dtype, "--dtype");
  require(w.float_dtype != model::DType::kF32, "--dtype float32 is not a checkpoint dtype here");
  w.extra = quantize::provenance(o, static_cast<int64_t>(calib.size()));
  const quant::WrittenSizes sizes =
      quant::write_quantized_model(model_dir, out_dir, r.linears, r.overrides, w);
  std::printf("%s: %s %d-bit group %lld, %zu linears, model.safetensors %lld bytes (linears %lld, "
              "other tensors %lld), quantized in %.1f s (%s: %.1f s of GPTQ / AWQ arithmetic)\n",
              out_dir.c_str(), method.c_str(), o.bits, static_cast<long long>(o.group_size),
              r.linears.size(), static_cast<long long>(sizes.file_bytes),
              static_cast<long long>(sizes.linear_bytes), static_cast<long long>(sizes.other_bytes),
              quantize_s, r.report.value("device", "cpu").c_str(),
              r.report.value("numerics_seconds", 0.0));
  nlohmann::json report = r.report;
  report["format"] = format;
  report["bits"] = o.bits;
  report["group_size"] = o.group_size;
  report["sym"] = w.sym;
  report["desc_act"] = o.desc_act;
  report["quantize_seconds"] = quantize_s;
  report["sizes"] = {{"file_bytes", sizes.file_bytes},
                     {"linear_bytes", sizes.linear_bytes},
                     {"other_bytes", sizes.other_bytes}};
  if (!twin_dir.empty()) {
    const quant::WrittenSizes t = quant::write_dequantized_model(
        model_dir, twin_dir, r.linears, r.overrides, w.float_dtype,
        parse_dtype(twin_dtype, "--twin-dtype"));
    std::printf("%s: dequantized twin, model.safetensors %lld bytes\n", twin_dir.c_str(),
                static_cast<long long>(t.file_bytes));
    report["twin"] = {{"dir", twin_dir}, {"file_bytes", t.file_bytes}};
  }
  if (!report_path.empty()) std::ofstream(report_path) << report.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  return shardserve::run_reporting_errors("quantize", shardserve::run, argc, argv);
}
