// cpu_matmul_bench: the CPU forward pass's projections (kernels/cpu/matmul.h) at one model's
// decode shapes, against ceilings measured by this program in the same run on the same thread.
//
// One decode step reads every projection's weights once: per layer qkv [q + 2 kv, H], o [H, q],
// gate_up [2 F, H], down [H, F], then the LM head [V, H], each layer's weights distinct, so a
// step streams the whole float32 model (27 MB for the demo) as the engine does. At m rows
// (sequences in the step) its roofline time is the longer of
//   bytes / read bandwidth     (one thread summing a buffer of the weights' size: the demo's
//                               27 MB fit a 32 MB L3, so this is the L3's rate there; the
//                               rate from DRAM, over 256 MiB, is recorded beside it), and
//   2 m params / mul+add rate  (the rate: 8-lane multiply and add on registers, no memory, the
//                               instructions the kernel itself is built from: no FMA, see
//                               matmul.cc)
// and the figure reported is roofline time / measured time. Every ceiling and step time is the
// best over --rounds rounds (of --repeats steps each), since the machine may be shared; the load
// average is recorded beside them.
//
//   cpu_matmul_bench --model models/kjv-llama [--rows 1,2,4,8,16] [--repeats 8] [--rounds 5]
//                    [--out-json F --out-md F]
#include <CLI/CLI.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/lanes.h"
#include "kernels/cpu/matmul.h"
#include "model/model_config.h"

namespace shardserve::bench {
namespace {

using Clock = std::chrono::steady_clock;
using kernels::cpu::lanes::Lanes;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

[[gnu::always_inline]] inline float sum_body(const float* p, int64_t count) {
  // Four streams at once (the kernel reads four weight rows together), two accumulators each.
  const int64_t quarter = count / 4 / 16 * 16;
  Lanes a[8] = {};
  for (int64_t i = 0; i < quarter; i += 16)
    for (int s = 0; s < 4; ++s)
      for (int u = 0; u < 2; ++u) {
        Lanes v;
        kernels::cpu::lanes::load(v, p + s * quarter + i + 8 * u);
        a[2 * s + u] += v;
      }
  Lanes t = {};
  for (const Lanes& v : a) t += v;
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

// In the AVX2 or the baseline build as the kernel picks its own (lanes::dispatch), so that the
// ceilings are measured with the instructions the kernel runs.
float sum_buffer(const float* p, int64_t count) {
  float s = 0;
  kernels::cpu::lanes::dispatch([&]() __attribute__((always_inline)) { s = sum_body(p, count); });
  return s;
}

// Bytes per second one thread reads from a buffer of `bytes`: the best of 5 passes after one to
// warm it (a buffer that fits the last-level cache is read from there, as the weights are when
// they fit).
double read_bandwidth(std::size_t bytes) {
  std::vector<float> buf(bytes / sizeof(float), 1.0f);
  double best = 1e30;
  volatile float sink = 0;
  for (int pass = 0; pass < 6; ++pass) {
    const auto t0 = Clock::now();
    sink = sink + sum_buffer(buf.data(), static_cast<int64_t>(buf.size()));
    if (pass > 0) best = std::min(best, seconds_since(t0));
  }
  return buf.size() * sizeof(float) / best;
}

[[gnu::always_inline]] inline float mul_add_body(float seed, int64_t iterations) {
  // 12 independent accumulators: enough to cover the add latency on every pipe.
  Lanes a[12], b = {seed, seed, seed, seed, seed, seed, seed, seed};
  for (int u = 0; u < 12; ++u) a[u] = b * float(u);
  const Lanes c = b * 0.999f;
  for (int64_t i = 0; i < iterations; ++i)
#pragma GCC unroll 12
    for (int u = 0; u < 12; ++u) a[u] = a[u] * c + b;
  Lanes s = {};
  for (int u = 0; u < 12; ++u) s += a[u];
  return s[0];
}

float mul_add_loop(float seed, int64_t iterations) {
  float s = 0;
  kernels::cpu::lanes::dispatch(
      [&]() __attribute__((always_inline)) { s = mul_add_body(seed, iterations); });
  return s;
}

// Multiply-add FLOPs per second (2 per lane per step) on one thread, registers only.
double mul_add_rate() {
  const int64_t iterations = 20'000'000;
  double best = 1e30;
  volatile float sink = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = Clock::now();
    sink = sink + mul_add_loop(1.0f + pass, iterations);
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * 8 * 12 * iterations / best;
}

struct Projection {
  int64_t n, k;  // out, in features
};

double load_average() {
  double a = 0;
  return getloadavg(&a, 1) == 1 ? a : -1.0;
}

int run(int argc, char** argv) {
  CLI::App app{"The CPU projections at a model's decode shapes against measured ceilings"};
  std::string model_dir, out_json, out_md;
  std::vector<int64_t> rows = {1, 2, 4, 8, 16};
  int repeats = 8, rounds = 5;
  app.add_option("--model", model_dir, "HuggingFace model directory (its config.json)")->required();
  app.add_option("--rows", rows, "rows per step (sequences), comma-separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  app.add_option("--repeats", repeats, "steps timed per row count in each round")
      ->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "rounds of ceilings and steps; each figure's best is kept")
      ->check(CLI::PositiveNumber);
  app.add_option("--out-json", out_json, "write the results as JSON here");
  app.add_option("--out-md", out_md, "write the results as a markdown table here");
  CLI11_PARSE(app, argc, argv);
  omp_set_num_threads(1);  // the ceilings are one thread's; so is the server's default here

  const model::ModelConfig c = model::load_model_config(model_dir);
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  std::vector<Projection> step;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    step.push_back({c.q_size() + 2 * c.kv_size(), H});
    step.push_back({H, c.q_size()});
    step.push_back({2 * F, H});
    step.push_back({H, F});
  }
  step.push_back({c.vocab_size, H});

  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<std::vector<float>> weights;
  int64_t params = 0;
  for (const auto& p : step) {
    weights.emplace_back(p.n * p.k);
    for (auto& w : weights.back()) w = dist(rng);
    params += p.n * p.k;
  }
  const double bytes = params * sizeof(float);

  const double load_before = load_average();
  // Rounds: the ceilings and the steps measured in turn, each kept at its best, so that a
  // neighbour's burst on a shared machine spoils one round rather than one quantity.
  double bandwidth = 0, dram_bandwidth = 0, flop_rate = 0;
  const int64_t widest = std::max({c.vocab_size, 2 * F, H, c.q_size() + 2 * c.kv_size()});
  std::vector<std::vector<float>> xs, ys;
  for (int64_t m : rows) {
    xs.emplace_back(m * std::max(H, F));
    for (auto& v : xs.back()) v = dist(rng);
    ys.emplace_back(m * widest);
  }
  std::vector<double> best(rows.size(), 1e30);
  for (int round = 0; round < rounds; ++round) {
    bandwidth = std::max(bandwidth, read_bandwidth(static_cast<std::size_t>(bytes)));
    dram_bandwidth = std::max(dram_bandwidth, read_bandwidth(std::size_t{256} << 20));
    flop_rate = std::max(flop_rate, mul_add_rate());
    for (std::size_t r = 0; r < rows.size(); ++r)
      for (int rep = 0; rep < repeats + 1; ++rep) {  // the first warms the caches
        const auto t0 = Clock::now();
        for (std::size_t i = 0; i < step.size(); ++i)
          kernels::cpu::matmul_nt(xs[r].data(), weights[i].data(), ys[r].data(), rows[r],
                                  step[i].n, step[i].k);
        if (rep > 0) best[r] = std::min(best[r], seconds_since(t0));
      }
  }
  std::printf("read bandwidth %.2f GB/s at the weights' size (%.2f GB/s over 256 MiB), mul+add "
              "%.1f GFLOP/s (one thread); %s: %.1f MB of float32 weights per step\n",
              bandwidth / 1e9, dram_bandwidth / 1e9, flop_rate / 1e9, model_dir.c_str(),
              bytes / 1e6);

  nlohmann::json results = nlohmann::json::array();
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const int64_t m = rows[r];
    const double memory_s = bytes / bandwidth, compute_s = 2.0 * m * params / flop_rate;
    const double roofline_s = std::max(memory_s, compute_s);
    results.push_back({{"rows", m},
                       {"step_ms", best[r] * 1e3},
                       {"memory_floor_ms", memory_s * 1e3},
                       {"compute_floor_ms", compute_s * 1e3},
                       {"fraction_of_roofline", roofline_s / best[r]},
                       {"gflops", 2.0 * m * params / best[r] / 1e9}});
    std::printf("m=%3lld: %.3f ms (floor %.3f ms, %s-bound): %.0f %% of the roofline\n",
                static_cast<long long>(m), best[r] * 1e3, roofline_s * 1e3,
                memory_s >= compute_s ? "memory" : "compute", 100 * roofline_s / best[r]);
  }
  const double load_after = load_average();

