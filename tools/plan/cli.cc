#include "tools/plan/cli.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "tools/plan/benchmark_result.h"
#include "tools/plan/comparison.h"
#include "tools/plan/plan.h"
#include "tools/plan/plot_runner.h"
#include "tools/plan/report_json.h"
#include "tools/plan/report_markdown.h"

#ifndef SHARDSERVE_PLOT_SCRIPT
#define SHARDSERVE_PLOT_SCRIPT "tools/plan/plot_plan.py"
#endif

namespace shardserve::planner {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct Options {
  std::string model;
  std::string gpu;
  std::string ceilings = "datasheet";
  std::optional<double> memory_gib, bandwidth_tbps, tflops, link_gbps;
  std::vector<int64_t> tp = {1};
  int64_t replicas = 1;
  std::optional<std::string> weights;  // default: the checkpoint's quantization, else bf16
  std::string kv_dtype = "bf16";
  std::vector<int64_t> contexts = {2048, 8192, 32768, 131072};
  std::vector<int64_t> batches = {1, 8, 32, 64, 128};
  std::vector<int64_t> prompts;  // empty: the contexts
  int64_t block_size = 16;
  double kv_fraction = 0.9;
  double reserve_gib = 1.0;
  double acceptance = 0.8;
  int64_t spec_k = 4;
  double draft_cost = 0.05;
  std::string json_path;
  std::string plots_dir;
  std::string plot_format = "png";
  std::string plot_script = SHARDSERVE_PLOT_SCRIPT;
  std::string python = "python3";
  std::string measured_path;
  bool list_presets = false;
};

void add_options(CLI::App& app, Options& o) {
  app.add_option("--model", o.model,
                 "model preset (see --list-presets), a model directory with config.json, or a "
                 "config.json file");
  app.add_option("--gpu", o.gpu, "GPU preset: h100, h200, a100, l40s");
  app.add_option("--ceilings", o.ceilings,
                 "datasheet (default) or measured (our H200 measurement: 4.24 TB/s copy, 790 "
                 "TFLOP/s bf16 cuBLAS)")
      ->check(CLI::IsMember({"datasheet", "measured"}));
  app.add_option("--memory-gib", o.memory_gib, "override GPU memory, GiB");
  app.add_option("--bandwidth-tbps", o.bandwidth_tbps, "override HBM bandwidth, TB/s");
  app.add_option("--tflops", o.tflops, "override dense bf16 rate, TFLOP/s");
  app.add_option("--link-gbps", o.link_gbps, "override GPU-to-GPU bandwidth per direction, GB/s");
  app.add_option("--tp", o.tp, "tensor-parallel sizes, comma-separated")->delimiter(',');
  app.add_option("--replicas", o.replicas, "data-parallel replicas of TP GPUs each");
  app.add_option("--weights", o.weights,
                 "bf16, fp16, int8 (per channel), int4 (= int4-g128), int4-g<N>, int8-g<N>; "
                 "default: the checkpoint's quantization_config, else bf16");
  app.add_option("--kv-dtype", o.kv_dtype, "bf16, fp16, fp32, fp8");
  app.add_option("--context", o.contexts, "context lengths, comma-separated")->delimiter(',');
  app.add_option("--batch", o.batches, "batch sizes, comma-separated")->delimiter(',');
  app.add_option("--prompt", o.prompts, "prefill prompt lengths (default: the contexts)")
      ->delimiter(',');
  app.add_option("--block-size", o.block_size, "tokens per KV block");
  app.add_option("--kv-fraction", o.kv_fraction,
                 "share of the memory left after weights and reserve that the KV pool takes");
  app.add_option("--reserve-gib", o.reserve_gib,
                 "memory kept from the KV pool besides weights: CUDA context, workspaces, "
                 "activations");
  app.add_option("--spec-acceptance", o.acceptance, "speculative decoding acceptance rate a");
  app.add_option("--spec-k", o.spec_k, "speculative decoding draft tokens per verify K");
  app.add_option("--draft-cost", o.draft_cost,
                 "draft forward pass time / target forward pass time c");
  app.add_option("--json", o.json_path, "write the JSON report to this file ('-' for stdout)");
  app.add_option("--plots", o.plots_dir, "write plots (and plan.json) into this directory");
  app.add_option("--plot-format", o.plot_format, "png or svg")
      ->check(CLI::IsMember({"png", "svg"}));
  app.add_option("--plot-script", o.plot_script, "path to plot_plan.py");
  app.add_option("--python", o.python,
                 "interpreter with matplotlib that runs the plot script (e.g. /usr/bin/python3)");
  app.add_option("--measured", o.measured_path,
                 "benchmark JSON whose numbers are printed next to the predictions");
  app.add_flag("--list-presets", o.list_presets, "print the model and GPU presets and exit");
}

int64_t gib_to_bytes(double gib, const char* flag) {
  require(gib >= 0 && std::isfinite(gib), "{} must not be negative, got {}", flag, gib);
  return static_cast<int64_t>(std::llround(gib * kGiB));
}

GpuSpec resolve_gpu(const Options& o) {
  GpuSpec spec;
  std::vector<std::string> overridden;
  if (!o.gpu.empty()) {
    spec = gpu_preset(o.gpu);
    if (o.ceilings == "measured") spec = with_measured_ceilings(spec);
  } else {
    require(o.memory_gib && o.bandwidth_tbps && o.tflops,
            "give --gpu (h100, h200, a100, l40s) or all of --memory-gib, --bandwidth-tbps and "
            "--tflops");
    require(o.ceilings == "datasheet", "--ceilings measured needs --gpu h200");
    spec.name = "custom GPU";
    spec.link_bytes_per_s = 32e9;  // PCIe Gen4 x16 per direction, unless --link-gbps says more
    spec.source = "given on the command line";
  }
  if (o.memory_gib) {
    require(*o.memory_gib > 0, "--memory-gib must be positive, got {}", *o.memory_gib);
    spec.memory_bytes = gib_to_bytes(*o.memory_gib, "--memory-gib");
    overridden.push_back("memory");
  }
  if (o.bandwidth_tbps) {
    spec.bandwidth_bytes_per_s = *o.bandwidth_tbps * 1e12;
    overridden.push_back("bandwidth");
  }
  if (o.tflops) {
    spec.flops_per_s = *o.tflops * 1e12;
    overridden.push_back("FLOP rate");
  }
  if (o.link_gbps) {
    spec.link_bytes_per_s = *o.link_gbps * 1e9;
    overridden.push_back("link");
  }
  if (!o.gpu.empty() && !overridden.empty()) {
    spec.source += fmt::format("; {} from the command line", fmt::join(overridden, ", "));
  }
  validate_gpu_spec(spec);
  return spec;
}

PlanRequest build_request(const Options& o) {
  require(!o.model.empty(), "--model is required (a preset, a model directory or a config.json)");
  PlanRequest r;
  r.model = load_model_spec(o.model);
  r.gpu = resolve_gpu(o);
  r.tp_sizes = o.tp;
  r.replicas = o.replicas;
  if (o.weights) {
    r.weights = model::parse_weight_format(*o.weights);
  } else if (r.model.config.quantization) {
    r.weights = model::weight_format_of(*r.model.config.quantization);
    r.weights_origin = "from the checkpoint's quantization_config";
  } else {
    r.weights = model::parse_weight_format("bf16");
  }
  r.kv_dtype = model::parse_kv_dtype(o.kv_dtype);
  r.contexts = o.contexts;
  r.batches = o.batches;
  r.prompts = o.prompts.empty() ? o.contexts : o.prompts;
  r.block_size = o.block_size;
  r.kv_fraction = o.kv_fraction;
  r.reserve_bytes = gib_to_bytes(o.reserve_gib, "--reserve-gib");
  r.speculative = {o.acceptance, o.spec_k, o.draft_cost};
  return r;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  require(out.good(), "cannot write {}", path);
  out << text;
  require(out.good(), "writing {} failed", path);
}

}  // namespace

int run_plan_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"plan: size a shardserve deployment (memory, capacity, roofline speed)", "plan"};
  Options o;
  add_options(app, o);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  try {
    if (o.list_presets) {
      out << "models: " << fmt::format("{}", fmt::join(model_preset_names(), ", ")) << "\n"
          << "gpus: " << fmt::format("{}", fmt::join(gpu_preset_names(), ", ")) << "\n";
      return 0;
    }
    const PlanRequest request = build_request(o);
    const Plan plan = make_plan(request);
    std::optional<Comparison> comparison;
    if (!o.measured_path.empty()) {
      comparison = compare_with_benchmark(request, load_benchmark_result(o.measured_path));
    }
    const nlohmann::json json = plan_to_json(plan, comparison);
    if (o.json_path == "-") {
      out << json.dump(2) << "\n";
    } else {
      out << render_markdown(plan, comparison);
      if (!o.json_path.empty()) write_text(o.json_path, json.dump(2) + "\n");
    }
    if (!o.plots_dir.empty()) {
      write_plots(json, o.plots_dir, o.plot_script, o.python, o.plot_format);
    }
    return 0;
  } catch (const Error& e) {
    err << "plan: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace shardserve::planner
