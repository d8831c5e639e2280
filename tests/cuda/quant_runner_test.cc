// CudaModelRunner on quantized checkpoints (GPTQ and AWQ, 4-bit) against the CPU engine on the
// same files: the demo model models/kjv-llama quantized here by the quantize tool's library
// (tools/quantize/pipeline.h: RTN, and GPTQ with act-order on a few calibration windows), so
// every run uses a freshly written checkpoint. The CPU engine dequantizes each linear to float32
// at load (worker/llama_weights.cc); the GPU keeps them 4-bit (kernels/cuda/quant_gemm.h).
// Checked: every projection took the W4 path (none fell back to dense), prefill logits within
// bf16 tolerance, greedy tokens equal (a divergence only where the CPU's margin is bf16 noise),
// and each tensor-parallel rank's 4-bit slices dequantize to exactly the CPU's slices.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>

#include <unistd.h>

#include "common/half.h"
#include "model/model_config.h"
#include "model/quant/writer.h"
#include "model/safetensors.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/worker/plan_builder.h"
#include "tools/quantize/pipeline.h"
#include "worker/cuda/cuda_model_runner.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace shardserve::worker::cuda {
namespace {

namespace fs = std::filesystem;
namespace kc = kernels::cuda;
using testing_support::make_plan;

fs::path demo_model() {
  // SHARDSERVE_MODELS_DIR: where models/ is when the binary runs away from its source tree.
  const char* env = std::getenv("SHARDSERVE_MODELS_DIR");
  return (env != nullptr ? fs::path(env) : fs::path(SHARDSERVE_SOURCE_DIR) / "models") /
         "kjv-llama";
}

struct Variant {
  const char* name;
  quantize::Method method;
  quant::WriteOptions::Format format;
  int64_t group;
  bool desc_act;
};

const Variant kVariants[] = {
    {"rtn_gptq4_g128", quantize::Method::kRtn, quant::WriteOptions::Format::kGptq, 128, false},
    {"gptq4_g64_act_order", quantize::Method::kGptq, quant::WriteOptions::Format::kGptq, 64, true},
    {"rtn_awq4_g128", quantize::Method::kRtn, quant::WriteOptions::Format::kAwq, 128, false},
    {"rtn_gptq4_per_channel", quantize::Method::kRtn, quant::WriteOptions::Format::kGptq, -1, false},
    {"rtn_awq4_g32", quantize::Method::kRtn, quant::WriteOptions::Format::kAwq, 32, false},
};

std::vector<int32_t> random_ids(int64_t n, uint32_t seed, int64_t vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Written once per variant and process (the directory name carries the process id, so a
// checkpoint is never reused across runs).
fs::path quantized_demo(const Variant& v) {
  const fs::path src = demo_model();
  const fs::path out = fs::path(::testing::TempDir()) /
                       (std::string("cuda_quant_") + v.name + "_" + std::to_string(::getpid()));
  if (fs::exists(out / "model.safetensors")) return out;
  quantize::Options o;
  o.method = v.method;
  o.format = v.format;
  o.bits = 4;
  o.group_size = v.group;
  o.sym = v.format == quant::WriteOptions::Format::kGptq;
  o.desc_act = v.desc_act;
  o.seq_len = 64;
  o.awq_tokens = 256;
  const auto calib = quantize::calibration_windows(random_ids(64 * 4, 9, 8000), 8176, 64, 4);
  const auto result = quantize::quantize_model(src, calib, o);
  quant::WriteOptions wo;
  wo.format = v.format;
  wo.sym = o.sym;
  wo.desc_act = v.desc_act;
  quant::write_quantized_model(src, out, result.linears, result.overrides, wo);
  return out;
}

double relative_error(const float* a, const float* b, int64_t n) {
  return kc::testing::relative_error(std::vector<float>(a, a + n), std::vector<float>(b, b + n));
}

TEST(CudaQuantRunner, LogitsAndGreedyTokensMatchTheCpuEngine) {
  SHARDSERVE_REQUIRE_GPU();
  if (!fs::exists(demo_model() / "model.safetensors")) GTEST_SKIP() << "no " << demo_model();
  for (const Variant& v : kVariants) {
    SCOPED_TRACE(v.name);
    const fs::path dir = quantized_demo(v);
    const auto config = model::load_model_config(dir);
    ASSERT_TRUE(config.quantization.has_value());
    const auto ckpt = model::Checkpoint::open(dir);
    const auto shard = make_shard(config, 0, 1);
    comm::SingleRankCollective group;
    constexpr int64_t kBlocks = 64, kBlockSize = 16;
    ModelRunner cpu(config, shard, load_llama_weights(ckpt, config, shard), kBlocks, kBlockSize,
                    group);
    CudaRunnerOptions opt;
    opt.block_size = kBlockSize;
    opt.num_kv_blocks = kBlocks;
    opt.max_tokens_per_step = 256;
    opt.max_logits_per_step = 256;
    CudaModelRunner gpu(config, shard, ckpt, opt, group);
    for (const auto& f : gpu.weights().dense_fallbacks()) std::printf("dense fallback: %s\n", f.c_str());
    EXPECT_EQ(gpu.weights().num_w4_linears(), 4 * config.num_hidden_layers);
    EXPECT_TRUE(gpu.weights().dense_fallbacks().empty());

    // Prefills of 100 tokens (the prefill path: dequantize + cuBLASLt) and 29 (the tensor-core
    // decode kernel, passes of 16 and 13 rows), all positions' logits.
    std::vector<int32_t> blocks(8);
    std::iota(blocks.begin(), blocks.end(), 0);
    double worst = 0;
    for (int n : {100, 29}) {
      const auto ids = random_ids(n, 100 + n, config.vocab_size);
      const auto plan = make_plan({{.id = 1, .tokens = ids, .num_logits = n, .blocks = blocks,
                                    .prompt_len = n}});
      const StepLogits want = cpu.forward(plan);
      const StepLogits got = gpu.forward(plan);
      ASSERT_EQ(got.rows, want.rows);
      for (int64_t r = 0; r < got.rows; ++r) {
        worst = std::max(worst, relative_error(got.row(r), want.row(r), got.vocab));
      }
    }
    std::printf("[%s] prefill logits: worst row error vs CPU %.3g\n", v.name, worst);
    EXPECT_LT(worst, 3e-2);

    // Greedy decode: 24 tokens, one token per step (the decode kernel at m = 1).
    messages::SamplingParams greedy;
    greedy.temperature = 0;
    float logit_scale = 0;
    auto generate = [&](StepRunner& runner, std::vector<float>* margins) {
      Sampler sampler;
      std::vector<int32_t> feed = random_ids(12, 77, config.vocab_size), out;
      int32_t pos = 0;
      while (out.size() < 24) {
        const auto plan = make_plan({{.id = 2, .tokens = feed, .start_pos = pos, .num_logits = 1,
                                      .blocks = blocks, .prompt_len = 12, .sampling = greedy}});
        sampler.observe(plan);
        const StepLogits logits = runner.forward(plan);
        if (margins != nullptr) {
          std::vector<float> row(logits.row(0), logits.row(0) + logits.vocab);
          for (float x : row) logit_scale = std::max(logit_scale, std::abs(x));
          std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<>());
          margins->push_back(row[0] - row[1]);
        }
        pos += static_cast<int32_t>(feed.size());
        feed = {sampler.sample(plan, logits).tokens.at(0).token_id};
        out.push_back(feed[0]);
      }
      return out;
    };
    CpuStepRunner cpu_step(cpu);
    std::vector<float> margins;
    const auto want = generate(cpu_step, &margins);
    const auto got = generate(gpu, nullptr);
    std::size_t same = 0;
    while (same < want.size() && want[same] == got[same]) ++same;
    if (same < want.size()) {
      std::printf("[%s] greedy divergence at token %zu: cpu %d gpu %d, cpu margin %.4g (logit "
                  "scale %.4g)\n", v.name, same, want[same], got[same], margins[same], logit_scale);
      EXPECT_LT(margins[same], 0.02 * logit_scale) << "diverged although the CPU's choice was clear";
    } else {
      std::printf("[%s] greedy: all %zu tokens equal\n", v.name, want.size());
    }
  }
}

// Each TP rank's 4-bit projections, dequantized on the device, equal the CPU loader's float32
// slices of the same rank up to bf16 rounding: the same rows / columns / groups are taken.
TEST(CudaQuantRunner, TensorParallelSlicesMatchTheCpuLoader) {
  SHARDSERVE_REQUIRE_GPU();
  if (!fs::exists(demo_model() / "model.safetensors")) GTEST_SKIP() << "no " << demo_model();
  for (const Variant& v : {kVariants[0], kVariants[2], kVariants[4]}) {
    SCOPED_TRACE(v.name);
    const fs::path dir = quantized_demo(v);
    const auto config = model::load_model_config(dir);
    const auto ckpt = model::Checkpoint::open(dir);
    for (int rank = 0; rank < 2; ++rank) {
      const auto shard = make_shard(config, rank, 2);
      const LlamaWeights cpu = load_llama_weights(ckpt, config, shard);
      const DeviceWeights gpu(ckpt, config, shard);
      EXPECT_EQ(gpu.num_w4_linears(), 4 * config.num_hidden_layers) << "rank " << rank;
      kc::Stream stream;
      for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
        const auto& g = gpu.layer(l);
        const auto& c = cpu.layers[l];
        const std::pair<const DeviceLinear*, const std::vector<float>*> pairs[] = {
            {&g.qkv, &c.qkv}, {&g.o, &c.o}, {&g.gate_up, &c.gate_up}, {&g.down, &c.down}};
        for (const auto& [d, want] : pairs) {
          ASSERT_TRUE(d->quantized());
          kc::DeviceBuffer dense(d->w4.n * d->w4.k * 2, "dense");
          kc::w4_dequantize(d->w4, dense.as<kc::bf16>(), stream.get());
          stream.synchronize();
          const auto got = kc::testing::download_bf16(dense, d->w4.n * d->w4.k);
          ASSERT_EQ(got.size(), want->size());
          EXPECT_LT(kc::testing::relative_error(got, *want), 4e-3)
              << "layer " << l << " rank " << rank << " [" << d->w4.n << ", " << d->w4.k << "]";
        }
      }
    }
  }
}

// CUDA graphs: decode steps replayed from graphs give the eager runner's logits, for the demo
// model in bf16 (cuBLASLt) and 4-bit (W4 decode kernel). Batch 1 and 8 are exact buckets (the
// same launches: equal to float32 rounding of identical kernels); batch 3 is padded to 4.
TEST(CudaGraphs, ReplayedDecodeLogitsEqualEager) {
  SHARDSERVE_REQUIRE_GPU();
  if (!fs::exists(demo_model() / "model.safetensors")) GTEST_SKIP() << "no " << demo_model();
  for (const fs::path& dir : {demo_model(), quantized_demo(kVariants[0])}) {
    SCOPED_TRACE(dir.string());
    const auto config = model::load_model_config(dir);
    const auto ckpt = model::Checkpoint::open(dir);
    const auto shard = make_shard(config, 0, 1);
    comm::SingleRankCollective group;
    CudaRunnerOptions opt;
    opt.block_size = 16;
    opt.num_kv_blocks = 64;
    opt.max_tokens_per_step = 128;
    opt.max_logits_per_step = 128;
    CudaModelRunner eager(config, shard, ckpt, opt, group);
    opt.cuda_graphs = true;
    CudaModelRunner graphed(config, shard, ckpt, opt, group);
    for (const int batch : {1, 3, 8}) {
      // Prefill each sequence (eager on both: not a decode step), then 5 decode steps.
      std::vector<int32_t> pos(batch);
      std::vector<std::vector<int32_t>> tables(batch);
      for (int b = 0; b < batch; ++b) {
        tables[b] = {b * 4, b * 4 + 1, b * 4 + 2, b * 4 + 3};
        const auto ids = random_ids(5 + 3 * b, 40 + b, config.vocab_size);
        const auto plan = make_plan({{.id = uint64_t(b + 1), .tokens = ids, .num_logits = 1,
                                      .blocks = tables[b], .prompt_len = int32_t(ids.size())}});
        eager.forward(plan);
        graphed.forward(plan);
        pos[b] = static_cast<int32_t>(ids.size());
      }
      double worst = 0;
      for (int step = 0; step < 5; ++step) {
        std::vector<testing_support::SeqChunk> seqs;
        for (int b = 0; b < batch; ++b) {
          seqs.push_back({.id = uint64_t(b + 1), .tokens = {int32_t((step * 31 + b * 7) % 1000)},
                          .start_pos = pos[b], .num_logits = 1, .blocks = tables[b],
                          .prompt_len = 5});
          ++pos[b];
        }
        const auto plan = make_plan(seqs);
        const StepLogits want = eager.forward(plan);
        const StepLogits got = graphed.forward(plan);
        ASSERT_EQ(got.rows, batch);
        ASSERT_EQ(got.data.size(), want.data.size());
        for (int64_t r = 0; r < got.rows; ++r) {
          worst = std::max(worst, relative_error(got.row(r), want.row(r), got.vocab));
        }
      }
      std::printf("[graphs %s] batch %d: worst row error vs eager %.3g, %zu graphs\n",
                  dir.filename().c_str(), batch, worst, graphed.num_graphs());
      EXPECT_LT(worst, batch == 3 ? 1e-2 : 1e-6) << "batch " << batch;
    }
    EXPECT_GE(graphed.num_graphs(), 3u);  // buckets 1, 4, 8 (times attention splits)
    EXPECT_EQ(eager.num_graphs(), 0u);
  }
}

}  // namespace
}  // namespace shardserve::worker::cuda