  nlohmann::json out = {{"model", model_dir},
                        {"params", params},
                        {"weight_bytes", bytes},
                        {"threads", 1},
                        {"rounds", rounds},
                        {"repeats", repeats},
                        {"read_bandwidth_gbs", bandwidth / 1e9},
                        {"read_bandwidth_256mib_gbs", dram_bandwidth / 1e9},
                        {"mul_add_gflops", flop_rate / 1e9},
                        {"load_average", {load_before, load_after}},
                        {"steps", results}};
  if (!out_json.empty()) std::ofstream(out_json) << out.dump(2) << "\n";
  if (!out_md.empty()) {
    std::ofstream md(out_md);
    md << "# CPU projections at " << model_dir << "'s decode shapes\n\n"
       << "Made by `cpu_matmul_bench` (bench/cpu/). One thread; " << bytes / 1e6
       << " MB of float32 weights per step. Ceilings measured in the same run: read bandwidth "
       << bandwidth / 1e9 << " GB/s over a buffer of the weights' size (" << dram_bandwidth / 1e9
       << " GB/s over 256 MiB), 8-lane mul+add " << flop_rate / 1e9
       << " GFLOP/s. Load average " << load_before << " before, " << load_after << " after.\n\n"
       << "| rows | step ms | memory floor ms | compute floor ms | of the roofline | GFLOP/s |\n"
       << "| ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for (const auto& r : results) {
      char line[256];
      std::snprintf(line, sizeof line, "| %lld | %.3f | %.3f | %.3f | %.0f %% | %.1f |\n",
                    static_cast<long long>(r["rows"].get<int64_t>()), r["step_ms"].get<double>(),
                    r["memory_floor_ms"].get<double>(), r["compute_floor_ms"].get<double>(),
                    100 * r["fraction_of_roofline"].get<double>(), r["gflops"].get<double>());
      md << line;
    }
  }
  return 0;
}

}  // namespace
}  // namespace shardserve::bench

int main(int argc, char** argv) {
  try {
    return shardserve::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpu_matmul_bench: %s\n", e.what());
    return 1;
  }
}
