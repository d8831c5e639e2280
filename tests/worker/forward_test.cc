// The CPU forward pass against an independent dense float64 implementation on a tiny random
// model: one prefill, chunked prefill with decode, several sequences batched in one step with
// scattered physical blocks, and the plan checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "common/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "tests/worker/plan_builder.h"
#include "tests/worker/tiny_llama.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"

namespace shardserve::worker {
namespace {

using testing_support::make_plan;
using testing_support::SeqChunk;
using testing_support::process_temp_dir;
using testing_support::TinyLlama;
using ::testing::HasSubstr;

constexpr int64_t kBlockSize = 4;
constexpr int64_t kNumBlocks = 64;

struct Fixture {
  TinyLlama model;
  model::ModelConfig config;
  comm::SingleRankCollective group;
  std::unique_ptr<ModelRunner> runner;

  explicit Fixture(bool tied = false, uint32_t seed = 7) {
    model.tied = tied;
    model.make(seed);
    const auto dir =
        process_temp_dir("tiny_llama_" + std::to_string(seed) + (tied ? "_tied" : ""));
    model.write(dir);
    config = model::load_model_config(dir);
    const auto ckpt = model::Checkpoint::open(dir);
    const auto shard = make_shard(config, 0, 1);
    runner = std::make_unique<ModelRunner>(config, shard, load_llama_weights(ckpt, config, shard),
                                           kNumBlocks, kBlockSize, group);
  }
};

// max |a - b| / max |b| over the row.
double relative_error(const float* got, const std::vector<double>& want) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / scale;
}

std::vector<int32_t> random_tokens(int n, uint32_t seed, int vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Physical blocks handed out in a scrambled order, so logical != physical.
std::vector<int32_t> scrambled_blocks(int count, uint32_t seed) {
  std::vector<int32_t> all(kNumBlocks);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), std::mt19937(seed));
  return {all.begin(), all.begin() + count};
}

TEST(Forward, PrefillMatchesDenseReference) {
  for (bool tied : {false, true}) {
    Fixture f(tied);
    const auto tokens = random_tokens(23, 1, f.model.vocab);
    const auto plan = make_plan({{.id = 1, .tokens = tokens, .start_pos = 0,
                                  .num_logits = 23, .blocks = scrambled_blocks(6, 2),
                                  .prompt_len = 23}});
    const StepLogits logits = f.runner->forward(plan);
    ASSERT_EQ(logits.rows, 23);
    const auto want = f.model.dense_logits(tokens);
    for (int t = 0; t < 23; ++t) EXPECT_LT(relative_error(logits.row(t), want[t]), 1e-5) << t;
  }
}

TEST(Forward, ChunkedPrefillThenDecodeMatchesDense) {
  Fixture f;
  const auto tokens = random_tokens(40, 3, f.model.vocab);
  const auto want = f.model.dense_logits(tokens);
  const auto blocks = scrambled_blocks(10, 4);
  // Prefill the first 30 in chunks of 7, 1, 9, 13; then decode the rest one by one.
  int pos = 0;
  for (int chunk : {7, 1, 9, 13, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
    std::vector<int32_t> part(tokens.begin() + pos, tokens.begin() + pos + chunk);
    const int needed = (pos + chunk + kBlockSize - 1) / kBlockSize;
    const auto plan = make_plan({{.id = 9, .tokens = part, .start_pos = pos, .num_logits = 1,
                                  .blocks = {blocks.begin(), blocks.begin() + needed},
                                  .prompt_len = 30}});
    const StepLogits logits = f.runner->forward(plan);
    ASSERT_EQ(logits.rows, 1);
    EXPECT_LT(relative_error(logits.row(0), want[pos + chunk - 1]), 1e-5) << "pos " << pos;
    pos += chunk;
  }
  EXPECT_EQ(pos, 40);
}

TEST(Forward, BatchedSequencesMatchTheirOwnDenseRuns) {
  Fixture f;
  const auto a = random_tokens(17, 5, f.model.vocab);
  const auto b = random_tokens(9, 6, f.model.vocab);
  const auto c = random_tokens(30, 7, f.model.vocab);
  const auto blocks = scrambled_blocks(20, 8);
  const std::vector<int32_t> blocks_a(blocks.begin(), blocks.begin() + 5);
  const std::vector<int32_t> blocks_b(blocks.begin() + 5, blocks.begin() + 8);
  const std::vector<int32_t> blocks_c(blocks.begin() + 8, blocks.begin() + 16);
  // Step 1: a's first 16 tokens, b whole, c's first 12 (no logits: a middle chunk).
  f.runner->forward(make_plan({
      {.id = 1, .tokens = {a.begin(), a.begin() + 16}, .start_pos = 0, .num_logits = 1,
       .blocks = blocks_a, .prompt_len = 16},
      {.id = 2, .tokens = b, .start_pos = 0, .num_logits = 1, .blocks = blocks_b, .prompt_len = 9},
      {.id = 3, .tokens = {c.begin(), c.begin() + 12}, .start_pos = 0, .num_logits = 0,
       .blocks = blocks_c, .prompt_len = 30},
  }));
  // Step 2: a decodes one token, c finishes its prompt, wanting logits of its last 3 positions
  // (the shape of a speculative verification).
  const auto plan = make_plan({
      {.id = 3, .tokens = {c.begin() + 12, c.end()}, .start_pos = 12, .num_logits = 3,
       .blocks = blocks_c, .prompt_len = 30},
      {.id = 1, .tokens = {a[16]}, .start_pos = 16, .num_logits = 1, .blocks = blocks_a,
       .prompt_len = 16},
  });
  const StepLogits logits = f.runner->forward(plan);
  ASSERT_EQ(logits.rows, 4);
  const auto want_c = f.model.dense_logits(c);
  const auto want_a = f.model.dense_logits(a);
  for (int j = 0; j < 3; ++j) EXPECT_LT(relative_error(logits.row(j), want_c[27 + j]), 1e-5);
  EXPECT_LT(relative_error(logits.row(3), want_a[16]), 1e-5);
}

TEST(Forward, RejectsPlansThatWouldReadOrWriteOutOfBounds) {
  Fixture f;
  auto error_of = [&](const messages::StepPlan& plan) -> std::string {
    try {
      f.runner->forward(plan);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_THAT(error_of(make_plan({{.id = 4, .tokens = random_tokens(9, 1, 61), .blocks = {0, 1}}})),
              HasSubstr("sequence 4 has 2 blocks of 4 tokens, too few for 9 positions"));
  EXPECT_THAT(error_of(make_plan({{.id = 5, .tokens = {61}, .blocks = {0}}})),
              HasSubstr("sequence 5 has token id 61 outside the vocabulary (61)"));
  EXPECT_THAT(error_of(make_plan({{.id = 6, .tokens = {1}, .start_pos = 256,
                                   .blocks = std::vector<int32_t>(65, 0)}})),
              HasSubstr("reaches position 257 beyond the context length 256"));
  EXPECT_THAT(error_of(make_plan({{.id = 7, .tokens = {1}, .blocks = {64}}})),
              HasSubstr("block table entry 0 = 64 is outside the pool of 64 blocks"));
  EXPECT_THAT(error_of(make_plan({{.id = 8, .tokens = {1}, .num_logits = 2, .blocks = {0}}})),
              HasSubstr("asks for 2 logits from 1 tokens"));
}

}  // namespace
}  // namespace shardserve::worker
