// The worker's sampler state: penalties see every token once, whatever the plans repeat
// (recomputation after preemption) or skip (prefix-cache hits, sent as history).
#include <gtest/gtest.h>

#include "tests/worker/plan_builder.h"
#include "worker/sampler.h"

namespace shardserve::worker {
namespace {

using testing_support::make_plan;

constexpr int64_t kVocab = 10;

StepLogits logits_with(std::vector<std::pair<int32_t, float>> bumps) {
  StepLogits l;
  l.rows = 1;
  l.vocab = kVocab;
  l.data.assign(kVocab, 0.0f);
  for (auto [t, v] : bumps) l.data[t] = v;
  return l;
}

int32_t sample_one(Sampler& sampler, const messages::StepPlan& plan, const StepLogits& logits) {
  sampler.observe(plan);
  return sampler.sample(plan, logits).tokens.at(0).token_id;
}

TEST(Sampler, RecomputationDoesNotCountTokensTwice) {
  messages::SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 1.0f;
  Sampler sampler;
  // Prompt [5, 6], then outputs 7 and 7 fed back as decodes.
  sample_one(sampler, make_plan({{.id = 1, .tokens = {5, 6}, .blocks = {0}, .prompt_len = 2, .sampling = p}}),
             logits_with({}));
  sample_one(sampler, make_plan({{.id = 1, .tokens = {7}, .start_pos = 2, .blocks = {0}, .prompt_len = 2, .sampling = p}}),
             logits_with({}));
  // Token 7's logit 3 minus twice the penalty stays the argmax: counted 2 times, not 4.
  const auto logits = logits_with({{7, 3.0f}});
  EXPECT_EQ(sample_one(sampler, make_plan({{.id = 1, .tokens = {7}, .start_pos = 3, .blocks = {0},
                                            .prompt_len = 2, .sampling = p}}), logits), 7);
  // Preempted and recomputed from position 0: the same four positions again.
  EXPECT_EQ(sample_one(sampler, make_plan({{.id = 1, .tokens = {5, 6, 7, 7}, .blocks = {0},
                                            .prompt_len = 2, .sampling = p}}), logits), 7);
  // A third 7 does push it below the others' 0: 3 - 3 = 0 ties, the lowest id wins.
  EXPECT_EQ(sample_one(sampler, make_plan({{.id = 1, .tokens = {7}, .start_pos = 4, .blocks = {0},
                                            .prompt_len = 2, .sampling = p}}), logits), 0);
  // Released: a later sequence of the same id starts clean.
  messages::StepPlan release;
  release.released = {1};
  sampler.observe(release);
  EXPECT_EQ(sampler.tracked_sequences(), 0u);
}

TEST(Sampler, HistoryIdsCountAsPromptForTheRepetitionPenalty) {
  messages::SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  // Token 3 (logit 1.5) beats token 9 (1.0) unless it is known to be in the prompt.
  const auto logits = logits_with({{3, 1.5f}, {9, 1.0f}});
  Sampler without;
  EXPECT_EQ(sample_one(without, make_plan({{.id = 1, .tokens = {5, 6}, .start_pos = 4,
                                            .blocks = {0}, .prompt_len = 6, .sampling = p}}),
                       logits),
            3);
  Sampler with;
  auto plan = make_plan({{.id = 1, .tokens = {5, 6}, .start_pos = 4, .blocks = {0}, .prompt_len = 6,
                          .sampling = p}});
  plan.history_ids = {1, 2, 3, 4};
  plan.seqs[0].history_len = 4;
  EXPECT_EQ(sample_one(with, plan, logits), 9);
}

}  // namespace
}  // namespace shardserve::worker
