// Speculative decoding on the GPU (label gpu; skipped without a device): the CUDA runner as
// target and as draft behind the same StepExecutor. Greedy outputs with speculation (draft model,
// prompt lookup) against the GPU's own outputs without it, on the demo pair and on the fixtures.
//
// On the GPU a verify pass computes K + 1 rows where a decode computes one, and the GEMMs may
// then accumulate in another order (cuBLASLt picks its algorithm by shape): the logits of one
// position can differ in the last bits between the two. Greedy speculation is exact with respect
// to the logits it verifies with, so the outputs are equal as long as no argmax is decided by
// such a difference. The test prints where outputs diverge with the plain run's top1 - top2
// margin at that token, and fails unless that margin is within bf16 noise.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/cuda/cuda_check.h"
#include "tests/worker/plan_builder.h"
#include "tests/worker/spec_engine.h"
#include "worker/cuda/cuda_model_runner.h"

namespace shardserve::worker {
namespace {

namespace fs = std::filesystem;
using coordinator::SpeculativeMethod;
using testing_support::EngineOptions;
using testing_support::EngineRequest;
using testing_support::run_engine;

fs::path source_dir() {
  // The GPU machine runs the binary from a copied tree: SHARDSERVE_SOURCE_DIR may not exist.
  if (const char* d = std::getenv("SHARDSERVE_SOURCE_ROOT")) return d;
  return SHARDSERVE_SOURCE_DIR;
}

struct GpuModel {
  model::ModelConfig config;
  std::unique_ptr<cuda::CudaModelRunner> runner;
  GpuModel(const fs::path& dir, int64_t blocks, int64_t block_size, comm::Collective& group) {
    config = model::load_model_config(dir);
    const auto shard = make_shard(config, 0, 1);
    cuda::CudaRunnerOptions opt;
    opt.block_size = block_size;
    opt.num_kv_blocks = blocks;
    opt.max_tokens_per_step = 1024;
    opt.max_logits_per_step = 256;
    runner = std::make_unique<cuda::CudaModelRunner>(config, shard, model::Checkpoint::open(dir),
                                                     opt, group);
  }
};

// Top1 - top2 margin of the target's logits at every generated position of `tokens` (one
// sequence, plain forward passes), to judge a divergence.
std::vector<float> margins(StepRunner& target, const std::vector<int32_t>& prompt,
                           const std::vector<int32_t>& out, int64_t block_size, float* scale) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), out.begin(), out.end());
  std::vector<int32_t> blocks((all.size() + block_size) / block_size + 1);
  for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<int32_t>(i);
  const int32_t n = static_cast<int32_t>(out.size());
  const auto plan = testing_support::make_plan(
      {{.id = 999, .tokens = std::vector<int32_t>(all.begin(), all.end() - 1), .num_logits = n,
        .blocks = blocks, .prompt_len = int32_t(prompt.size())}});
  const StepLogits l = target.forward(plan);
  std::vector<float> m;
  *scale = 0;
  for (int64_t r = 0; r < l.rows; ++r) {
    std::vector<float> row(l.row(r), l.row(r) + l.vocab);
    for (float v : row) *scale = std::max(*scale, std::abs(v));
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<>());
    m.push_back(row[0] - row[1]);
  }
  return m;
}

void compare(const std::vector<std::vector<int32_t>>& got,
             const std::vector<std::vector<int32_t>>& want, const std::vector<EngineRequest>& reqs,
             StepRunner& target, int64_t block_size, const std::string& what) {
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto& a = got[i];
    const auto& b = want[i];
    const auto mismatch = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    if (mismatch.first == a.end() && mismatch.second == b.end()) {
      std::printf("[%s] request %zu: all %zu tokens equal\n", what.c_str(), i, b.size());
      continue;
    }
    const std::size_t at = mismatch.first - a.begin();
    float scale = 0;
    const auto m = margins(target, reqs[i].prompt, b, block_size, &scale);
    std::printf("[%s] request %zu: diverges at generated token %zu (plain margin %.4g, logit "
                "scale %.4g)\n",
                what.c_str(), i, at, at < m.size() ? m[at] : -1.0f, scale);
    ASSERT_LT(at, m.size());
    EXPECT_LT(m[at], 0.02f * scale) << what << ": request " << i << " diverged at token " << at
                                    << " although the plain run's choice was clear";
  }
}

EngineRequest greedy_request(std::vector<int32_t> prompt, int32_t n) {
  EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = n;
  r.sampling.temperature = 0;
  return r;
}

