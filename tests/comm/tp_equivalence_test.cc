// Tensor parallelism over MpiCollective (mpirun -np 4): the world is split into groups of
// tp = 1, 2 and 4 ranks (4, 2 and 1 groups), every group runs the same plans, and its logits
// must equal the single-process TP = 1 forward pass within float32 rounding (1e-5 relative),
// and its greedy tokens must be the same. On the tiny random model (4 heads, 2 KV heads: tp = 4
// replicates KV heads; vocabulary 61: an uneven vocabulary split) and on the HF fixtures
// (llama3-bpe: GQA with 2 KV heads, tied embeddings; llama2-sp: MHA, sharded fp16 checkpoint),
// whose greedy tokens must also equal transformers'.
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "comm/mpi_collective.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "tests/worker/plan_builder.h"
#include "tests/worker/tiny_llama.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace shardserve::worker {
namespace {

namespace fs = std::filesystem;
using testing_support::make_plan;
using testing_support::SeqChunk;

constexpr int64_t kBlockSize = 4;
constexpr int64_t kNumBlocks = 128;
constexpr int kGreedyTokens = 32;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

std::unique_ptr<ModelRunner> make_runner(const fs::path& dir, comm::Collective& group) {
  const auto config = model::load_model_config(dir);
  const auto ckpt = model::Checkpoint::open(dir);
  const auto shard = make_shard(config, group.rank(), group.size());
  return std::make_unique<ModelRunner>(config, shard, load_llama_weights(ckpt, config, shard),
                                       kNumBlocks, kBlockSize, group);
}

std::vector<int32_t> random_tokens(int n, uint32_t seed, int64_t vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

std::vector<int32_t> scrambled_blocks(uint32_t seed) {
  std::vector<int32_t> all(kNumBlocks);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), std::mt19937(seed));
  return all;
}

// Three steps over three sequences: batched prefill (one sequence wants every position's
// logits, one a middle chunk with none), then a chunk finishing a prompt (3 logits) batched with
// a decode. Returns each step's logits.
std::vector<StepLogits> run_scenario(ModelRunner& runner, int64_t vocab) {
  const auto a = random_tokens(17, 5, vocab);
  const auto b = random_tokens(9, 6, vocab);
  const auto c = random_tokens(30, 7, vocab);
  const auto blocks = scrambled_blocks(8);
  const std::vector<int32_t> ba(blocks.begin(), blocks.begin() + 6);
  const std::vector<int32_t> bb(blocks.begin() + 6, blocks.begin() + 9);
  const std::vector<int32_t> bc(blocks.begin() + 9, blocks.begin() + 17);
  std::vector<StepLogits> out;
  out.push_back(runner.forward(make_plan({
      {.id = 1, .tokens = {a.begin(), a.begin() + 16}, .num_logits = 16, .blocks = ba, .prompt_len = 16},
      {.id = 2, .tokens = b, .num_logits = 1, .blocks = bb, .prompt_len = 9},
      {.id = 3, .tokens = {c.begin(), c.begin() + 12}, .num_logits = 0, .blocks = bc, .prompt_len = 30},
  })));
  out.push_back(runner.forward(make_plan({
      {.id = 3, .tokens = {c.begin() + 12, c.end()}, .start_pos = 12, .num_logits = 3,
       .blocks = bc, .prompt_len = 30},
      {.id = 1, .tokens = {a[16]}, .start_pos = 16, .num_logits = 1, .blocks = ba, .prompt_len = 16},
  })));
  out.push_back(runner.forward(make_plan({
      {.id = 2, .tokens = {a[3]}, .start_pos = 9, .num_logits = 1, .blocks = bb, .prompt_len = 9},
  })));
  return out;
}

// Greedy decoding of several prompts batched in every step; returns each prompt's tokens.
std::vector<std::vector<int32_t>> greedy(ModelRunner& runner,
                                         const std::vector<std::vector<int32_t>>& prompts) {
  Sampler sampler;
  messages::SamplingParams g;
  g.temperature = 0.0f;
  const auto blocks = scrambled_blocks(11);
  const int64_t per_seq = kNumBlocks / static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int32_t>> out(prompts.size());
  std::vector<std::vector<int32_t>> feed = prompts;
  std::vector<int32_t> pos(prompts.size(), 0);
  for (int step = 0; step < kGreedyTokens; ++step) {
    std::vector<SeqChunk> chunks;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const int64_t end = pos[i] + static_cast<int64_t>(feed[i].size());
      const int64_t nb = (end + kBlockSize - 1) / kBlockSize;
      EXPECT_LE(nb, per_seq);
      chunks.push_back({.id = i + 1, .tokens = feed[i], .start_pos = pos[i], .num_logits = 1,
                        .blocks = {blocks.begin() + i * per_seq, blocks.begin() + i * per_seq + nb},
                        .prompt_len = static_cast<int32_t>(prompts[i].size()), .sampling = g});
    }
    const auto plan = make_plan(chunks, step + 1);
    sampler.observe(plan);
    const auto result = sampler.sample(plan, runner.forward(plan));
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      pos[i] += static_cast<int32_t>(feed[i].size());
      feed[i] = {result.tokens.at(i).token_id};
      out[i].push_back(feed[i][0]);
    }
  }
  return out;
}

