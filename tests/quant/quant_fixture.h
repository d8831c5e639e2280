#pragma once
// Shared by the quantization tests: a tiny random LLaMA on disk (tests/worker/tiny_llama.h, with
// an FFN width that the group sizes divide), the CPU engine's logits for a model directory, and
// calibration windows of random tokens.
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "comm/collective.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "tests/worker/plan_builder.h"
#include "tests/worker/tiny_llama.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"

namespace shardserve::testing_support {

// A path under the test temp directory, one per process: CTest runs a binary's tests in parallel
// processes (and two suites may share a machine), which would otherwise rewrite each other's files
// of the same name (a config.json read half-written).
inline std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::path(testing::TempDir()) / (name + "-" + std::to_string(::getpid()));
}

// `linear_scale` multiplies the projections' weights (TinyLlama draws them with sd 0.3, which
// makes a chaotic network in which tiny weight changes move logits a lot; 0.3 tames it).
inline std::filesystem::path tiny_model_dir(const std::string& name, uint32_t seed,
                                            bool tied = false, double linear_scale = 1.0) {
  TinyLlama m;
  m.ffn = 64;  // every linear's in_features (32 or 64) is a multiple of group size 32
  m.tied = tied;
  m.make(seed);
  for (auto& [name_, values] : m.w) {
    if (name_.find("_proj") == std::string::npos) continue;
    for (double& v : values) v = bf16_to_float(float_to_bf16(static_cast<float>(v * linear_scale)));
  }
  const auto dir = temp_path(name);
  m.write(dir);
  return dir;
}

inline std::vector<int32_t> random_ids(int64_t n, uint32_t seed, int64_t vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Every position's logits of one prefill of `tokens`, by worker::ModelRunner.
inline std::vector<float> engine_logits(const std::filesystem::path& dir,
                                        const std::vector<int32_t>& tokens) {
  const auto config = model::load_model_config(dir);
  const auto ckpt = model::Checkpoint::open(dir);
  const auto shard = worker::make_shard(config, 0, 1);
  comm::SingleRankCollective group;
  constexpr int64_t kBlock = 4;
  const int64_t blocks = (static_cast<int64_t>(tokens.size()) + kBlock - 1) / kBlock;
  worker::ModelRunner runner(config, shard, worker::load_llama_weights(ckpt, config, shard), blocks,
                             kBlock, group);
  std::vector<int32_t> table(blocks);
  for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(b);
  const auto plan = make_plan({{.id = 1, .tokens = tokens, .start_pos = 0,
                                .num_logits = static_cast<int32_t>(tokens.size()),
                                .blocks = table, .prompt_len = static_cast<int32_t>(tokens.size())}});
  return runner.forward(plan).data;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

}  // namespace shardserve::testing_support
