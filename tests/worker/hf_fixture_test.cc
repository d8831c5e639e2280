// The CPU engine against transformers on the committed fixtures (tests/fixtures/README.md):
// logits of every prompt position, 32 greedy tokens, and the same logits when the prompts are
// split into prefill chunks and batched together in one step.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "model/safetensors.h"
#include "tests/worker/plan_builder.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace shardserve::worker {
namespace {

namespace fs = std::filesystem;
using testing_support::make_plan;
using testing_support::SeqChunk;

constexpr int64_t kBlockSize = 16;

struct Prompt {
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;
  std::vector<float> logits;  // [ids.size(), vocab] from transformers
};

class HfFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::path(SHARDSERVE_SOURCE_DIR) / "tests" / "fixtures" / GetParam();
    ASSERT_TRUE(fs::exists(dir_ / "reference.json"))
        << "fixture missing: " << dir_ << " (made by tools/fixtures/make_fixtures.py)";
    config_ = model::load_model_config(dir_);
    const auto ckpt = model::Checkpoint::open(dir_);
    const auto shard = make_shard(config_, 0, 1);
    runner_ = std::make_unique<ModelRunner>(config_, shard, load_llama_weights(ckpt, config_, shard),
                                            kNumBlocks, kBlockSize, group_);
    nlohmann::json ref = nlohmann::json::parse(std::ifstream(dir_ / "reference.json"));
    const auto logits = model::Checkpoint::open_file(dir_ / "reference.safetensors");
    for (std::size_t i = 0; i < ref["prompts"].size(); ++i) {
      Prompt p;
      p.ids = ref["prompts"][i]["ids"].get<std::vector<int32_t>>();
      p.greedy = ref["prompts"][i]["greedy"].get<std::vector<int32_t>>();
      const auto& t = logits.tensor("logits_" + std::to_string(i));
      t.expect_shape({static_cast<int64_t>(p.ids.size()), config_.vocab_size});
      p.logits.resize(t.numel());
      std::memcpy(p.logits.data(), t.data.data(), t.data.size());
      prompts_.push_back(std::move(p));
    }
    ASSERT_FALSE(prompts_.empty());
  }

  static std::vector<int32_t> blocks_for(int slot, int64_t tokens) {
    std::vector<int32_t> b;
    for (int64_t i = 0; i < (tokens + kBlockSize - 1) / kBlockSize; ++i) b.push_back(slot * 8 + i);
    return b;
  }

  // max |ours - theirs| / max |theirs| over the rows [first, first + rows) of prompt p.
  double relative_error(const StepLogits& got, int64_t got_row, const Prompt& p, int64_t pos,
                        int64_t rows) const {
    double diff = 0, scale = 0;
    const int64_t V = config_.vocab_size;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t v = 0; v < V; ++v) {
        const double want = p.logits[(pos + r) * V + v];
        diff = std::max(diff, std::abs(got.row(got_row + r)[v] - want));
        scale = std::max(scale, std::abs(want));
      }
    }
    return diff / scale;
  }

  static constexpr int64_t kNumBlocks = 64;
  fs::path dir_;
  model::ModelConfig config_;
  comm::SingleRankCollective group_;
  std::unique_ptr<ModelRunner> runner_;
  std::vector<Prompt> prompts_;
};

TEST_P(HfFixture, LogitsMatchTransformers) {
  for (std::size_t i = 0; i < prompts_.size(); ++i) {
    const auto& p = prompts_[i];
    const auto n = static_cast<int32_t>(p.ids.size());
    const auto logits = runner_->forward(make_plan(
        {{.id = i + 1, .tokens = p.ids, .num_logits = n, .blocks = blocks_for(0, n + 32),
          .prompt_len = n}}));
    EXPECT_LT(relative_error(logits, 0, p, 0, n), 1e-4) << "prompt " << i;
  }
}

TEST_P(HfFixture, GreedyTokensMatchTransformers) {
  for (std::size_t i = 0; i < prompts_.size(); ++i) {
    const auto& p = prompts_[i];
    const auto n = static_cast<int32_t>(p.ids.size());
    const auto blocks = blocks_for(0, n + 40);
    messages::SamplingParams greedy;
    greedy.temperature = 0;
    Sampler sampler;
    std::vector<int32_t> out;
    std::vector<int32_t> feed = p.ids;
    int32_t pos = 0;
    while (out.size() < p.greedy.size()) {
      const auto plan = make_plan({{.id = 1, .tokens = feed, .start_pos = pos, .num_logits = 1,
                                    .blocks = blocks, .prompt_len = n, .sampling = greedy}});
      sampler.observe(plan);
      const auto result = sampler.sample(plan, runner_->forward(plan));
      pos += static_cast<int32_t>(feed.size());
      feed = {result.tokens.at(0).token_id};
      out.push_back(feed[0]);
    }
    EXPECT_EQ(out, p.greedy) << "prompt " << i;
  }
}

TEST_P(HfFixture, ChunkedAndBatchedPrefillGiveTheSameLogits) {
  // Every prompt at once in each step, each split into chunks of 3 tokens; each step asks for
  // the logits of every token it computes.
  std::vector<int32_t> done(prompts_.size(), 0);
  for (bool more = true; more;) {
    more = false;
    std::vector<SeqChunk> chunks;
    std::vector<std::pair<std::size_t, int32_t>> rows;  // (prompt, first position)
    for (std::size_t i = 0; i < prompts_.size(); ++i) {
      const auto& ids = prompts_[i].ids;
      const int32_t n = static_cast<int32_t>(ids.size());
      if (done[i] == n) continue;
      const int32_t take = std::min(3, n - done[i]);
      chunks.push_back({.id = i + 1,
                        .tokens = {ids.begin() + done[i], ids.begin() + done[i] + take},
                        .start_pos = done[i], .num_logits = take,
                        .blocks = blocks_for(static_cast<int>(i), n), .prompt_len = n});
      rows.emplace_back(i, done[i]);
      done[i] += take;
      more = true;
    }
    if (!more) break;
    const auto logits = runner_->forward(make_plan(chunks));
    int64_t row = 0;
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const auto& [i, first] = rows[c];
      const int64_t take = static_cast<int64_t>(chunks[c].tokens.size());
      EXPECT_LT(relative_error(logits, row, prompts_[i], first, take), 1e-4)
          << "prompt " << i << " at " << first;
      row += take;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFixture, ::testing::Values("llama2-sp", "llama3-bpe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace shardserve::worker
