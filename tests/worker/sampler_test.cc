// The worker's sampler state: penalties see every token once, whatever the plans repeat
// (recomputation after preemption) or skip (prefix-cache hits, sent as history).
#include <gtest/gtest.h>

#include "common/error.h"
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

// A device's greedy rows (argmax, logprob) make the StepResult sample() makes from the same
// logits; only plain-greedy plans qualify.
TEST(Sampler, GreedyRowsGiveTheResultSampleGives) {
  messages::SamplingParams greedy;
  greedy.temperature = 0;
  const auto plan = make_plan({{.id = 1, .tokens = {5, 6, 7}, .num_logits = 2, .blocks = {0},
                                .prompt_len = 3, .sampling = greedy},
                               {.id = 2, .tokens = {1, 2}, .num_logits = 0, .blocks = {1},
                                .prompt_len = 4, .sampling = greedy},
                               {.id = 3, .tokens = {4}, .start_pos = 2, .num_logits = 1,
                                .blocks = {2}, .prompt_len = 2, .sampling = greedy}});
  ASSERT_TRUE(Sampler::plain_greedy(plan));
  StepLogits logits;
  logits.rows = 3;
  logits.vocab = kVocab;
  logits.data.assign(3 * kVocab, 0.0f);
  logits.data[0 * kVocab + 4] = 3.0f;
  logits.data[1 * kVocab + 9] = 1.5f;
  logits.data[2 * kVocab + 2] = 2.0f;
  Sampler host;
  host.observe(plan);
  const auto want = host.sample(plan, logits);
  std::vector<GreedyRow> rows;
  for (const auto& t : want.tokens) rows.push_back({t.token_id, t.logprob});
  const auto got = Sampler().from_greedy_rows(plan, rows);
  EXPECT_EQ(got.step_id, want.step_id);
  EXPECT_EQ(got.seq_ids, (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(got.seq_ids, want.seq_ids);
  EXPECT_EQ(got.sample_offsets, want.sample_offsets);
  ASSERT_EQ(got.tokens.size(), 3u);
  EXPECT_EQ(got.tokens[0].token_id, 4);
  EXPECT_EQ(got.tokens[1].token_id, 9);
  EXPECT_EQ(got.tokens[2].token_id, 2);
  // Too few rows for the plan is an error naming the sequence.
  rows.pop_back();
  try {
    Sampler().from_greedy_rows(plan, rows);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sequence 3 needs greedy rows 2..3 of 2"),
              std::string::npos) << e.what();
  }
}

TEST(Sampler, PlainGreedyExcludesSamplingPenaltiesLogprobsAndDrafts) {
  messages::SamplingParams p;
  p.temperature = 0;
  auto plan_with = [](messages::SamplingParams q) {
    return make_plan({{.id = 1, .tokens = {1}, .num_logits = 1, .blocks = {0}, .sampling = q}});
  };
  EXPECT_TRUE(Sampler::plain_greedy(plan_with(p)));
  auto q = p;
  q.temperature = 0.8f;
  EXPECT_FALSE(Sampler::plain_greedy(plan_with(q)));
  q = p;
  q.presence_penalty = 0.5f;
  EXPECT_FALSE(Sampler::plain_greedy(plan_with(q)));
  q = p;
  q.logprobs = 2;
  EXPECT_FALSE(Sampler::plain_greedy(plan_with(q)));
  auto drafted = plan_with(p);
  drafted.seqs[0].num_draft = 1;
  EXPECT_FALSE(Sampler::plain_greedy(drafted));
}

}  // namespace
}  // namespace shardserve::worker
