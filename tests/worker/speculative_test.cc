// Speculative decoding end to end on the CPU engine (Scheduler + StepExecutor + ModelRunner):
//  * greedy outputs with speculation (draft model, prompt lookup, adaptive K, per-request K
//    mixed with plain requests, preemption in a tiny pool) are token for token those without,
//    on the demo pair and on the HF fixtures (their transformers greedy tokens);
//  * a model drafting for itself has every draft accepted, greedy and sampled with penalties:
//    the draft's KV (catch-up, rollback) and its processed distribution track the target's
//    exactly;
//  * with sampling, a chi-square test on a small vocabulary: the tokens produced with a
//    different random draft model follow the target's distribution; the same counts reject the
//    distributions that wrong acceptance rules would produce;
//  * penalty state counts accepted drafts only;
//  * tensor parallelism (two threads): the draft on every rank or on rank 0 only gives the same
//    greedy tokens as no speculation.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/counter_rng.h"
#include "kernels/cpu/sampling.h"
#include "tests/worker/plan_builder.h"
#include "tests/worker/spec_engine.h"
#include "tests/worker/thread_collective.h"
#include "tests/worker/tiny_llama.h"
#include "worker/sampler.h"

namespace shardserve::worker {
namespace {

namespace fs = std::filesystem;
using coordinator::SpeculativeConfig;
using coordinator::SpeculativeMethod;
using testing_support::EngineOptions;
using testing_support::EngineRequest;
using testing_support::LoadedModel;
using testing_support::process_temp_dir;
using testing_support::run_engine;
using testing_support::TinyLlama;

const fs::path kSource = fs::path(SHARDSERVE_SOURCE_DIR);

SpeculativeConfig draft_model(int32_t k, bool adaptive = false) {
  SpeculativeConfig s;
  s.method = SpeculativeMethod::kDraftModel;
  s.num_speculative_tokens = k;
  s.adaptive = adaptive;
  return s;
}
SpeculativeConfig ngram(int32_t k) {
  SpeculativeConfig s;
  s.method = SpeculativeMethod::kNgram;
  s.num_speculative_tokens = k;
  s.ngram_max = 3;
  return s;
}

messages::SamplingParams greedy() {
  messages::SamplingParams p;
  p.temperature = 0;
  return p;
}

// A tiny random LLaMA on disk (its directory).
fs::path tiny_model(uint32_t seed, int64_t vocab, int64_t hidden = 32) {
  TinyLlama m;
  m.vocab = vocab;
  m.hidden = hidden;
  m.make(seed);
  const fs::path dir =
      process_temp_dir("spec_tiny_" + std::to_string(seed) + "_" + std::to_string(vocab));
  m.write(dir);
  return dir;
}

// A draft for a tiny target: its weights plus noise (a plausible, imperfect draft).
fs::path tiny_noisy_copy(uint32_t seed, int64_t vocab, double noise) {
  TinyLlama m;
  m.vocab = vocab;
  m.make(seed);
  std::mt19937 rng(seed + 1);
  std::normal_distribution<double> n(0.0, noise);
  for (auto& [name, values] : m.w)
    for (auto& v : values) v = bf16_to_float(float_to_bf16(static_cast<float>(v + n(rng))));
  const fs::path dir =
      process_temp_dir("spec_noisy_" + std::to_string(seed) + "_" + std::to_string(vocab));
  m.write(dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Greedy equality on the demo pair.

std::vector<EngineRequest> demo_requests(int n, int32_t max_tokens) {
  std::ifstream in(kSource / "models" / "eval" / "heldout_ids.json");
  const auto ids = nlohmann::json::parse(in)["ids"].get<std::vector<int32_t>>();
  std::vector<EngineRequest> reqs;
  for (int i = 0; i < n; ++i) {
    EngineRequest r;
    r.prompt = {8176};  // BOS
    r.prompt.insert(r.prompt.end(), ids.begin() + 300 * i, ids.begin() + 300 * i + 12 + 5 * i);
    r.max_tokens = max_tokens;
    r.sampling = greedy();
    reqs.push_back(r);
  }
  // "In the beginning" (the README's greedy completion repeats itself: prompt lookup's case).
  EngineRequest r;
  r.prompt = {8176, 40, 77, 258, 2152};
  r.max_tokens = max_tokens;
  r.sampling = greedy();
  reqs.push_back(r);
  return reqs;
}

TEST(SpeculativeGreedy, DemoPairTokenForTokenWithDraftModelAndPromptLookup) {
  comm::SingleRankCollective group;
  EngineOptions o;
  o.block_size = 16;
  o.num_blocks = 48;
  o.max_model_len = 160;
  LoadedModel target(kSource / "models" / "kjv-llama", o.num_blocks, o.block_size, group);
  LoadedModel draft(kSource / "models" / "kjv-llama-draft", o.num_blocks, o.block_size, group);
  auto reqs = demo_requests(3, 40);
  const auto plain = run_engine(*target.step, nullptr, o, reqs);
  ASSERT_EQ(plain.stats.spec_decode_drafts_total, 0);
  for (const auto& out : plain.outputs) ASSERT_EQ(out.size(), 40u);

  // Draft model, K = 4, one request plain (K = 0) in the same batch.
  reqs[1].num_speculative_tokens = 0;
  o.speculative = draft_model(4);
  const auto with_draft = run_engine(*target.step, draft.step.get(), o, reqs);
  EXPECT_EQ(with_draft.outputs, plain.outputs);
  EXPECT_GT(with_draft.stats.spec_decode_accepted_tokens_total, 0);
  EXPECT_LT(with_draft.stats.spec_decode_accepted_tokens_total,
            with_draft.stats.spec_decode_draft_tokens_total);
  EXPECT_EQ(with_draft.counters.accepted_tokens,
            with_draft.stats.spec_decode_accepted_tokens_total);
  // Each verify gains more than one token: the point of it.
  EXPECT_GT(with_draft.stats.spec_mean_accepted_length(), 1.5);

  o.speculative = draft_model(6, /*adaptive=*/true);
  const auto adaptive = run_engine(*target.step, draft.step.get(), o, reqs);
  EXPECT_EQ(adaptive.outputs, plain.outputs);

  o.speculative = ngram(4);
  const auto lookup = run_engine(*target.step, nullptr, o, reqs);
  EXPECT_EQ(lookup.outputs, plain.outputs);
  EXPECT_GT(lookup.stats.spec_decode_accepted_tokens_total, 0);
}

// ---------------------------------------------------------------------------------------------
// Greedy equality on the fixtures, against transformers' tokens.

struct FixturePrompt {
  std::vector<int32_t> ids, greedy;
};

std::vector<FixturePrompt> fixture_prompts(const fs::path& dir) {
  const auto ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  std::vector<FixturePrompt> out;
  for (const auto& p : ref["prompts"])
    out.push_back({p["ids"].get<std::vector<int32_t>>(), p["greedy"].get<std::vector<int32_t>>()});
  return out;
}

class SpeculativeFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(SpeculativeFixture, GreedyTokensMatchTransformersWithSpeculation) {
  const fs::path dir = kSource / "tests" / "fixtures" / GetParam();
  const auto prompts = fixture_prompts(dir);
  comm::SingleRankCollective group;
  EngineOptions o;
  o.block_size = 4;
  o.num_blocks = 80;
  o.max_model_len = 80;
  LoadedModel target(dir, o.num_blocks, o.block_size, group);
  LoadedModel self_draft(dir, o.num_blocks, o.block_size, group);
  LoadedModel random_draft(tiny_model(99, target.config.vocab_size), o.num_blocks, o.block_size,
                           group);
  std::vector<EngineRequest> reqs;
  for (const auto& p : prompts) {
    EngineRequest r;
    r.prompt = p.ids;
    r.max_tokens = static_cast<int32_t>(p.greedy.size());
    r.sampling = greedy();
    reqs.push_back(r);
  }
  reqs[2].num_speculative_tokens = 0;  // a plain request among speculating ones
  auto expect_reference = [&](const testing_support::EngineRun& run, const char* what) {
    for (std::size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(run.outputs[i], prompts[i].greedy) << what << ", prompt " << i;
  };

  o.speculative = draft_model(3);
  const auto self = run_engine(*target.step, self_draft.step.get(), o, reqs);
  expect_reference(self, "self-draft");
  // The model drafting for itself agrees everywhere: every draft is accepted, which holds only
  // if the draft's KV is right after every catch-up (d_K, accepted drafts it never fed).
  EXPECT_GT(self.stats.spec_decode_draft_tokens_total, 0);
  EXPECT_EQ(self.stats.spec_decode_accepted_tokens_total,
            self.stats.spec_decode_draft_tokens_total);

  o.speculative = draft_model(4);
  const auto rnd = run_engine(*target.step, random_draft.step.get(), o, reqs);
  expect_reference(rnd, "random draft");
  EXPECT_LT(rnd.stats.spec_acceptance_rate(), 0.5);  // mostly the rejection path

  o.speculative = ngram(5);
  expect_reference(run_engine(*target.step, nullptr, o, reqs), "prompt lookup");

  // A pool too small for all four: preemption and recomputation with speculation on.
  EngineOptions tight = o;
  tight.num_blocks = 22;  // 88 slots >= max_model_len
  tight.speculative = draft_model(4, /*adaptive=*/true);
  LoadedModel small_target(dir, tight.num_blocks, tight.block_size, group);
  LoadedModel small_draft(dir, tight.num_blocks, tight.block_size, group);
  const auto squeezed = run_engine(*small_target.step, small_draft.step.get(), tight, reqs);
  expect_reference(squeezed, "tiny pool");
  EXPECT_GT(squeezed.stats.preemptions_total, 0);
  EXPECT_EQ(squeezed.stats.spec_decode_accepted_tokens_total,
            squeezed.stats.spec_decode_draft_tokens_total);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SpeculativeFixture,
                         ::testing::Values("llama3-bpe", "llama2-sp"));

// ---------------------------------------------------------------------------------------------
// Self-drafting with sampling and penalties: the draft's processed distribution is the target's.

TEST(SpeculativeSampling, SelfDraftAcceptsEverythingWithPenaltiesAndFilters) {
  const fs::path dir = tiny_model(7, 61);
  comm::SingleRankCollective group;
  EngineOptions o;
  o.num_blocks = 96;
  o.max_model_len = 96;
  LoadedModel target(dir, o.num_blocks, o.block_size, group);
  LoadedModel draft(dir, o.num_blocks, o.block_size, group);
  std::vector<EngineRequest> reqs;
  for (int i = 0; i < 4; ++i) {
    EngineRequest r;
    r.prompt = {1, 5 + i, 9, 3 + i};
    r.max_tokens = 40;
    r.sampling.temperature = 0.9f;
    r.sampling.top_k = i == 1 ? 20 : 0;
    r.sampling.top_p = i == 2 ? 0.9f : 1.0f;
    r.sampling.repetition_penalty = i == 3 ? 1.3f : 1.0f;
    r.sampling.frequency_penalty = 0.4f;
    r.sampling.presence_penalty = i == 0 ? 0.3f : 0.0f;
    r.sampling.seed = 100 + i;
    reqs.push_back(r);
  }
  o.speculative = draft_model(4);
  const auto run = run_engine(*target.step, draft.step.get(), o, reqs);
  EXPECT_GT(run.stats.spec_decode_draft_tokens_total, 40);
  EXPECT_EQ(run.stats.spec_decode_accepted_tokens_total, run.stats.spec_decode_draft_tokens_total);
  for (const auto& out : run.outputs) EXPECT_EQ(out.size(), 40u);
}

// ---------------------------------------------------------------------------------------------
// The sampled distribution: a tiny target and a different tiny draft over 12 tokens.

// Pearson's statistic over cells, those with expected count < 5 pooled into one.
double chi_square(const std::vector<double>& counts, const std::vector<double>& probs, double n,
                  int* df) {
  double stat = 0, pooled_obs = 0, pooled_exp = 0;
  int cells = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const double e = probs[i] * n;
    if (e < 5) {
      pooled_obs += counts[i];
      pooled_exp += e;
      continue;
    }
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pooled_exp > 0) {
    stat += (pooled_obs - pooled_exp) * (pooled_obs - pooled_exp) / std::max(pooled_exp, 1e-9);
    ++cells;
  }
  *df = cells - 1;
  return stat;
}

// Upper quantile of chi-square with df degrees of freedom (Wilson-Hilferty); z = 3.09 is the
// standard normal's 0.999 quantile.
double chi_square_critical(int df, double z = 3.09) {
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

TEST(SpeculativeSampling, ChiSquareTokensFollowTheTargetDistribution) {
  constexpr int64_t V = 12;
  constexpr int kBlock = 4, kK = 3, kBatch = 500, kBatches = 60;
  constexpr int64_t N = int64_t{kBatch} * kBatches;
  const fs::path target_dir = tiny_model(11, V), draft_dir = tiny_noisy_copy(11, V, 0.07);
  comm::SingleRankCollective group;
  const int64_t blocks = 2 * kBatch + 4;
  LoadedModel target(target_dir, blocks, kBlock, group);
  LoadedModel draft(draft_dir, blocks, kBlock, group);
  LoadedModel reference(target_dir, 4, kBlock, group);
  LoadedModel draft_reference(draft_dir, 4, kBlock, group);
  const std::vector<int32_t> prompt = {1, 7, 3};
  messages::SamplingParams params;  // T = 1, no filters: the distribution has full support
  params.temperature = 1.0f;

  // Exact distributions of the first two tokens, from plain forward passes.
  auto dist = [&](LoadedModel& m, const std::vector<int32_t>& ctx) {
    const auto plan = testing_support::make_plan(
        {{.id = 1, .tokens = ctx, .blocks = {0, 1}, .prompt_len = 3, .sampling = params}});
    const auto l = m.runner->forward(plan);
    return kernels::cpu::sampling_distribution(l.row(0), V, params, {});
  };
  const auto p1 = dist(reference, prompt);
  std::vector<double> joint(V * V), q1 = dist(draft_reference, prompt);
  for (int32_t a = 0; a < V; ++a) {
    auto ctx = prompt;
    ctx.push_back(a);
    const auto p2 = dist(reference, ctx);
    for (int32_t b = 0; b < V; ++b) joint[a * V + b] = p1[a] * p2[b];
  }

  // Each draw: one sequence whose first step prefills the prompt and verifies 3 drafts of the
  // draft model; a sequence that got only one token gets its second from a plain decode.
  StepExecutor executor(*target.step, draft.step.get());
  std::vector<double> first(V), pairs(V * V);
  uint64_t next_id = 1;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<testing_support::SeqChunk> chunks;
    for (int i = 0; i < kBatch; ++i) {
      messages::SamplingParams p = params;
      p.seed = 1000003ull * (b * kBatch + i) + 17;
      auto tokens = prompt;
      tokens.insert(tokens.end(), kK, -1);
      chunks.push_back({.id = next_id + i, .tokens = tokens, .num_logits = kK + 1,
                        .blocks = {2 * i, 2 * i + 1}, .prompt_len = 3, .sampling = p});
    }
    auto plan = testing_support::make_plan(chunks, 2 * b + 1);
    for (auto& s : plan.seqs) {
      s.num_draft = kK;
      s.draft_source = messages::DraftSource::kDraftModel;
    }
    const auto result = executor.execute(plan);
    ASSERT_EQ(result.seq_ids.size(), static_cast<size_t>(kBatch));
    std::vector<testing_support::SeqChunk> seconds;
    std::vector<int32_t> first_of(kBatch);
    for (int i = 0; i < kBatch; ++i) {
      const int32_t begin = result.sample_offsets[i], count = result.sample_offsets[i + 1] - begin;
      ASSERT_GE(count, 1);
      ASSERT_LE(count, kK + 1);
      const int32_t a = result.tokens[begin].token_id;
      first[a] += 1;
      first_of[i] = a;
      if (count >= 2) {
        pairs[a * V + result.tokens[begin + 1].token_id] += 1;
      } else {
        seconds.push_back({.id = next_id + i, .tokens = {a}, .start_pos = 3, .num_logits = 1,
                           .blocks = {2 * i, 2 * i + 1}, .prompt_len = 3,
                           .sampling = chunks[i].sampling});
      }
    }
    if (!seconds.empty()) {
      const auto second = executor.execute(testing_support::make_plan(seconds, 2 * b + 2));
      for (std::size_t j = 0; j < second.seq_ids.size(); ++j) {
        const int i = static_cast<int>(second.seq_ids[j] - next_id);
        pairs[first_of[i] * V + second.tokens[second.sample_offsets[j]].token_id] += 1;
      }
    }
    messages::StepPlan release;
    for (int i = 0; i < kBatch; ++i) release.released.push_back(next_id + i);
    executor.execute(release);
    next_id += kBatch;
  }
  const double acceptance = executor.counters().acceptance_rate();
  EXPECT_GT(acceptance, 0.2) << "the draft should be a plausible one";
  EXPECT_LT(acceptance, 0.9) << "the draft must differ from the target to test the residual";

  int df1 = 0, df2 = 0;
  const double x1 = chi_square(first, p1, N, &df1);
  const double x2 = chi_square(pairs, joint, N, &df2);
  EXPECT_LT(x1, chi_square_critical(df1)) << "first token: chi2 " << x1 << " df " << df1;
  EXPECT_LT(x2, chi_square_critical(df2)) << "first two tokens: chi2 " << x2 << " df " << df2;
  RecordProperty("chi2_first", std::to_string(x1));
  RecordProperty("chi2_pairs", std::to_string(x2));

  // The same counts reject what wrong rules would have produced for the first token:
  //  - accept always: the draft's distribution q1;
  //  - on rejection, resample from the target instead of max(0, p - q): p1 mixed with q1;
  //  - ratio the wrong way round, min(1, q/p), with the residual max(0, p - q).
  std::vector<double> always(q1), from_target(V, 0.0), swapped(V, 0.0);
  double accept_mass = 0;
  for (int32_t d = 0; d < V; ++d) accept_mass += std::min(p1[d], q1[d]);
  for (int32_t x = 0; x < V; ++x)
    from_target[x] = std::min(p1[x], q1[x]) + (1 - accept_mass) * p1[x];
  {
    // Accept d with min(1, q/p): mass q(d) min(1, q(d)/p(d)); rejection mass r; residual p - q.
    double rejected = 0, residual_total = 0;
    std::vector<double> residual(V);
    for (int32_t d = 0; d < V; ++d) {
      const double a = std::min(1.0, q1[d] / p1[d]);
      swapped[d] += q1[d] * a;
      rejected += q1[d] * (1 - a);
      residual[d] = std::max(0.0, p1[d] - q1[d]);
      residual_total += residual[d];
    }
    for (int32_t x = 0; x < V; ++x) swapped[x] += rejected * residual[x] / residual_total;
  }
  const char* names[] = {"chi2_accept_always", "chi2_resample_from_target", "chi2_swapped_ratio"};
  int w = 0;
  for (const auto* wrong : {&always, &from_target, &swapped}) {
    int df = 0;
    const double x = chi_square(first, *wrong, N, &df);
    EXPECT_GT(x, chi_square_critical(df)) << names[w] << ": a wrong rule was not rejected";
    RecordProperty(names[w++], std::to_string(x));
  }
  RecordProperty("acceptance", std::to_string(acceptance));
  RecordProperty("critical_first", std::to_string(chi_square_critical(df1)));
  RecordProperty("critical_pairs", std::to_string(chi_square_critical(df2)));
}

// ---------------------------------------------------------------------------------------------
// Penalty state: accepted drafts count, rejected ones never do.

StepLogits rows(std::vector<std::vector<std::pair<int32_t, float>>> bumps, int64_t vocab) {
  StepLogits l;
  l.rows = static_cast<int64_t>(bumps.size());
  l.vocab = vocab;
  l.data.assign(l.rows * vocab, 0.0f);
  for (int64_t r = 0; r < l.rows; ++r)
    for (auto [t, v] : bumps[r]) l.data[r * vocab + t] = v;
  return l;
}

TEST(SpeculativeSampler, PenaltiesSeeAcceptedDraftsOnlyAndMatchSequentialDecoding) {
  constexpr int64_t V = 10;
  messages::SamplingParams p = greedy();
  p.frequency_penalty = 1.0f;
  // Row 0 prefers 7 (3.0); row 1 prefers 7 (1.5) over 4 (1.0) unless 7 was generated once
  // already (1.5 - 1 < 1.0); row 2 prefers 8.
  const auto logits = rows({{{7, 3.0f}}, {{7, 1.5f}, {4, 1.0f}}, {{8, 2.0f}}}, V);
  // Prompt [5, 6] and drafts [7, 7] in one step: 7 is accepted at row 0; at row 1 the penalty
  // for the accepted 7 makes 4 win: the second draft is rejected and 4 comes out, as sequential
  // decoding gives.
  Sampler spec;
  auto plan = testing_support::make_plan(
      {{.id = 1, .tokens = {5, 6, 7, 7}, .num_logits = 3, .blocks = {0}, .prompt_len = 2,
        .sampling = p}});
  plan.seqs[0].num_draft = 2;
  spec.observe(plan);
  EXPECT_TRUE(spec.penalty_history(1).output_counts.empty()) << "drafts counted before verify";
  VerifyCounts counts;
  const auto result = spec.sample(plan, logits, nullptr, &counts);
  ASSERT_EQ(result.tokens.size(), 2u);
  EXPECT_EQ(result.tokens[0].token_id, 7);
  EXPECT_EQ(result.tokens[1].token_id, 4);
  EXPECT_EQ(counts.proposed, 2);
  EXPECT_EQ(counts.accepted, 1);
  // History: the accepted 7 at position 2; not the rejected 7 at position 3, not the resampled
  // 4 (it is fed, and counted, next step).
  const auto h = spec.penalty_history(1);
  std::map<int32_t, int32_t> counts_of(h.output_counts.begin(), h.output_counts.end());
  EXPECT_EQ(counts_of[7], 1);
  EXPECT_EQ(counts_of.count(4), 0u);

  // Sequential decoding of the same positions with the same rows gives the same tokens.
  Sampler seq;
  auto step = [&](std::vector<int32_t> tokens, int32_t start, const StepLogits& l) {
    auto pl = testing_support::make_plan({{.id = 1, .tokens = tokens, .start_pos = start,
                                           .num_logits = 1, .blocks = {0}, .prompt_len = 2,
                                           .sampling = p}});
    seq.observe(pl);
    return seq.sample(pl, l).tokens.at(0).token_id;
  };
  EXPECT_EQ(step({5, 6}, 0, rows({{{7, 3.0f}}}, V)), 7);
  EXPECT_EQ(step({7}, 2, rows({{{7, 1.5f}, {4, 1.0f}}}, V)), 4);

  // The next step feeds the resampled 4 at position 3 (where the rejected draft's KV was):
  // the rejected draft left no trace.
  auto next = testing_support::make_plan(
      {{.id = 1, .tokens = {4}, .start_pos = 3, .blocks = {0}, .prompt_len = 2, .sampling = p}});
  spec.observe(next);
  const auto h2 = spec.penalty_history(1);
  std::map<int32_t, int32_t> after(h2.output_counts.begin(), h2.output_counts.end());
  EXPECT_EQ(after[7], 1);
  EXPECT_EQ(after[4], 1);
}

TEST(SpeculativeSampler, AllAcceptedGivesTheBonusTokenAndPointMassRejectionNeverRepeatsTheDraft) {
  constexpr int64_t V = 6;
  messages::SamplingParams g = greedy();
  Sampler s;
  auto plan = testing_support::make_plan(
      {{.id = 1, .tokens = {1, 2, 3}, .num_logits = 3, .blocks = {0}, .prompt_len = 1,
        .sampling = g}});
  plan.seqs[0].num_draft = 2;
  s.observe(plan);
  const auto all = s.sample(plan, rows({{{2, 1.0f}}, {{3, 1.0f}}, {{5, 1.0f}}}, V));
  ASSERT_EQ(all.tokens.size(), 3u);
  EXPECT_EQ(all.tokens[2].token_id, 5);  // bonus from the last row
  // Sampled (T = 1) with a point-mass draft that the target gives probability ~0: rejected,
  // and the resample is never the draft token.
  messages::SamplingParams t1;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    t1.seed = seed;
    Sampler r;
    auto pl = testing_support::make_plan(
        {{.id = 2, .tokens = {1, 4}, .num_logits = 2, .blocks = {0}, .prompt_len = 1,
          .sampling = t1}});
    pl.seqs[0].num_draft = 1;
    r.observe(pl);
    const auto out = r.sample(pl, rows({{{4, -30.0f}}, {}}, V));
    ASSERT_EQ(out.tokens.size(), 1u);
    EXPECT_NE(out.tokens[0].token_id, 4);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor parallelism: two ranks on threads, the draft on every rank or on rank 0 only.

TEST(SpeculativeTensorParallel, DraftOnEveryRankOrRankZeroGivesTheSameGreedyTokens) {
  const fs::path target_dir = tiny_model(31, 61), draft_dir = tiny_model(37, 61);
  constexpr int kBlocks = 64, kBlock = 4;
  std::vector<EngineRequest> reqs;
  for (int i = 0; i < 3; ++i) {
    EngineRequest r;
    r.prompt = {1, 4 + i, 8, 9 + i, 4 + i, 8};
    r.max_tokens = 24;
    r.sampling = greedy();
    reqs.push_back(r);
  }
  EngineOptions o;
  o.num_blocks = kBlocks;
  o.max_model_len = 64;

  // Runs the engine with 2 ranks: the draft sharded over both, or whole on rank 0.
  auto run_tp = [&](SpeculativeConfig sp, DraftPlacement placement, bool with_draft) {
    testing_support::ThreadGroup threads(2);
    testing_support::ThreadCollective c0(threads, 0), c1(threads, 1);
    comm::SingleRankCollective solo;
    LoadedModel t0(target_dir, kBlocks, kBlock, c0), t1(target_dir, kBlocks, kBlock, c1);
    std::unique_ptr<LoadedModel> d0, d1;
    if (with_draft) {
      if (placement == DraftPlacement::kEveryRank) {
        d0 = std::make_unique<LoadedModel>(draft_dir, kBlocks, kBlock, c0);
        d1 = std::make_unique<LoadedModel>(draft_dir, kBlocks, kBlock, c1);
      } else {
        d0 = std::make_unique<LoadedModel>(draft_dir, kBlocks, kBlock, solo);
      }
    }
    StepExecutor e0(*t0.step, d0 ? d0->step.get() : nullptr, {0, placement, &c0});
    StepExecutor e1(*t1.step, d1 ? d1->step.get() : nullptr, {1, placement, &c1});
    // The engine loop, with rank 1 running every plan on its own thread.
    coordinator::SchedulerConfig sc;
    sc.block_size = kBlock;
    sc.num_blocks = kBlocks;
    sc.max_model_len = o.max_model_len;
    sc.max_num_batched_tokens = 256;
    sc.max_num_seqs = 8;
    sc.speculative = sp;
    coordinator::Scheduler sched(sc);
    std::vector<std::vector<int32_t>> outs(reqs.size());
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      coordinator::RequestSpec spec;
      spec.request_id = std::to_string(i);
      spec.prompt_token_ids = reqs[i].prompt;
      spec.sampling = reqs[i].sampling;
      spec.max_tokens = reqs[i].max_tokens;
      spec.ignore_eos = true;
      spec.arrival_time = double(i);
      sched.add_request(std::move(spec));
    }
    while (sched.has_unfinished_requests()) {
      const auto plan = sched.schedule();
      messages::StepResult r0, r1;
      std::thread other([&] { r1 = e1.execute(plan); });
      r0 = e0.execute(plan);
      other.join();
      if (placement == DraftPlacement::kEveryRank) {
        EXPECT_EQ(r0.tokens.size(), r1.tokens.size()) << "ranks disagree";
      }
      if (plan.seqs.empty()) continue;
      for (auto& out : sched.on_step_result(r0))
        for (const auto& t : out.new_tokens) outs[std::stoul(out.request_id)].push_back(t.token_id);
    }
    return std::make_pair(outs, sched.stats());
  };
  const auto plain = run_tp({}, DraftPlacement::kEveryRank, false);
  const auto every = run_tp(draft_model(3), DraftPlacement::kEveryRank, true);
  const auto zero = run_tp(draft_model(3), DraftPlacement::kRankZero, true);
  const auto lookup = run_tp(ngram(3), DraftPlacement::kRankZero, false);
  for (const auto& out : plain.first) EXPECT_EQ(out.size(), 24u);
  EXPECT_EQ(every.first, plain.first);
  EXPECT_EQ(zero.first, plain.first);
  EXPECT_EQ(lookup.first, plain.first);
  EXPECT_GT(every.second.spec_decode_draft_tokens_total, 0);
  EXPECT_GT(zero.second.spec_decode_draft_tokens_total, 0);
}

}  // namespace
}  // namespace shardserve::worker
