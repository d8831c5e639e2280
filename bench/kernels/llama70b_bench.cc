// Issue 17's first numbers: Llama-3.1-70B in 4 bits (GPTQ/AWQ g128 layout of
// kernels/cuda/quant_gemm.h) on one GPU, every figure beside its roofline measured in the same run.
//
//   1. Ceilings: device-to-device copy of 4 GiB (bytes read + written) and a bf16 8192^3
//      cuBLASLt product.
//   2. One layer's four projections (qkv, o, gate_up, down) at the TP 1/2/4/8 shard shapes and
//      batch (rows) 1, 8, 16, 32 (TP 1: 1 to 2048): the W4 decode kernel, the W4 tiled kernel
//      (exact group sums; at TP 1 from 16 rows also with weights rounded to bf16), the W4 dense
//      path (dequantize + cuBLASLt; at 16 rows the dequantize alone too) and bf16 cuBLASLt, each
//      as a fraction of the copy roofline of the bytes it must move (weights once +
//      activations). The L2 (60 MB) is flushed before each timed run.
//   3. The whole decode step through CudaModelRunner::forward (host packing, one copy in, the
//      80 layers, LM head, one copy of the logits out) with random 4-bit weights at TP = 1:
//      batch 1 to 256 at context 128, batch 1 at contexts 2048 and 8192, and a prefill of 2048
//      tokens. Roofline = the larger of (weights + LM head + KV bytes read) / copy bandwidth and
//      the step's FLOPs / the bf16 rate.
//
// usage: llama70b_bench [OUT.json] [--tp N] [--layers-only] [--batches M,M,...] (--help says
// what each does)
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "bench/kernels/median_timer.h"
#include "comm/collective.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/quant_gemm.h"
#include "messages/step_plan.h"
#include "model/model_config.h"
#include "worker/cuda/cuda_model_runner.h"
#include "worker/tensor_parallel.h"

namespace kc = shardserve::kernels::cuda;
using kc::bf16;
using kc::DeviceBuffer;
using nlohmann::json;

namespace {

constexpr int64_t kHidden = 8192, kFfn = 28672, kHeads = 64, kKvHeads = 8, kHeadDim = 128;
constexpr int64_t kLayers = 80, kVocab = 128256, kGroup = 128;

// Median device time of `runs` runs (bench/kernels/median_timer.h), 20 by default.
class Timer {
 public:
  double median_us(const std::function<void(cudaStream_t)>& op, int runs = 20) {
    return clock_.median_us(op, runs);
  }

