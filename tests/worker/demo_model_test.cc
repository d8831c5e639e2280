// The bundled demo models (models/kjv-llama and its draft) through the project's tokenizer and
// CPU engine against the numbers transformers recorded in models/eval/perplexity.json: the
// held-out NLL of the first windows, and the target's greedy completion of "In the beginning".
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/worker/plan_builder.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace shardserve::worker {
namespace {

namespace fs = std::filesystem;
const fs::path kModels = fs::path(SHARDSERVE_SOURCE_DIR) / "models";
constexpr int kWindow = 256;
constexpr int kBlockSize = 16;
constexpr int kWindowsChecked = 2;  // of 59: enough to catch any mismatch, cheap enough for CI

nlohmann::json reference() {
  std::ifstream in(kModels / "eval" / "perplexity.json");
  EXPECT_TRUE(in.good()) << "missing models/eval/perplexity.json";
  return nlohmann::json::parse(in);
}

struct Engine {
  model::ModelConfig config;
  std::unique_ptr<model::Tokenizer> tokenizer;
  comm::SingleRankCollective group;
  std::unique_ptr<ModelRunner> runner;
  explicit Engine(const fs::path& dir, int blocks) {
    config = model::load_model_config(dir);
    tokenizer = model::load_tokenizer(dir);
    const auto shard = make_shard(config, 0, 1);
    runner = std::make_unique<ModelRunner>(
        config, shard, load_llama_weights(model::Checkpoint::open(dir), config, shard), blocks,
        kBlockSize, group);
  }
};

std::vector<int32_t> table(int blocks) {
  std::vector<int32_t> t(blocks);
  for (int i = 0; i < blocks; ++i) t[i] = i;
  return t;
}

class DemoModel : public ::testing::TestWithParam<std::string> {};

TEST_P(DemoModel, HeldOutNllEqualsTransformers) {
  const auto ref = reference();
  const int bos = ref["protocol"]["bos_token_id"];
  const auto want = ref["models"][GetParam()]["window_nll_sums"].get<std::vector<double>>();
  Engine e(kModels / GetParam(), kWindow / kBlockSize);
  std::stringstream text;
  text << std::ifstream(kModels / "eval" / "heldout.txt").rdbuf();
  const auto ids = e.tokenizer->encode(text.str(), false);
  ASSERT_EQ(ids.size(), ref["heldout_tokens"].get<size_t>()) << "tokenizer disagrees with HF";
  for (int w = 0; w < kWindowsChecked; ++w) {
    std::vector<int32_t> feed = {bos};
    feed.insert(feed.end(), ids.begin() + w * kWindow, ids.begin() + (w + 1) * kWindow - 1);
    const auto logits = e.runner->forward(testing_support::make_plan(
        {{.id = 1, .tokens = feed, .num_logits = kWindow, .blocks = table(kWindow / kBlockSize),
          .prompt_len = kWindow}}));
    double sum = 0;
    for (int i = 0; i < kWindow; ++i) {
      const float* row = logits.row(i);
      double mx = row[0], z = 0;
      for (int64_t v = 1; v < logits.vocab; ++v) mx = std::max<double>(mx, row[v]);
      for (int64_t v = 0; v < logits.vocab; ++v) z += std::exp(row[v] - mx);
      sum += std::log(z) + mx - row[ids[w * kWindow + i]];
    }
    EXPECT_NEAR(sum, want[w], 1e-5 * want[w]) << "window " << w;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, DemoModel, ::testing::Values("kjv-llama", "kjv-llama-draft"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(DemoModelGreedy, CompletionEqualsTransformers) {
  const auto ref = reference();
  const auto& sample = ref["samples"];
  const auto want = sample["models"]["kjv-llama"]["greedy"]["ids"].get<std::vector<int32_t>>();
  Engine e(kModels / "kjv-llama", 8);
  const auto prompt = e.tokenizer->encode(sample["prompt"].get<std::string>(), true);
  ASSERT_EQ(prompt, sample["prompt_ids"].get<std::vector<int32_t>>());
  messages::SamplingParams greedy;
  greedy.temperature = 0;
  Sampler sampler;
  std::vector<int32_t> feed = prompt, out;
  int32_t pos = 0;
  while (out.size() < want.size()) {
    const auto plan = testing_support::make_plan(
        {{.id = 1, .tokens = feed, .start_pos = pos, .num_logits = 1, .blocks = table(8),
          .prompt_len = static_cast<int32_t>(prompt.size()), .sampling = greedy}});
    sampler.observe(plan);
    const auto result = sampler.sample(plan, e.runner->forward(plan));
    pos += static_cast<int32_t>(feed.size());
    feed = {result.tokens.at(0).token_id};
    out.push_back(feed[0]);
  }
  EXPECT_EQ(out, want);
  EXPECT_EQ(e.tokenizer->decode(out, true),
            sample["models"]["kjv-llama"]["greedy"]["text"].get<std::string>());
}

}  // namespace
}  // namespace shardserve::worker