double relative_error(const StepLogits& got, const StepLogits& want) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < want.data.size(); ++i) {
    diff = std::max<double>(diff, std::abs(got.data[i] - want.data[i]));
    scale = std::max<double>(scale, std::abs(want.data[i]));
  }
  return diff / scale;
}

// Runs the scenario and greedy decoding at tp = 1 alone and in groups of `tp` world ranks.
void check_model(const fs::path& dir, const std::vector<std::vector<int32_t>>& prompts,
                 const std::vector<std::vector<int32_t>>* expected_greedy) {
  comm::SingleRankCollective single;
  const auto config = model::load_model_config(dir);
  auto reference = make_runner(dir, single);
  const auto want = run_scenario(*reference, config.vocab_size);
  auto reference_greedy_runner = make_runner(dir, single);
  const auto want_greedy = greedy(*reference_greedy_runner, prompts);
  if (expected_greedy) {
    for (std::size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(want_greedy[i], (*expected_greedy)[i]) << dir << ": tp = 1 vs transformers, prompt " << i;
  }
  for (int tp : {1, 2, 4}) {
    if (config.num_attention_heads % tp != 0) continue;
    const int w = world_rank();
    comm::MpiCollective group(MPI_COMM_WORLD, w / tp, w % tp);
    ASSERT_EQ(group.size(), tp);
    auto runner = make_runner(dir, group);
    const auto got = run_scenario(*runner, config.vocab_size);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t s = 0; s < got.size(); ++s) {
      ASSERT_EQ(got[s].rows, want[s].rows);
      ASSERT_EQ(got[s].vocab, want[s].vocab);
      EXPECT_LT(relative_error(got[s], want[s]), 1e-5)
          << dir.filename() << ": tp = " << tp << ", step " << s << " (world rank " << w << ")";
    }
    auto greedy_runner = make_runner(dir, group);
    const auto tokens = greedy(*greedy_runner, prompts);
    for (std::size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(tokens[i], want_greedy[i]) << dir.filename() << ": tp = " << tp << ", prompt " << i;
    group.barrier();
  }
}

TEST(TensorParallel, TinyRandomModelMatchesSingleProcess) {
  testing_support::TinyLlama model;
  model.make(7);
  const auto dir = testing_support::process_temp_dir("tp_tiny_llama");
  model.write(dir);
  check_model(dir, {random_tokens(5, 21, model.vocab), random_tokens(11, 22, model.vocab),
                    random_tokens(20, 23, model.vocab)},
              nullptr);
}

TEST(TensorParallel, TiedEmbeddingsMatchSingleProcess) {
  testing_support::TinyLlama model;
  model.tied = true;
  model.make(9);
  const auto dir = testing_support::process_temp_dir("tp_tiny_tied");
  model.write(dir);
  check_model(dir, {random_tokens(7, 31, model.vocab), random_tokens(13, 32, model.vocab)}, nullptr);
}

class TensorParallelFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(TensorParallelFixture, MatchesSingleProcessAndTransformers) {
  const auto dir = fs::path(SHARDSERVE_SOURCE_DIR) / "tests" / "fixtures" / GetParam();
  if (!fs::exists(dir / "reference.json")) GTEST_SKIP() << "fixture missing: " << dir;
  const auto ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  std::vector<std::vector<int32_t>> prompts, expected;
  for (const auto& p : ref["prompts"]) {
    prompts.push_back(p["ids"].get<std::vector<int32_t>>());
    expected.push_back(p["greedy"].get<std::vector<int32_t>>());
    expected.back().resize(kGreedyTokens);
  }
  check_model(dir, prompts, &expected);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TensorParallelFixture,
                         ::testing::Values("llama3-bpe", "llama2-sp"), [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace shardserve::worker