 private:
  shardserve::bench::MedianTimer clock_;
};

struct Shape {
  const char* name;
  int64_t n, k;
};

std::vector<Shape> layer_shapes(int tp) {
  return {{"qkv", (kHeads + 2 * kKvHeads) / tp * kHeadDim, kHidden},
          {"o", kHidden, kHeads / tp * kHeadDim},
          {"gate_up", 2 * kFfn / tp, kHidden},
          {"down", kHidden, kFfn / tp}};
}

shardserve::model::ModelConfig llama70b() {
  shardserve::model::ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = kVocab;
  c.hidden_size = kHidden;
  c.intermediate_size = kFfn;
  c.num_hidden_layers = kLayers;
  c.num_attention_heads = kHeads;
  c.num_key_value_heads = kKvHeads;
  c.head_dim = kHeadDim;
  c.max_position_embeddings = 8192 + 64;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = shardserve::model::RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.tie_word_embeddings = false;
  return c;
}

// `batch` sequences each decoding one token at position context - 1 (or one prefill of
// `prefill` tokens), block tables laid out one after another.
shardserve::messages::StepPlan decode_plan(int64_t batch, int64_t context, int64_t block_size,
                                           int64_t prefill = 0) {
  shardserve::messages::StepPlan plan;
  plan.step_id = 1;
  const int64_t blocks_per_seq = (context + block_size - 1) / block_size;
  int32_t token_offset = 0;
  for (int64_t b = 0; b < batch; ++b) {
    shardserve::messages::SequenceWork s;
    s.seq_id = b + 1;
    s.num_tokens = static_cast<int32_t>(prefill > 0 ? prefill : 1);
    s.start_pos = static_cast<int32_t>(prefill > 0 ? 0 : context - 1);
    s.num_logits = 1;
    s.token_offset = token_offset;
    s.block_offset = static_cast<int32_t>(plan.block_ids.size());
    s.num_blocks = static_cast<int32_t>(blocks_per_seq);
    for (int64_t i = 0; i < blocks_per_seq; ++i)
      plan.block_ids.push_back(static_cast<int32_t>(b * blocks_per_seq + i));
    for (int32_t t = 0; t < s.num_tokens; ++t)
      plan.token_ids.push_back(static_cast<int32_t>((b * 7919 + t * 104729) % kVocab));
    token_offset += s.num_tokens;
    plan.seqs.push_back(s);
  }
  return plan;
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Issue 17's LLaMA-70B W4 benchmark (docs/PERF.md): ceilings, layer table, steps"};
  std::string out_path = "llama70b.json";
  int tp = 1;
  bool layers_only = false, steps_only = false;
  std::vector<int64_t> tp1_batches = {1, 2, 4, 8, 16, 32, 64, 128, 192, 256, 512, 1024, 1536, 2048};
  app.add_option("out", out_path, "the JSON result")->capture_default_str();
  app.add_option("--tp", tp, "the runner's shard (only 1 runs on one GPU)")
      ->check(CLI::IsMember({1, 2, 4, 8}))
      ->capture_default_str();
  app.add_flag("--layers-only", layers_only,
               "the ceilings and the TP 1 layer table alone (for a profiler: no other TP, no "
               "whole model)");
  app.add_flag("--steps-only", steps_only,
               "the ceilings and the whole model's decode steps at --batches alone (for a "
               "profiler: no layer table, no other context, no prefill)")
      ->excludes("--layers-only");
  app.add_option("--batches", tp1_batches, "the TP 1 layer table's rows (with --steps-only: "
                 "the decode steps' batches)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{2048}));
  CLI11_PARSE(app, argc, argv);
  if (!kc::cuda_device_available()) {
    std::printf("llama70b_bench: no CUDA device, nothing to measure\n");
    return 0;
  }
  try {
    cudaDeviceProp prop{};
    SHARDSERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize >> 20);
    json out;
    out["gpu"] = prop.name;
    out["tp"] = tp;
    out["date"] = today();
    Timer timer;

    // 1. Ceilings.
    double copy_bw = 0, bf16_flops = 0;
    {
      const std::size_t bytes = std::size_t{4} << 30;
      DeviceBuffer a(bytes, "copy source"), b(bytes, "copy destination");
      kc::fill_random_bytes(a.data(), bytes, 1, nullptr);
      SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());  // fills run on the legacy stream
      const double us = timer.median_us([&](cudaStream_t s) {
        SHARDSERVE_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s));
      }, 10);
      copy_bw = 2.0 * bytes / (us * 1e-6);
    }
    kc::GemmBf16 gemm;
    {
      const int64_t n = 8192;
      DeviceBuffer x(n * n * 2, "x"), w(n * n * 2, "w"), y(n * n * 2, "y");
      kc::fill_random_bf16(x.as<bf16>(), n * n, 1.0f, 0, 2, nullptr);
      kc::fill_random_bf16(w.as<bf16>(), n * n, 0.02f, 0, 3, nullptr);
      SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());
      const double us = timer.median_us([&](cudaStream_t s) {
        gemm.run(x.as<bf16>(), w.as<bf16>(), y.data(), {.m = n, .n = n, .k = n}, s);
      }, 10);
      bf16_flops = 2.0 * n * n * n / (us * 1e-6);
    }
    out["copy_tbps"] = copy_bw / 1e12;
    out["bf16_tflops"] = bf16_flops / 1e12;
    std::printf("copy %.2f TB/s, bf16 8192^3 %.0f TFLOP/s\n", copy_bw / 1e12, bf16_flops / 1e12);

    // 2. One layer's projections.
    json gemms = json::array();
    std::printf("\n| TP | batch | path | layer µs | weight MB | TB/s | of copy roofline |\n"
                "| --- | --- | --- | --- | --- | --- | --- |\n");
    for (int t : {1, 2, 4, 8}) {
      if (steps_only || (layers_only && t != 1)) break;
      const auto shapes = layer_shapes(t);
      struct Mats { DeviceBuffer codes, meta, dense; kc::W4Weights w4; };
      std::vector<Mats> mats;
      int64_t max_nk = 0;
      for (const Shape& sh : shapes) {
        Mats m;
        const int64_t groups = sh.k / kGroup;
        m.codes = DeviceBuffer(sh.n * sh.k / 2, "codes");
        m.meta = DeviceBuffer(sh.n * groups * 4, "meta");
        m.dense = DeviceBuffer(sh.n * sh.k * 2, "bf16 weight");
        kc::fill_random_bytes(m.codes.data(), m.codes.bytes(), 10 + t, nullptr);
        kc::fill_random_w4_meta(m.meta.as<uint32_t>(), sh.n * groups, 0.002f, 20 + t, nullptr);
        kc::fill_random_bf16(m.dense.as<bf16>(), sh.n * sh.k, 0.02f, 0, 30 + t, nullptr);
        m.w4 = {m.codes.as<uint8_t>(), m.meta.as<uint32_t>(), nullptr, sh.n, sh.k, kGroup};
        max_nk = std::max(max_nk, sh.n * sh.k);
        mats.push_back(std::move(m));
      }
      DeviceBuffer scratch_dense(max_nk * 2, "dense scratch");
      DeviceBuffer partial(std::size_t{128} << 20, "decode workspace");
      const int64_t max_m = 2048;
      DeviceBuffer x(max_m * kFfn * 2, "x"), y(max_m * 2 * kFfn * 4, "y");
      kc::fill_random_bf16(x.as<bf16>(), max_m * kFfn, 1.0f, 0, 40, nullptr);
      SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<int64_t> batches = {1, 8, 16, 32};
      if (t == 1) batches = tp1_batches;
      for (int64_t m : batches) {
        double w4_bytes = 0, bf_bytes = 0, act_bytes = 0;
        for (const Shape& sh : shapes) {
          w4_bytes += double(sh.n) * sh.k / 2 + double(sh.n) * (sh.k / kGroup) * 4;
          bf_bytes += double(sh.n) * sh.k * 2;
          act_bytes += double(m) * (sh.k * 2 + sh.n * 2);
        }
        struct Path { const char* name; double bytes; std::function<void(cudaStream_t)> run; };
        std::vector<Path> paths;
        std::deque<std::string> names;  // the sweep's path names (stable addresses)
        // The decode kernel at its default grid and, at TP 1 up to 16 rows, the grid sweep
        // that chose the default (kW4DecodeWarpsPerSm).
        std::vector<int> grids;
        if (m <= 256) grids.push_back(kc::kW4DecodeWarpsPerSm);
        if (t == 1 && m <= 16) grids.insert(grids.end(), {8, 16, 24, 48, 64});
        for (const int warps : grids) {
          const bool sweep = warps != kc::kW4DecodeWarpsPerSm;
          paths.push_back({sweep ? names.emplace_back("w4_decode_w" + std::to_string(warps)).c_str()
                                 : "w4_decode",
                           w4_bytes + act_bytes, [&, warps](cudaStream_t s) {
                             for (std::size_t i = 0; i < shapes.size(); ++i)
                               kc::w4_gemv(x.as<bf16>(), m, mats[i].w4, y.data(), shapes[i].n,
                                           kc::GemmOut::kBf16, partial.data(), partial.bytes(), s,
                                           warps);
                           }});
        }
        // The tiled kernel with each arithmetic (weights rounded to bf16: at TP 1 from 16 rows).
        auto tiled = [&](kc::W4TcArithmetic arithmetic) {
          return [&, arithmetic](cudaStream_t s) {
            for (std::size_t i = 0; i < shapes.size(); ++i)
              kc::w4_gemm_tc(x.as<bf16>(), m, mats[i].w4, y.data(), shapes[i].n,
                             kc::GemmOut::kBf16, partial.data(), partial.bytes(), s, arithmetic);
          };
        };
        paths.push_back({"w4_tiled", w4_bytes + act_bytes,
                         tiled(kc::W4TcArithmetic::kExactGroups)});
        if (t == 1 && m >= 16) {
          paths.push_back({"w4_tiled_bf16w", w4_bytes + act_bytes,
                           tiled(kc::W4TcArithmetic::kBf16Weights)});
        }
        if (m >= 8) {  // the wgmma kernel (rounded weights)
          paths.push_back({"w4_wgmma", w4_bytes + act_bytes, [&](cudaStream_t s) {
                             for (std::size_t i = 0; i < shapes.size(); ++i)
                               kc::w4_gemm_wgmma(x.as<bf16>(), m, mats[i].w4, y.data(),
                                                 shapes[i].n, kc::GemmOut::kBf16, partial.data(),
                                                 partial.bytes(), s);
                           }});
        }
        if (m >= 16) {
          paths.push_back({"w4_dequant_gemm", w4_bytes + act_bytes, [&](cudaStream_t s) {
                             for (std::size_t i = 0; i < shapes.size(); ++i) {
                               kc::w4_dequantize(mats[i].w4, scratch_dense.as<bf16>(), s);
                               gemm.run(x.as<bf16>(), scratch_dense.as<bf16>(), y.data(),
                                        {.m = m, .n = shapes[i].n, .k = shapes[i].k}, s);
                             }
                           }});
        }
        if (m == 16) {  // the dense path's first half alone: codes read, bf16 written
          paths.push_back({"w4_dequantize", w4_bytes + bf_bytes, [&](cudaStream_t s) {
                             for (std::size_t i = 0; i < shapes.size(); ++i)
                               kc::w4_dequantize(mats[i].w4, scratch_dense.as<bf16>(), s);
                           }});
        }
        paths.push_back({"bf16_cublaslt", bf_bytes + act_bytes, [&](cudaStream_t s) {
                           for (std::size_t i = 0; i < shapes.size(); ++i)
                             gemm.run(x.as<bf16>(), mats[i].dense.as<bf16>(), y.data(),
                                      {.m = m, .n = shapes[i].n, .k = shapes[i].k}, s);
                         }});
        for (const Path& p : paths) {
          const double us = timer.median_us(p.run);
          const double bw = p.bytes / (us * 1e-6);
          double flops = 0;
          for (const Shape& sh : shapes) flops += 2.0 * m * sh.n * sh.k;
          std::printf("| %d | %lld | %s | %.1f | %.0f | %.2f | %.0f%% |\n", t,
                      static_cast<long long>(m), p.name, us, p.bytes / 1e6, bw / 1e12,
                      100 * bw / copy_bw);
          gemms.push_back({{"tp", t}, {"batch", m}, {"path", p.name}, {"layer_us", us},
                           {"bytes", p.bytes}, {"tbps", bw / 1e12},
                           {"fraction_of_copy_roofline", bw / copy_bw},
                           {"tflops", flops / (us * 1e-6) / 1e12},
                           {"fraction_of_bf16_rate", flops / (us * 1e-6) / bf16_flops}});
          std::fflush(stdout);
        }
      }
    }
    out["layer_gemms"] = gemms;

    // 3. The whole model, TP = 1 (this GPU), random 4-bit weights.
    if (tp == 1 && !layers_only) {
      const auto config = llama70b();
      const auto shard = shardserve::worker::make_shard(config, 0, 1);
      shardserve::comm::SingleRankCollective group;
      shardserve::worker::cuda::CudaRunnerOptions opt;
      opt.block_size = 16;
      opt.num_kv_blocks = 4096;
      opt.max_tokens_per_step = 2048;
      opt.max_logits_per_step = 256;
      const auto t0 = std::chrono::steady_clock::now();
      shardserve::worker::cuda::CudaModelRunner runner(config, shard,
                                                       shardserve::worker::cuda::RandomWeightsSpec{kGroup, 7},
                                                       opt, group);
      const double load_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto& mem = runner.memory();
      std::printf("\n70B W4 g128 runner: weights %s, activations %s, KV %s (%lld blocks), made in %.1f s\n",
                  kc::format_bytes(mem.weights_bytes).c_str(),
                  kc::format_bytes(mem.activation_bytes).c_str(),
                  kc::format_bytes(mem.kv_bytes).c_str(),
                  static_cast<long long>(mem.num_kv_blocks), load_s);
      // Bytes a decode step must read: every layer weight once, the bf16 LM head, and the KV.
      double layer_w4 = 0;
      for (const Shape& sh : layer_shapes(1))
        layer_w4 += double(sh.n) * sh.k / 2 + double(sh.n) * (sh.k / kGroup) * 4;
      const double weight_bytes = kLayers * layer_w4 + double(kVocab) * kHidden * 2;
      auto kv_bytes = [&](int64_t batch, int64_t ctx) {
        return double(batch) * ctx * kLayers * 2 * kKvHeads * kHeadDim * 2;
      };
      // greedy: forward_greedy (argmax + log-softmax on the GPU, 12 bytes a row back: what the
      // served worker runs for greedy steps) instead of forward (every logit back to the host).
      auto wall_ms = [&](const shardserve::messages::StepPlan& plan, int runs, bool greedy = false) {
        auto step = [&] {
          if (greedy) {
            runner.forward_greedy(plan);
          } else {
            runner.forward(plan);
          }
        };
        for (int i = 0; i < 2; ++i) step();
        std::vector<double> ms(runs);
        for (int i = 0; i < runs; ++i) {
          const auto a = std::chrono::steady_clock::now();
          step();
          ms[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
        }
        std::nth_element(ms.begin(), ms.begin() + runs / 2, ms.end());
        return ms[runs / 2];
      };
      json steps = json::object(), steps_graph = json::object(), steps_greedy = json::object(),
           steps_roof = json::object(), tps = json::object();
      std::printf("\n| batch | context | eager step ms | graph step ms | graph + GPU greedy ms | "
                  "roofline ms | of roofline (graph) | tokens/s (graph) |\n"
                  "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
      // A step's FLOPs: 2 per weight and token (the attention's are < 1 % at context 128).
      double layer_params = 0;
      for (const Shape& sh : layer_shapes(1)) layer_params += double(sh.n) * sh.k;
      const double token_flops = 2 * (kLayers * layer_params + double(kVocab) * kHidden);
      std::vector<int64_t> step_batches = {1, 8, 16, 32, 64, 128, 256};
      if (steps_only) step_batches = tp1_batches;
      for (int64_t batch : step_batches) {
        const auto plan = decode_plan(batch, 128, 16);
        runner.set_cuda_graphs(false);
        const double ms = wall_ms(plan, 10);
        runner.set_cuda_graphs(true);
        const double gms = wall_ms(plan, 10);
        const double greedy_ms = wall_ms(plan, 10, true);
        runner.set_cuda_graphs(false);
        const double roof = std::max((weight_bytes + kv_bytes(batch, 128)) / copy_bw,
                                     batch * token_flops / bf16_flops) * 1e3;
        steps[std::to_string(batch)] = ms;
        steps_graph[std::to_string(batch)] = gms;
        steps_greedy[std::to_string(batch)] = greedy_ms;
        steps_roof[std::to_string(batch)] = roof;
        tps[std::to_string(batch)] = batch * 1e3 / gms;
        std::printf("| %lld | 128 | %.2f | %.2f | %.2f | %.2f | %.0f%% | %.0f |\n",
                    static_cast<long long>(batch), ms, gms, greedy_ms, roof, 100 * roof / gms,
                    batch * 1e3 / gms);
        std::fflush(stdout);
      }
      out["step_ms_by_batch_graph"] = steps_graph;
      out["step_ms_by_batch_graph_greedy"] = steps_greedy;
      out["step_ms_by_batch"] = steps;
      if (steps_only) {
        std::ofstream(out_path) << out.dump(2) << "\n";
        return 0;
      }
      json by_ctx = json::object(), roof_ctx = json::object();
      for (int64_t ctx : {128, 2048, 8192}) {
        runner.set_cuda_graphs(true);
        const double ms = ctx == 128 ? steps_graph["1"].get<double>() : wall_ms(decode_plan(1, ctx, 16), 10);
        runner.set_cuda_graphs(false);
        const double roof = (weight_bytes + kv_bytes(1, ctx)) / copy_bw * 1e3;
        by_ctx[std::to_string(ctx)] = ms;
        roof_ctx[std::to_string(ctx)] = roof;
        std::printf("| 1 | %lld | | %.2f | | %.2f | %.0f%% | %.0f |\n", static_cast<long long>(ctx),
                    ms, roof, 100 * roof / ms, 1e3 / ms);
      }
      const double prefill_ms = wall_ms(decode_plan(1, 2048, 16, 2048), 5);
      const double prefill_flops = 2.0 * kLayers * layer_params * 2048;
      std::printf("prefill 2048 tokens: %.1f ms = %.0f tokens/s, %.0f TFLOP/s in the projections "
                  "(%.0f%% of the bf16 rate)\n", prefill_ms, 2048e3 / prefill_ms,
                  prefill_flops / (prefill_ms * 1e-3) / 1e12,
                  100 * prefill_flops / (prefill_ms * 1e-3) / bf16_flops);
      out["weights_bytes_per_token"] = weight_bytes;
      out["decode_ms_per_token"] = by_ctx;
      out["roofline_ms_per_token"] = roof_ctx;
      out["roofline_step_ms_by_batch"] = steps_roof;
      out["tokens_per_s_by_batch"] = tps;
      out["prefill_tokens_per_s"] = 2048e3 / prefill_ms;
      out["prefill_ms_2048"] = prefill_ms;
      out["serving"] = nullptr;  // written by bench/serving/serving_bench.py --merge-into
      out["memory"] = {{"weights", mem.weights_bytes}, {"activations", mem.activation_bytes},
                       {"kv", mem.kv_bytes}};
      out["timing"] = "decode/prefill: host wall time of CudaModelRunner::forward (median of 10 "
                      "/ 5 after 2 warm-ups); step_ms_by_batch eager launches, step_ms_by_batch_graph and "
                      "decode_ms_per_token replayed CUDA graphs; step_ms_by_batch_graph_greedy the "
                      "graphs with forward_greedy (no logits copied to the host)";
    }
    std::ofstream(out_path) << out.dump(2) << "\n";
    std::printf("wrote %s\n", out_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llama70b_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
