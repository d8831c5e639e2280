// Speculative decoding in the scheduler, on hand-checked scenarios: prompt-lookup proposals,
// how many drafts a step may verify (budget, max_tokens, context, per-request K, adaptive K),
// lookahead slots and their rollback, stop conditions inside the accepted tokens, prefix-cache
// registration of blocks that accepted drafts complete, and the counters.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/ngram_proposer.h"
#include "coordinator/scheduler.h"
#include "coordinator/speculative_policy.h"
#include "tests/scheduler/fake_worker.h"

namespace shardserve::coordinator {
namespace {

using testing::FakeWorker;

// ---- prompt lookup ----------------------------------------------------------------------------

TEST(NgramProposer, ProposesWhatFollowedTheLongestRepeatedSuffix) {
  // ... 5 6 7 [8 9] ... 5 6 7 -> suffix "5 6 7" occurred at 0; 8 9 followed it.
  const std::vector<int32_t> t = {5, 6, 7, 8, 9, 1, 2, 5, 6, 7};
  EXPECT_EQ(propose_ngram(t, 2, 1, 3), (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(propose_ngram(t, 4, 1, 3), (std::vector<int32_t>{8, 9, 1, 2}));
  EXPECT_TRUE(propose_ngram(t, 0, 1, 3).empty());
  // Nothing repeats.
  EXPECT_TRUE(propose_ngram(std::vector<int32_t>{1, 2, 3, 4}, 3, 1, 3).empty());
  // A suffix shorter than n_min does not count.
  EXPECT_TRUE(propose_ngram(std::vector<int32_t>{1, 2, 9, 1}, 3, 2, 3).empty());
  EXPECT_EQ(propose_ngram(std::vector<int32_t>{1, 2, 9, 1}, 3, 1, 3),
            (std::vector<int32_t>{2, 9, 1}));
}

TEST(NgramProposer, LongerSuffixWinsAndTheMostRecentFullContinuation) {
  // Suffix "3 4": occurrences at 1 (-> 7 7) and at 5 (-> 8 8); the most recent with 2 tokens
  // after it wins.
  const std::vector<int32_t> t = {0, 3, 4, 7, 7, 3, 4, 8, 8, 3, 4};
  EXPECT_EQ(propose_ngram(t, 2, 1, 2), (std::vector<int32_t>{8, 8}));
  // Asking for 5: none of the recent ones has 5 after it; the earliest (longest) one is used.
  EXPECT_EQ(propose_ngram(t, 5, 1, 2), (std::vector<int32_t>{7, 7, 3, 4, 8}));
  // A repetition loop proposes its continuation.
  EXPECT_EQ(propose_ngram(std::vector<int32_t>{1, 2, 1, 2, 1, 2}, 3, 1, 2),
            (std::vector<int32_t>{1, 2, 1}));
}

// ---- adaptive K ---------------------------------------------------------------------------

TEST(SpeculativePolicy, ExpectedTokensAndBestK) {
  EXPECT_DOUBLE_EQ(expected_tokens_per_verify(0.5, 0), 1.0);
  EXPECT_DOUBLE_EQ(expected_tokens_per_verify(0.5, 3), 1.875);
  EXPECT_DOUBLE_EQ(expected_tokens_per_verify(1.0, 4), 5.0);
  // Free drafts: the more the better; expensive drafts at low acceptance: one.
  EXPECT_EQ(best_num_draft(0.8, 8, 0.0), 8);
  EXPECT_EQ(best_num_draft(0.2, 8, 0.5), 1);
  // a = 0.8, c = 0.05: (1 - 0.8^(k+1)) / 0.2 / (1 + 0.05 k) is 3.078, 3.082, 3.092, 3.078 at
  // k = 6, 7, 8, 9: the peak is 8.
  EXPECT_EQ(best_num_draft(0.8, 12, 0.05), 8);
  EXPECT_EQ(best_num_draft(0.8, 5, 0.05), 5);
  AcceptanceEstimate e;
  EXPECT_DOUBLE_EQ(e.rate(0.6), 0.6);
  e.update(4, 4, 0.9);  // 4 successes in 4 trials
  e.update(0, 4, 0.9);  // 0 in 1
  EXPECT_NEAR(e.rate(0.6), (0.9 * 4 + 2 * 0.6) / (0.9 * 4 + 1 + 2), 1e-12);
}

// ---- the scheduler ------------------------------------------------------------------------

SchedulerConfig spec_config(SpeculativeMethod method, int32_t k) {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 16;
  c.max_num_batched_tokens = 16;
  c.max_num_seqs = 4;
  c.max_model_len = 48;
  c.watermark = 0.0;
  c.eos_token_ids = {2};
  c.speculative.method = method;
  c.speculative.num_speculative_tokens = k;
  return c;
}

RequestSpec spec(const std::string& id, std::vector<int32_t> prompt, int32_t max_tokens = 100) {
  RequestSpec s;
  s.request_id = id;
  s.prompt_token_ids = std::move(prompt);
  s.max_tokens = max_tokens;
  return s;
}

// Drives the scheduler against the FakeWorker; verify outcomes are scripted per step.
struct Harness {
  explicit Harness(SchedulerConfig c) : sched(c), worker(c.num_blocks, c.block_size) {}

  uint64_t add(RequestSpec s) {
    auto prompt = s.prompt_token_ids;
    auto r = sched.add_request(std::move(s));
    EXPECT_FALSE(r.rejection);
    truth[r.seq_id] = prompt;
    return r.seq_id;
  }

  // One step. `accept(seq, drafts)` gives the tokens a verify returns; plain samples are 5.
  std::vector<RequestOutput> step(
      std::function<std::vector<int32_t>(uint64_t, const std::vector<int32_t>&)> accept = nullptr) {
    plan = sched.schedule();
    if (plan.seqs.empty()) return {};
    if (!accept) accept = [](uint64_t, const std::vector<int32_t>& d) {  // reject all, yield 5
      return std::vector<int32_t>{d.empty() || d[0] != 5 ? 5 : 6};
    };
    int32_t next_draft = 20;
    auto result = worker.execute(
        plan, [&](uint64_t s) -> const std::vector<int32_t>& { return truth.at(s); },
        [](uint64_t) { return 5; }, accept, [&](uint64_t) { return next_draft++; });
    auto outs = sched.on_step_result(result);
    for (const auto& o : outs) {
      for (const auto& t : o.new_tokens) truth[o.seq_id].push_back(t.token_id);
      if (o.finished) finished[o.request_id] = o;
    }
    sched.kv_cache().check_invariants();
    return outs;
  }

  const messages::SequenceWork* work(uint64_t seq) const {
    for (const auto& w : plan.seqs)
      if (w.seq_id == seq) return &w;
    return nullptr;
  }
  std::vector<int32_t> plan_tokens(uint64_t seq) const {
    const auto* w = work(seq);
    return std::vector<int32_t>(plan.token_ids.begin() + w->token_offset,
                                plan.token_ids.begin() + w->token_offset + w->num_tokens);
  }

  Scheduler sched;
  FakeWorker worker;
  messages::StepPlan plan;
  std::map<uint64_t, std::vector<int32_t>> truth;
  std::map<std::string, RequestOutput> finished;
};

std::vector<int32_t> accept_all_then(int32_t bonus, const std::vector<int32_t>& d) {
  std::vector<int32_t> out = d;
  out.push_back(bonus);
  return out;
}

TEST(SpeculativeScheduler, DraftModelDecodeVerifiesKPlaceholdersWithLookahead) {
  Harness h(spec_config(SpeculativeMethod::kDraftModel, 3));
  const uint64_t a = h.add(spec("a", {10, 11, 12, 13, 14}));
  h.step();  // prefill: no drafts (speculation starts with the first decode)
  EXPECT_EQ(h.work(a)->num_draft, 0);
  EXPECT_EQ(h.work(a)->num_logits, 1);
  h.step([](uint64_t, const std::vector<int32_t>& d) { return accept_all_then(7, d); });
  const auto* w = h.work(a);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->start_pos, 5);
  EXPECT_EQ(w->num_draft, 3);
  EXPECT_EQ(w->num_tokens, 4);
  EXPECT_EQ(w->num_logits, 4);
  EXPECT_EQ(w->draft_source, messages::DraftSource::kDraftModel);
  EXPECT_EQ(h.plan_tokens(a), (std::vector<int32_t>{5, -1, -1, -1}));
  EXPECT_EQ(w->num_blocks, 3);  // positions 0..8
  // All three drafts (20, 21, 22) and the bonus 7 accepted: 4 tokens in one step.
  const Request* r = h.sched.find(a);
  EXPECT_EQ(r->tokens, (std::vector<int32_t>{10, 11, 12, 13, 14, 5, 20, 21, 22, 7}));
  EXPECT_EQ(r->num_computed_tokens, 9);
  const auto st = h.sched.stats();
  EXPECT_EQ(st.spec_decode_drafts_total, 1);
  EXPECT_EQ(st.spec_decode_draft_tokens_total, 3);
  EXPECT_EQ(st.spec_decode_accepted_tokens_total, 3);
  EXPECT_DOUBLE_EQ(st.spec_mean_accepted_length(), 4.0);
}

TEST(SpeculativeScheduler, RollbackFreesTheBlocksThatOnlyRejectedDraftsUsed) {
  auto c = spec_config(SpeculativeMethod::kDraftModel, 6);
  Harness h(c);
  const uint64_t a = h.add(spec("a", {10, 11, 12}));
  h.step();  // prefill [0, 3) -> token 5 at position 3; one block
  EXPECT_EQ(h.sched.kv_cache().block_table(a).size(), 1u);
  // Decode at position 3 with 6 drafts: positions 3..9 need blocks 0, 1, 2.
  std::vector<RequestOutput> outs = h.step();  // every draft rejected: one token
  EXPECT_EQ(h.work(a)->num_blocks, 3);
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].new_tokens.size(), 1u);
  const Request* r = h.sched.find(a);
  EXPECT_EQ(r->num_computed_tokens, 4);
  EXPECT_EQ(r->num_tokens(), 5);
  // Blocks 1 (positions 4..7, holds the new token's slot) stays; block 2 held only drafts.
  EXPECT_EQ(h.sched.kv_cache().block_table(a).size(), 2u);
  EXPECT_EQ(h.sched.stats().spec_decode_rollback_blocks_total, 1);
  EXPECT_EQ(h.sched.stats().kv_blocks_used, 2);
  // Two of six accepted at the next step: tokens through position 7, computed 7.
  h.step([](uint64_t, const std::vector<int32_t>& d) {
    return std::vector<int32_t>{d[0], d[1], 9};
  });
  r = h.sched.find(a);
  EXPECT_EQ(r->num_computed_tokens, 7);
  EXPECT_EQ(r->num_tokens(), 8);
  EXPECT_EQ(h.sched.kv_cache().block_table(a).size(), 2u);
  // The FakeWorker has checked in every step that the positions attended to hold exactly the
  // sequence's tokens: the rejected drafts' KV was never treated as valid.
}

TEST(SpeculativeScheduler, StopInsideTheAcceptedTokensDropsTheRest) {
  Harness h(spec_config(SpeculativeMethod::kDraftModel, 4));
  const uint64_t a = h.add(spec("a", {10, 11, 12}));
  h.step();
  // The verify returns [20, EOS, 22, 23, 8]: the request stops at EOS (2).
  auto outs = h.step([](uint64_t, const std::vector<int32_t>&) {
    return std::vector<int32_t>{20, 2, 22, 23, 8};
  });
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_TRUE(outs[0].finished);
  EXPECT_EQ(outs[0].finish_detail, "eos");
  ASSERT_EQ(outs[0].new_tokens.size(), 2u);
  EXPECT_EQ(outs[0].new_tokens[1].token_id, 2);
  EXPECT_EQ(outs[0].num_output_tokens, 3);  // 5, 20, EOS
  EXPECT_EQ(h.sched.find(a), nullptr);
  EXPECT_EQ(h.sched.stats().kv_blocks_used, 0);
  // max_tokens inside the accepted run: also cut there.
  Harness g(spec_config(SpeculativeMethod::kDraftModel, 4));
  const uint64_t b = g.add(spec("b", {10, 11, 12}, /*max_tokens=*/3));
  g.step();  // output 1
  EXPECT_EQ(g.sched.find(b)->num_output_tokens(), 1);
  // Two outputs left: at most 1 draft (a verify yields up to drafts + 1 tokens).
  outs = g.step([](uint64_t, const std::vector<int32_t>& d) { return accept_all_then(8, d); });
  EXPECT_EQ(g.work(b)->num_draft, 1);
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_TRUE(outs[0].finished);
  EXPECT_EQ(outs[0].finish_detail, "max_tokens");
  EXPECT_EQ(outs[0].num_output_tokens, 3);
}

TEST(SpeculativeScheduler, StopStringInsideAcceptedTokens) {
  Harness h(spec_config(SpeculativeMethod::kDraftModel, 4));
  RequestSpec s = spec("a", {10, 11, 12});
  s.stop_strings = {"hi"};
  s.text_stream = std::make_unique<testing::CharStream>();  // token t reads 'a' + t
  h.add(std::move(s));
  h.step();  // 5 -> "f"
  // 'h' = 7, 'i' = 8: the run [7, 8, 9, 10] stops after 8.
  auto outs = h.step([](uint64_t, const std::vector<int32_t>&) {
    return std::vector<int32_t>{7, 8, 9, 10};
  });
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_TRUE(outs[0].finished);
  EXPECT_EQ(outs[0].finish_detail, "stop_string");
  EXPECT_EQ(outs[0].new_tokens.size(), 2u);
  EXPECT_EQ(outs[0].new_text, "");
}

TEST(SpeculativeScheduler, ContextLengthClipsK) {
  auto c = spec_config(SpeculativeMethod::kDraftModel, 8);
  c.max_model_len = 12;
  c.num_blocks = 8;
  Harness h(c);
  const uint64_t a = h.add(spec("a", {10, 11, 12, 13, 14, 15, 16, 17}, 100));
  h.step();  // 9 tokens
  h.step();  // 9 tokens known: drafts <= 12 - 9 - 1 = 2
  EXPECT_EQ(h.work(a)->num_draft, 2);
}

TEST(SpeculativeScheduler, DraftsComeOnlyFromBudgetLeftAfterEveryDecode) {
  auto c = spec_config(SpeculativeMethod::kDraftModel, 4);
  c.max_num_batched_tokens = 6;
  Harness h(c);
  const uint64_t a = h.add(spec("a", {10, 11}));
  const uint64_t b = h.add(spec("b", {12, 13}));
  const uint64_t d = h.add(spec("d", {14, 15}));
  h.step();  // the three prompts (6 tokens)
  h.step();
  // Three decodes in a budget of 6: 3 tokens for the decodes, 3 for drafts, first come first.
  EXPECT_EQ(h.plan.total_tokens(), 6);
  EXPECT_EQ(h.work(a)->num_draft, 3);
  EXPECT_EQ(h.work(b)->num_draft, 0);
  EXPECT_EQ(h.work(d)->num_draft, 0);
  EXPECT_EQ(h.work(d)->num_tokens, 1);
}

TEST(SpeculativeScheduler, PerRequestKMixesSpeculatingAndPlainDecodes) {
  Harness h(spec_config(SpeculativeMethod::kDraftModel, 4));
  RequestSpec off = spec("off", {10, 11});
  off.num_speculative_tokens = 0;
  RequestSpec two = spec("two", {12, 13});
  two.num_speculative_tokens = 2;
  RequestSpec many = spec("many", {14, 15});
  many.num_speculative_tokens = 99;  // capped at the engine's 4
  const uint64_t a = h.add(std::move(off));
  const uint64_t b = h.add(std::move(two));
  const uint64_t d = h.add(std::move(many));
  h.step();
  h.step();
  EXPECT_EQ(h.work(a)->num_draft, 0);
  EXPECT_EQ(h.work(a)->num_logits, 1);
  EXPECT_EQ(h.work(b)->num_draft, 2);
  EXPECT_EQ(h.work(d)->num_draft, 4);
}

TEST(SpeculativeScheduler, PromptLookupPutsItsDraftsInThePlan) {
  Harness h(spec_config(SpeculativeMethod::kNgram, 3));
  // The FakeWorker samples 5: after the prefill the tokens end "... 5 40 41 5", whose suffix "5"
  // occurred at position 0, followed by 40 41 42.
  const uint64_t a = h.add(spec("a", {5, 40, 41, 42, 43, 5, 40, 41}));
  h.step();  // tokens 5 40 41 42 43 5 40 41 5: suffix "41 5" is new, "5" was followed by 40
  h.step();
  const auto* w = h.work(a);
  EXPECT_EQ(w->draft_source, messages::DraftSource::kPlan);
  EXPECT_EQ(w->num_draft, 3);
  // Most recent occurrence of "5" with 3 tokens after it: position 5 -> 40 41 5.
  EXPECT_EQ(h.plan_tokens(a), (std::vector<int32_t>{5, 40, 41, 5}));
  // Nothing repeats: a plain decode.
  Harness g(spec_config(SpeculativeMethod::kNgram, 3));
  const uint64_t b = g.add(spec("b", {30, 31, 32, 33}));
  g.step();  // ... 33 5
  g.step();
  EXPECT_EQ(g.work(b)->num_draft, 0);
  EXPECT_EQ(g.work(b)->num_logits, 1);
}

TEST(SpeculativeScheduler, LookaheadUsesOnlyFreeBlocksAndNeverPreempts) {
  auto c = spec_config(SpeculativeMethod::kDraftModel, 8);
  c.num_blocks = 12;  // 48 slots = max_model_len
  c.max_num_batched_tokens = 64;
  Harness h(c);
  const uint64_t a = h.add(spec("a", std::vector<int32_t>(20, 10), 100));
  const uint64_t b = h.add(spec("b", std::vector<int32_t>(23, 11), 100));
  h.step();  // both prompts: 5 + 6 blocks
  EXPECT_EQ(h.sched.stats().kv_blocks_used, 11);
  h.step();
  // One free block. a decodes at position 20 (its tokens end at 21): 8 drafts would need 3 more
  // blocks; the free one holds positions 20..23, so a verifies 3 drafts. b (position 23) has no
  // slot left past its last token and no free block: a plain decode. Nobody is preempted.
  EXPECT_EQ(h.sched.stats().preemptions_total, 0);
  ASSERT_NE(h.work(a), nullptr);
  ASSERT_NE(h.work(b), nullptr);
  EXPECT_EQ(h.work(a)->num_draft, 3);
  EXPECT_EQ(h.work(b)->num_draft, 0);
}

TEST(SpeculativeScheduler, BlocksCompletedByAcceptedDraftsEnterThePrefixCache) {
  Harness h(spec_config(SpeculativeMethod::kDraftModel, 4));
  const uint64_t a = h.add(spec("a", {10, 11, 12}));
  h.step();  // tokens 10 11 12 5
  // Accept all 4: tokens 10 11 12 5 20 21 22 23 7 with 8 computed: blocks 0 and 1 full.
  h.step([](uint64_t, const std::vector<int32_t>& d) { return accept_all_then(7, d); });
  EXPECT_EQ(h.sched.find(a)->num_computed_tokens, 8);
  EXPECT_EQ(h.sched.stats().kv_blocks_cached, 2);
  // A new request with that 8-token prefix (+1) hits both blocks.
  const uint64_t b = h.add(spec("b", {10, 11, 12, 5, 20, 21, 22, 23, 40}));
  h.step();
  EXPECT_EQ(h.work(b)->start_pos, 8);
}

TEST(SpeculativeScheduler, AdaptiveKFollowsTheMeasuredAcceptance) {
  auto c = spec_config(SpeculativeMethod::kDraftModel, 6);
  c.speculative.adaptive = true;
  c.speculative.draft_cost = 0.1;
  c.max_model_len = 400;
  c.num_blocks = 110;
  c.max_num_batched_tokens = 64;
  Harness h(c);
  const uint64_t a = h.add(spec("a", {10, 11}, 300));
  h.step();
  h.step();
  // Prior 0.6 at c = 0.1: (1 - 0.6^(k+1)) / 0.4 / (1 + 0.1 k): k = 2 gives 1.96 / 1.2 = 1.63,
  // k = 3 gives 2.18 / 1.3 = 1.67, k = 4 gives 2.30 / 1.4 = 1.65.
  EXPECT_EQ(h.work(a)->num_draft, best_num_draft(0.6, 6, 0.1));
  // Everything rejected for a while: K falls to 1.
  for (int i = 0; i < 20; ++i) h.step();
  EXPECT_EQ(h.work(a)->num_draft, 1);
  // Everything accepted for a while: K climbs to the maximum.
  for (int i = 0; i < 30; ++i)
    h.step([](uint64_t, const std::vector<int32_t>& d) { return accept_all_then(7, d); });
  EXPECT_EQ(h.work(a)->num_draft, 6);
}

TEST(SpeculativeScheduler, ResultsOutsideOneToKPlusOneTokensAreRefused) {
  Harness h(spec_config(SpeculativeMethod::kDraftModel, 2));
  h.add(spec("a", {10, 11}));
  h.step();
  const auto plan = h.sched.schedule();
  ASSERT_EQ(plan.seqs.size(), 1u);
  ASSERT_EQ(plan.seqs[0].num_draft, 2);
  messages::StepResult r;
  r.step_id = plan.step_id;
  r.seq_ids = {plan.seqs[0].seq_id};
  r.sample_offsets = {0, 4};
  r.tokens.resize(4);
  EXPECT_THROW(h.sched.on_step_result(r), Error);
}

TEST(SpeculativeScheduler, ConfigIsValidated) {
  auto c = spec_config(SpeculativeMethod::kNgram, 0);
  EXPECT_THROW(Scheduler{c}, Error);
  c.speculative.num_speculative_tokens = 4;
  c.speculative.ngram_min = 3;
  c.speculative.ngram_max = 2;
  EXPECT_THROW(Scheduler{c}, Error);
  EXPECT_EQ(parse_speculative_method("draft_model"), SpeculativeMethod::kDraftModel);
  EXPECT_THROW(parse_speculative_method("eagle"), Error);
}

}  // namespace
}  // namespace shardserve::coordinator
