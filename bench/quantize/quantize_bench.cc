// quantize_bench: seconds of each numeric step of the quantizer on the CPU (model/quant) and on
// the GPU (tools/quantize/cuda), on random matrices of the given shapes, and how far the two
// results are apart. One line per shape and step; --json writes them all.
//   quantize_bench [--shapes 512:256,256:256,1536:256,256:768] [--rows 8192] [--awq-rows 4096]
//                  [--group-size 128] [--act-order] [--no-cpu] [--json out.json]
// Shapes are out:in of one fused linear (the defaults: kjv-llama's qkv, o, gate_up, down).
// Wall-clock seconds around each call, host <-> device copies included; the GPU does one
// untimed warm-up first (library initialisation). Inputs: correlated activations
// x = z M (M random, channel scales from 0.1 to 10), weights N(0, 0.02).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
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
  constexpr int64_t kLatent = 32;  // rank of the shared component: correlated inputs
  std::vector<float> mix(kLatent * in), scale(in), x(rows * in);
  for (auto& v : mix) v = normal(rng);
  for (int64_t i = 0; i < in; ++i) scale[i] = std::pow(10.0f, 2.0f * (i % 17) / 16.0f - 1.0f);
  std::vector<float> z(kLatent);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : z) v = normal(rng);
    for (int64_t i = 0; i < in; ++i) {
      float acc = 0.5f * normal(rng);
      for (int64_t k = 0; k < kLatent; ++k) acc += z[k] * mix[k * in + i] / 6.0f;
      x[r * in + i] = acc * scale[i];
    }
  }
  return x;
}

int run(int argc, char** argv) {
  CLI::App app{"CPU vs GPU seconds of the quantizer's numeric steps"};
  std::string shapes = "512:256,256:256,1536:256,256:768", json_path;
  int64_t rows = 8192, awq_rows = 4096, group = 128;
  bool act_order = false, no_cpu = false;
  app.add_option("--shapes", shapes, "out:in,... of the linears")->capture_default_str();
  app.add_option("--rows", rows, "calibration tokens of the Hessian")->capture_default_str();
  app.add_option("--awq-rows", awq_rows, "tokens of AWQ's output error")->capture_default_str();
  app.add_option("--group-size", group, "group size (-1: one per row)")->capture_default_str();
  app.add_flag("--act-order", act_order, "GPTQ act-order");
  app.add_flag("--no-cpu", no_cpu, "GPU only (shapes too large for the CPU's patience)");
  app.add_option("--json", json_path, "write the results here");
  CLI11_PARSE(app, argc, argv);

  quantize::CudaNumerics gpu;
  std::mt19937 rng(1234);
  {  // warm-up: cuBLAS / cuSOLVER initialisation stays out of the timings
    const auto x = activations(64, 64, rng);
    std::vector<float> w(64 * 64, 0.01f);
    quant::QuantGrid g;
    g.group_size = 32;
    (void)gpu.gptq(w, 64, 64, x.data(), 64, g, {}, nullptr);
    (void)gpu.awq_search_scales(x.data(), 64, 64, {&w}, {64}, g, 2, nullptr);
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
    grid.group_size = group;
    quant::GptqOptions opt;
    opt.act_order = act_order;
    const double weight = 2.0 / static_cast<double>(rows);
    auto line = [&](const char* step, double cpu_s, double gpu_s, const std::string& diff) {
      std::printf("%-12s %-9s %10.3f %10.3f %8.1f  %s\n", item.c_str(), step, cpu_s, gpu_s,
                  cpu_s > 0 ? cpu_s / gpu_s : 0.0, diff.c_str());
      results.push_back({{"shape", item}, {"step", step}, {"cpu_seconds", cpu_s},
                         {"gpu_seconds", gpu_s}, {"difference", diff}, {"rows", rows},
                         {"group_size", group}, {"act_order", act_order}});
    };

    std::vector<double> h_gpu(in * in, 0.0), h_cpu(in * in, 0.0);
    const double g_h = seconds([&] { gpu.accumulate_hessian(x.data(), rows, in, weight, h_gpu); });
    double c_h = 0;
    std::string h_diff = "-";
    if (!no_cpu) {
      c_h = seconds([&] { quant::accumulate_hessian(x.data(), rows, in, weight, h_cpu); });
      double worst = 0;  // |difference| / sqrt(H_ii H_jj), the scale of the float error bound
      for (int64_t i = 0; i < in; ++i)
        for (int64_t j = 0; j < in; ++j)
          worst = std::max(worst, std::fabs(h_gpu[i * in + j] - h_cpu[i * in + j]) /
                                      std::sqrt(h_cpu[i * in + i] * h_cpu[j * in + j]));
      char buf[64];
      std::snprintf(buf, sizeof buf, "max |dH|/sqrt(HiiHjj) %.2e", worst);
      h_diff = buf;
    }
    line("hessian", c_h, g_h, h_diff);

    quant::GptqStats gs, cs;
    quant::QuantizedLinear gq, cq;
    const double g_q = seconds([&] { gq = gpu.quantize_gptq(w, out, in, h_gpu, grid, opt, &gs); });
    double c_q = 0;
    std::string q_diff = "-";
    if (!no_cpu) {
      c_q = seconds([&] { cq = quant::quantize_gptq(w, out, in, h_gpu, grid, opt, &cs); });
      int64_t differ = 0;
      for (std::size_t k = 0; k < gq.q.size(); ++k) differ += gq.q[k] != cq.q[k];
      char buf[96];
      std::snprintf(buf, sizeof buf, "codes differing %lld / %zu, loss %.6g vs %.6g",
                    static_cast<long long>(differ), gq.q.size(), gs.loss, cs.loss);
      q_diff = buf;
    }
    line("gptq", c_q, g_q, q_diff);
    const double g_f = seconds([&] { (void)gpu.gptq(w, out, in, x.data(), rows, grid, opt, &gs); });
    line("both", no_cpu ? 0.0 : c_h + c_q, g_f, "GPU: Hessian kept on the device");

    if (group == -1 || group % 32 == 0) {  // AWQ: 4-bit, its own grid
      quant::QuantGrid ag = grid;
      ag.style = quant::QuantGrid::Style::kAwq;
      ag.sym = false;
      const int64_t m = std::min(rows, awq_rows);
      quant::AwqSearch ga, ca;
      const double g_a =
          seconds([&] { ga = gpu.awq_search_scales(x.data(), m, in, {&w}, {out}, ag, 20, nullptr); });
      double c_a = 0;
      std::string a_diff = "-";
      if (!no_cpu) {
        c_a = seconds(
            [&] { ca = quant::awq_search_scales(x.data(), m, in, {&w}, {out}, ag, 20, nullptr); });
        char buf[96];
        std::snprintf(buf, sizeof buf, "alpha %.2f vs %.2f, mse %.6g vs %.6g", ga.alpha, ca.alpha,
                      ga.loss, ca.loss);
        a_diff = buf;
      }
      line("awq", c_a, g_a, a_diff);
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << results.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  try {
    return shardserve::run(argc, argv);
  } catch (const shardserve::Error& e) {
    std::fprintf(stderr, "quantize_bench: %s\n", e.what());
    return 1;
  }
}