TEST(SpeculativeCuda, DemoPairGreedyWithAndWithoutSpeculation) {
  if (!kernels::cuda::cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const fs::path models = source_dir() / "models";
  comm::SingleRankCollective group;
  EngineOptions o;
  o.block_size = 16;
  o.num_blocks = 64;
  o.max_model_len = 256;
  GpuModel target(models / "kjv-llama", o.num_blocks, o.block_size, group);
  GpuModel draft(models / "kjv-llama-draft", o.num_blocks, o.block_size, group);
  const auto ids = nlohmann::json::parse(std::ifstream(models / "eval" / "heldout_ids.json"))["ids"]
                       .get<std::vector<int32_t>>();
  std::vector<EngineRequest> reqs;
  reqs.push_back(greedy_request({8176, 40, 77, 258, 2152}, 64));
  for (int i = 0; i < 5; ++i) {
    std::vector<int32_t> p = {8176};
    p.insert(p.end(), ids.begin() + 1000 * i, ids.begin() + 1000 * i + 24);
    reqs.push_back(greedy_request(p, 64));
  }
  reqs[2].num_speculative_tokens = 0;  // a plain request in the speculating batch
  const auto plain = run_engine(*target.runner, nullptr, o, reqs);
  for (int k : {2, 4, 6}) {
    o.speculative.method = SpeculativeMethod::kDraftModel;
    o.speculative.num_speculative_tokens = k;
    const auto run = run_engine(*target.runner, draft.runner.get(), o, reqs);
    std::printf("draft K=%d: acceptance %.3f (per token %.3f), mean accepted length %.2f\n", k,
                run.counters.acceptance_rate(), run.counters.per_token_acceptance(),
                run.counters.mean_accepted_length());
    compare(run.outputs, plain.outputs, reqs, *target.runner, o.block_size,
            "gpu draft K=" + std::to_string(k));
  }
  o.speculative.method = SpeculativeMethod::kNgram;
  o.speculative.num_speculative_tokens = 4;
  const auto lookup = run_engine(*target.runner, nullptr, o, reqs);
  compare(lookup.outputs, plain.outputs, reqs, *target.runner, o.block_size, "gpu ngram K=4");
  // The target drafting for itself: every draft accepted unless a K + 1-row pass and a 1-row
  // pass disagree on an argmax.
  GpuModel self(models / "kjv-llama", o.num_blocks, o.block_size, group);
  o.speculative.method = SpeculativeMethod::kDraftModel;
  const auto selfrun = run_engine(*target.runner, self.runner.get(), o, reqs);
  std::printf("self-draft K=4: acceptance %.4f (%lld of %lld)\n",
              selfrun.counters.acceptance_rate(),
              static_cast<long long>(selfrun.counters.accepted_tokens),
              static_cast<long long>(selfrun.counters.proposed_tokens));
  compare(selfrun.outputs, plain.outputs, reqs, *target.runner, o.block_size, "gpu self-draft");
  EXPECT_GT(selfrun.counters.acceptance_rate(), 0.95);
}

TEST(SpeculativeCuda, FixturesGreedyWithAndWithoutSpeculation) {
  if (!kernels::cuda::cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"llama3-bpe", "llama2-sp"}) {
    const fs::path dir = source_dir() / "tests" / "fixtures" / name;
    const auto ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
    comm::SingleRankCollective group;
    EngineOptions o;
    o.block_size = 16;
    o.num_blocks = 32;
    o.max_model_len = 96;
    GpuModel target(dir, o.num_blocks, o.block_size, group);
    GpuModel self(dir, o.num_blocks, o.block_size, group);
    std::vector<EngineRequest> reqs;
    for (const auto& p : ref["prompts"])
      reqs.push_back(greedy_request(p["ids"].get<std::vector<int32_t>>(), 32));
    const auto plain = run_engine(*target.runner, nullptr, o, reqs);
    o.speculative.method = SpeculativeMethod::kDraftModel;
    o.speculative.num_speculative_tokens = 3;
    const auto run = run_engine(*target.runner, self.runner.get(), o, reqs);
    compare(run.outputs, plain.outputs, reqs, *target.runner, o.block_size,
            std::string(name) + " self-draft K=3");
    o.speculative.method = SpeculativeMethod::kNgram;
    const auto lookup = run_engine(*target.runner, nullptr, o, reqs);
    compare(lookup.outputs, plain.outputs, reqs, *target.runner, o.block_size,
            std::string(name) + " ngram K=3");
    // And against transformers (float32 CPU), as tests/cuda compares the plain GPU run.
    int equal = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i)
      equal += run.outputs[i] == ref["prompts"][i]["greedy"].get<std::vector<int32_t>>();
    std::printf("[%s] speculative GPU greedy equals transformers on %d of %zu prompts\n", name,
                equal, reqs.size());
  }
}

}  // namespace
}  // namespace shardserve::worker
