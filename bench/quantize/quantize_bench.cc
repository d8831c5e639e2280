// quantize_bench: seconds of each numeric step of the quantizer on the CPU (model/quant) and on
// the GPU (tools/quantize/cuda), on random matrices of the given shapes, and how far the two
// results are apart. One line per shape and step; --json writes them all.
//   quantize_bench [--shapes 512:256,256:256,1536:256,256:768] [--rows 8192] [--awq-rows 4096]
//                  [--group-size 128] [--bits 4] [--act-order] [--no-cpu] [--json out.json]
// Shapes are out:in of one fused linear (the defaults: kjv-llama's qkv, o, gate_up, down).
// Wall-clock seconds around each call, host <-> device copies included; the GPU does one
// untimed warm-up first (library initialisation). Without a device it times the CPU alone.
// Inputs: correlated activations x = z M + noise (M random of rank 8, channel scales from 0.1
// to 10), weights N(0, 0.02).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/quant/quantizer.h"
#include "tools/quantize/cuda/cuda_numerics.h"

namespace shardserve {
namespace {

using Clock = std::chrono::steady_clock;

template <typename F>
double seconds(F&& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<float> activations(int64_t rows, int64_t in, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int64_t kLatent = 8;  // rank of the shared component: correlated inputs
  std::vector<float> mix(kLatent * in), scale(in), x(rows * in);
  for (auto& v : mix) v = normal(rng);
  for (int64_t i = 0; i < in; ++i) scale[i] = std::pow(10.0f, 2.0f * (i % 17) / 16.0f - 1.0f);
  std::vector<float> z(kLatent);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : z) v = normal(rng);
    for (int64_t i = 0; i < in; ++i) {
      float acc = 0.5f * normal(rng);
      for (int64_t k = 0; k < kLatent; ++k) acc += z[k] * mix[k * in + i] / 3.0f;
      x[r * in + i] = acc * scale[i];
    }
  }
  return x;
}

int run(int argc, char** argv) {
  CLI::App app{"CPU vs GPU seconds of the quantizer's numeric steps"};
  std::string shapes = "512:256,256:256,1536:256,256:768", json_path;
  int64_t rows = 8192, awq_rows = 4096, group = 128;
  int bits = 4;
  bool act_order = false, no_cpu = false;
  app.add_option("--shapes", shapes, "out:in,... of the linears")->capture_default_str();
  app.add_option("--rows", rows, "calibration tokens of the Hessian")->capture_default_str();
  app.add_option("--awq-rows", awq_rows, "tokens of AWQ's output error")->capture_default_str();
  app.add_option("--group-size", group, "group size (-1: one per row)")->capture_default_str();
  app.add_option("--bits", bits, "GPTQ bits (4 or 8; AWQ is 4-bit)")->capture_default_str();
  app.add_flag("--act-order", act_order, "GPTQ act-order");
  app.add_flag("--no-cpu", no_cpu, "GPU only (shapes too large for the CPU's patience)");
  app.add_option("--json", json_path, "write the results here");
  CLI11_PARSE(app, argc, argv);

  require(!no_cpu || quantize::cuda_numerics_available(),
          "--no-cpu and no CUDA device: nothing to time");
  std::unique_ptr<quantize::CudaNumerics> gpu;
  std::mt19937 rng(1234);
  if (quantize::cuda_numerics_available()) {
    gpu = std::make_unique<quantize::CudaNumerics>();
    // warm-up: cuBLAS / cuSOLVER initialisation stays out of the timings
    const auto x = activations(64, 64, rng);
    std::vector<float> w(64 * 64, 0.01f);
    quant::QuantGrid g;
    g.group_size = 32;
    (void)gpu->gptq(w, 64, 64, x.data(), 64, g, {}, nullptr);
    (void)gpu->awq_search_scales(x.data(), 64, 64, {&w}, {64}, g, 2, nullptr);
  } else {
    std::printf("no CUDA device: CPU times only\n");
  }
  nlohmann::json results = nlohmann::json::array();
  std::printf("%-12s %-9s %10s %10s %8s  %s\n", "shape", "step", "cpu s", "gpu s", "speedup",
              "difference");
  std::stringstream list(shapes);
  for (std::string item; std::getline(list, item, ',');) {
    const auto colon = item.find(':');
    require(colon != std::string::npos, "--shapes: '{}' is not out:in", item);
    const int64_t out = std::stoll(item.substr(0, colon)), in = std::stoll(item.substr(colon + 1));
    const auto x = activations(rows, in, rng);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> w(out * in);
    for (auto& v : w) v = normal(rng);
    quant::QuantGrid grid;
    grid.bits = bits;
    grid.group_size = group;
    quant::GptqOptions opt;
    opt.act_order = act_order;
    const double weight = 2.0 / static_cast<double>(rows);
    auto line = [&](const char* step, double cpu_s, double gpu_s, const std::string& diff) {
      std::printf("%-12s %-9s %10.3f %10.3f %8.1f  %s\n", item.c_str(), step, cpu_s, gpu_s,
                  cpu_s > 0 && gpu_s > 0 ? cpu_s / gpu_s : 0.0, diff.c_str());
      results.push_back({{"shape", item}, {"step", step}, {"cpu_seconds", cpu_s},
                         {"gpu_seconds", gpu_s}, {"difference", diff}, {"rows", rows},
                         {"group_size", group}, {"act_order", act_order}});
    };

    const bool cpu = !no_cpu, both = gpu && cpu;  // differences only where both ran
    std::vector<double> h_gpu(in * in, 0.0), h_cpu(in * in, 0.0);
    double g_h = 0, c_h = 0;
    if (gpu) g_h = seconds([&] { gpu->accumulate_hessian(x.data(), rows, in, weight, h_gpu); });
    if (cpu) c_h = seconds([&] { quant::accumulate_hessian(x.data(), rows, in, weight, h_cpu); });
    std::string diff = "-";
    if (both) {
      double worst = 0;  // |difference| / sqrt(H_ii H_jj), the scale of the float error bound
      for (int64_t i = 0; i < in; ++i)
        for (int64_t j = 0; j < in; ++j)
          worst = std::max(worst, std::fabs(h_gpu[i * in + j] - h_cpu[i * in + j]) /
                                      std::sqrt(h_cpu[i * in + i] * h_cpu[j * in + j]));
      diff = fmt::format("max |dH| / sqrt(H_ii H_jj) {:.2e}", worst);
    }
    line("hessian", c_h, g_h, diff);

    // GPTQ from one Hessian (the GPU's where it ran), so that only the column loop differs.
    const std::vector<double>& h = gpu ? h_gpu : h_cpu;
    quant::GptqStats gs, cs;
    quant::QuantizedLinear gq, cq;
    double g_q = 0, c_q = 0;
    if (gpu) g_q = seconds([&] { gq = gpu->quantize_gptq(w, out, in, h, grid, opt, &gs); });
    if (cpu) c_q = seconds([&] { cq = quant::quantize_gptq(w, out, in, h, grid, opt, &cs); });
    diff = "-";
    if (both) {
      int64_t differ = 0;
      for (std::size_t k = 0; k < gq.q.size(); ++k) differ += gq.q[k] != cq.q[k];
      diff = fmt::format("codes differing {} / {}, loss {:.9g} vs {:.9g}", differ, gq.q.size(),
                         gs.loss, cs.loss);
    }
    line("gptq", c_q, g_q, diff);
    double g_f = 0;
    if (gpu) g_f = seconds([&] { (void)gpu->gptq(w, out, in, x.data(), rows, grid, opt, &gs); });
    line("h+gptq", c_h + c_q, g_f, gpu ? "GPU: the Hessian stays on the device" : "-");

    quant::QuantGrid ag = grid;  // AWQ: its own 4-bit asymmetric grid
    ag.style = quant::QuantGrid::Style::kAwq;
    ag.bits = 4;
    ag.sym = false;
    const int64_t m = std::min(rows, awq_rows);
    quant::AwqSearch ga, ca;
    double g_a = 0, c_a = 0;
    if (gpu) {
      g_a = seconds(
          [&] { ga = gpu->awq_search_scales(x.data(), m, in, {&w}, {out}, ag, 20, nullptr); });
    }
    if (cpu) {
      c_a = seconds(
          [&] { ca = quant::awq_search_scales(x.data(), m, in, {&w}, {out}, ag, 20, nullptr); });
    }
    diff = both ? fmt::format("alpha {:.2f} vs {:.2f}, mse {:.9g} vs {:.9g}", ga.alpha, ca.alpha,
                              ga.loss, ca.loss)
                : "-";
    line("awq", c_a, g_a, diff);
  }
  if (!json_path.empty()) std::ofstream(json_path) << results.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  return shardserve::run_reporting_errors("quantize_bench", shardserve::run, argc, argv);
}
