// The worker's sampler state: penalties see every token once, whatever the plans repeat
// (recomputation after preemption) or skip (prefix-cache hits, sent as history).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "common/counter_rng.h"
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

// A device's rows (token, logprob) make the StepResult sample() makes from the same logits.
TEST(Sampler, DeviceRowsGiveTheResultSampleGives) {
  messages::SamplingParams greedy;
  greedy.temperature = 0;
  messages::SamplingParams sampled;
  sampled.temperature = 0.9f;
  sampled.seed = 4;
  const auto plan = make_plan({{.id = 1, .tokens = {5, 6, 7}, .num_logits = 2, .blocks = {0},
                                .prompt_len = 3, .sampling = greedy},
                               {.id = 2, .tokens = {1, 2}, .num_logits = 0, .blocks = {1},
                                .prompt_len = 4, .sampling = greedy},
                               {.id = 3, .tokens = {4}, .start_pos = 2, .num_logits = 1,
                                .blocks = {2}, .prompt_len = 2, .sampling = sampled}});
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
  std::vector<DeviceSample> rows;
  for (const auto& t : want.tokens) rows.push_back({t.token_id, t.logprob});
  const auto got = Sampler().from_device_rows(plan, rows);
  EXPECT_EQ(got.step_id, want.step_id);
  EXPECT_EQ(got.seq_ids, (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(got.seq_ids, want.seq_ids);
  EXPECT_EQ(got.sample_offsets, want.sample_offsets);
  ASSERT_EQ(got.tokens.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(got.tokens[i].token_id, want.tokens[i].token_id);
    EXPECT_EQ(got.tokens[i].logprob, want.tokens[i].logprob);
  }
  EXPECT_EQ(got.tokens[0].token_id, 4);
  EXPECT_EQ(got.tokens[1].token_id, 9);
  auto error_of = [&](const std::vector<DeviceSample>& r) -> std::string {
    try {
      Sampler().from_device_rows(plan, r);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  // Too few or too many rows for the plan is an error.
  auto fewer = rows;
  fewer.pop_back();
  EXPECT_NE(error_of(fewer).find("sequence 3 needs device rows 2..3 of 2"), std::string::npos)
      << error_of(fewer);
  auto more = rows;
  more.push_back({0, 0.0f});
  EXPECT_NE(error_of(more).find("4 device rows for a plan of 3 logit rows"), std::string::npos)
      << error_of(more);
}

// The one decision: on the device when the runner can, unless a row asks for top logprobs or
// verifies drafts, or the worker has a draft model; plain greedy takes the argmax.
TEST(Sampler, SamplingSiteKeepsTopLogprobsDraftsAndShardedLogitsOnTheHost) {
  messages::SamplingParams p;
  p.temperature = 0;
  auto plan_with = [](messages::SamplingParams q) {
    return make_plan({{.id = 1, .tokens = {1}, .num_logits = 1, .blocks = {0}, .sampling = q},
                      {.id = 2, .tokens = {3, 4}, .num_logits = 0, .blocks = {1}}});
  };
  auto site = [](const messages::StepPlan& plan) {
    return Sampler::sampling_site(plan, /*runner_samples_on_device=*/true, /*draft_model=*/false);
  };
  EXPECT_TRUE(Sampler::plain_greedy(plan_with(p)));
  EXPECT_EQ(site(plan_with(p)), SamplingSite::kDeviceGreedy);
  EXPECT_EQ(Sampler::sampling_site(plan_with(p), false, false), SamplingSite::kHost);
  EXPECT_EQ(Sampler::sampling_site(plan_with(p), true, true), SamplingSite::kHost);
  auto q = p;
  q.temperature = 0.8f;
  EXPECT_FALSE(Sampler::plain_greedy(plan_with(q)));
  EXPECT_EQ(site(plan_with(q)), SamplingSite::kDevice);
  q.top_k = 3;
  q.top_p = 0.5f;
  q.min_p = 0.1f;
  EXPECT_EQ(site(plan_with(q)), SamplingSite::kDevice);
  EXPECT_EQ(Sampler::sampling_site(plan_with(q), false, false), SamplingSite::kHost);
  q = p;
  q.presence_penalty = 0.5f;
  EXPECT_FALSE(Sampler::plain_greedy(plan_with(q)));
  EXPECT_EQ(site(plan_with(q)), SamplingSite::kDevice);
  for (int32_t n : {1, 2}) {
    q = p;
    q.logprobs = n;
    EXPECT_FALSE(Sampler::plain_greedy(plan_with(q)));
    EXPECT_EQ(site(plan_with(q)), SamplingSite::kHost) << n << " top logprobs";
  }
  auto drafted = plan_with(p);
  drafted.seqs[0].num_draft = 1;
  EXPECT_FALSE(Sampler::plain_greedy(drafted));
  EXPECT_EQ(site(drafted), SamplingSite::kHost);
  auto unparametrised = plan_with(p);
  unparametrised.seqs[0].sampling_index = 1;
  EXPECT_EQ(site(unparametrised), SamplingSite::kHost);
  // The device paths refuse what they cannot give.
  q = p;
  q.logprobs = 1;
  EXPECT_THROW(Sampler().device_inputs(plan_with(q)), Error);
  EXPECT_THROW(Sampler().from_device_rows(drafted, {DeviceSample{}}), Error);
}

// The CSR histories device_inputs builds: row r's seen tokens and output counts are exactly the
// sampler's penalty state of its sequence (prompt, history ids and outputs, each position once),
// for every row of the sequence; empty where the request has no penalty.
TEST(Sampler, DeviceInputsHoldEachRowsPenaltyState) {
  messages::SamplingParams penalised;
  penalised.temperature = 0;
  penalised.repetition_penalty = 1.5f;
  messages::SamplingParams plain;
  plain.temperature = 0.7f;
  Sampler sampler;
  // Sequence 1: history ids [2, 3] (positions 0, 1), prompt through position 3, then outputs
  // 7, 7, 2 at positions 4, 5, 6; observed twice (a recomputation); 2 logit rows. Sequence 2: no
  // penalties.
  auto plan = make_plan({{.id = 1, .tokens = {5, 6, 7, 7, 2}, .start_pos = 2, .num_logits = 2,
                          .blocks = {0, 1}, .prompt_len = 4, .sampling = penalised},
                         {.id = 2, .tokens = {8, 8, 9}, .num_logits = 1, .blocks = {2},
                          .prompt_len = 1, .sampling = plain}});
  plan.history_ids = {2, 3};
  plan.seqs[0].history_len = 2;
  sampler.observe(plan);
  sampler.observe(plan);
  const DeviceSamplingInputs in = sampler.device_inputs(plan);
  ASSERT_EQ(in.rows(), 3);
  ASSERT_EQ(in.seen_offsets.size(), 4u);
  ASSERT_EQ(in.count_offsets.size(), 4u);
  ASSERT_EQ(in.counts.size(), in.count_tokens.size());
  auto seen_of = [&](int r) {
    std::vector<int32_t> v(in.seen_tokens.begin() + in.seen_offsets[r],
                           in.seen_tokens.begin() + in.seen_offsets[r + 1]);
    std::sort(v.begin(), v.end());
    return v;
  };
  auto counts_of = [&](int r) {
    std::vector<std::pair<int32_t, int32_t>> v;
    for (int32_t i = in.count_offsets[r]; i < in.count_offsets[r + 1]; ++i)
      v.emplace_back(in.count_tokens[i], in.counts[i]);
    std::sort(v.begin(), v.end());
    return v;
  };
  const std::vector<int32_t> seen = {2, 3, 5, 6, 7};
  const std::vector<std::pair<int32_t, int32_t>> counts = {{2, 1}, {7, 2}};
  EXPECT_EQ(in.seen_offsets[0], 0);
  EXPECT_EQ(in.count_offsets[0], 0);
  for (int r : {0, 1}) {
    EXPECT_EQ(seen_of(r), seen) << "row " << r;
    EXPECT_EQ(counts_of(r), counts) << "row " << r;
    EXPECT_EQ(in.params[r].repetition_penalty, 1.5f);
  }
  EXPECT_TRUE(seen_of(2).empty());
  EXPECT_TRUE(counts_of(2).empty());
  EXPECT_EQ(in.params[2].temperature, 0.7f);
  EXPECT_EQ(in.seen_offsets.back(), static_cast<int32_t>(in.seen_tokens.size()));
  EXPECT_EQ(in.count_offsets.back(), static_cast<int32_t>(in.count_tokens.size()));
}

// device_inputs' uniforms are the draws sample() makes (stream 0 at the position the token will
// occupy), and the CPU's sample_token on each row's (params, CSR history, uniform) gives the
// token and logprob sample() gives: what sample_rows, equal to sample_token, then returns.
// Random logits, 40 seeds, a mix of temperature / top-k / top-p / min-p / penalties.
TEST(Sampler, DeviceInputsDrawWhatSampleDraws) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> logit(-3.0f, 3.0f);
  messages::SamplingParams a, b, c;
  a.temperature = 0.8f;
  a.top_k = 4;
  a.frequency_penalty = 0.7f;
  b.temperature = 1.3f;
  b.top_p = 0.8f;
  b.min_p = 0.05f;
  b.repetition_penalty = 1.4f;
  b.presence_penalty = 0.6f;
  c.temperature = 0;
  c.repetition_penalty = 2.0f;
  int differing = 0;
  std::vector<int32_t> first_tokens;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    a.seed = seed;
    b.seed = 1000 + seed;
    auto plan = make_plan({{.id = 1, .tokens = {1, 2, 3, 3, 4}, .start_pos = 1, .num_logits = 3,
                            .blocks = {0, 1}, .prompt_len = 3, .sampling = a},
                           {.id = 2, .tokens = {9}, .start_pos = 6, .num_logits = 1,
                            .blocks = {2, 3}, .prompt_len = 2, .sampling = b},
                           {.id = 3, .tokens = {0, 1}, .num_logits = 1, .blocks = {4},
                            .prompt_len = 1, .sampling = c}});
    plan.history_ids = {5, 9, 9, 8, 9, 2, 6};
    plan.seqs[0].history_len = 1;
    plan.seqs[1].history_offset = 1;
    plan.seqs[1].history_len = 6;
    StepLogits logits;
    logits.rows = 5;
    logits.vocab = kVocab;
    for (int i = 0; i < 5 * kVocab; ++i) logits.data.push_back(logit(rng));
    Sampler sampler;
    sampler.observe(plan);
    const DeviceSamplingInputs in = sampler.device_inputs(plan);
    const auto want = sampler.sample(plan, logits);
    ASSERT_EQ(in.rows(), 5);
    ASSERT_EQ(want.tokens.size(), 5u);
    // Positions: sequence 1's rows predict positions 4, 5, 6; sequence 2's 7; sequence 3's 2.
    const std::vector<std::pair<uint64_t, int64_t>> draws = {
        {a.seed, 4}, {a.seed, 5}, {a.seed, 6}, {b.seed, 7}, {c.seed, 2}};
    for (int r = 0; r < 5; ++r) {
      EXPECT_EQ(in.uniforms[r], counter_uniform(draws[r].first, draws[r].second, kStreamSample))
          << "row " << r;
      kernels::cpu::PenaltyHistory h;
      h.seen_tokens.assign(in.seen_tokens.begin() + in.seen_offsets[r],
                           in.seen_tokens.begin() + in.seen_offsets[r + 1]);
      for (int32_t i = in.count_offsets[r]; i < in.count_offsets[r + 1]; ++i)
        h.output_counts.emplace_back(in.count_tokens[i], in.counts[i]);
      const auto got =
          kernels::cpu::sample_token(logits.row(r), kVocab, in.params[r], h, in.uniforms[r]);
      EXPECT_EQ(got.token, want.tokens[r].token_id) << "seed " << seed << " row " << r;
      EXPECT_EQ(got.logprob, want.tokens[r].logprob) << "seed " << seed << " row " << r;
    }
    first_tokens.push_back(want.tokens[0].token_id);
    // The penalties matter here: without them some token changes.
    for (int r = 0; r < 5; ++r) {
      const auto bare = kernels::cpu::sample_token(logits.row(r), kVocab, in.params[r], {},
                                                   in.uniforms[r]);
      differing += bare.token != want.tokens[r].token_id;
    }
  }
  EXPECT_GT(differing, 5);
  std::sort(first_tokens.begin(), first_tokens.end());
  EXPECT_GE(std::unique(first_tokens.begin(), first_tokens.end()) - first_tokens.begin(), 3)
      << "the seeded draws vary";
}

}  // namespace
}  // namespace shardserve::worker
