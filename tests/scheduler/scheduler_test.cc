// The Scheduler end to end on small, hand-checked scenarios: chunked prefill, prefix hits,
// preemption, cancellation, stop conditions, rejections and the step protocol.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/scheduler.h"
#include "tests/scheduler/fake_worker.h"

namespace shardserve::coordinator {
namespace {

using testing::CharStream;
using testing::FakeWorker;

SchedulerConfig small_config() {
  SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = 16;
  c.max_num_batched_tokens = 8;
  c.max_num_seqs = 4;
  c.max_model_len = 32;
  c.watermark = 0.0;
  c.eos_token_ids = {2};
  return c;
}

RequestSpec spec(const std::string& id, std::vector<int32_t> prompt, int32_t max_tokens = 100) {
  RequestSpec s;
  s.request_id = id;
  s.prompt_token_ids = std::move(prompt);
  s.max_tokens = max_tokens;
  return s;
}

std::vector<int32_t> iota(int32_t n, int32_t from = 10) {
  std::vector<int32_t> v(n);
  for (int32_t i = 0; i < n; ++i) v[i] = from + i;
  return v;
}

messages::SampledToken sampled(int32_t id) {
  messages::SampledToken t;
  t.token_id = id;
  return t;
}

// Runs the scheduler against a FakeWorker; every sampled token comes from `next_token`.
struct Harness {
  explicit Harness(SchedulerConfig c)
      : sched(c), worker(c.num_blocks, c.block_size) {}

  uint64_t add(RequestSpec s) {
    auto prompt = s.prompt_token_ids;
    auto r = sched.add_request(std::move(s));
    EXPECT_FALSE(r.rejection) << r.rejection->finish_detail;
    truth[r.seq_id] = prompt;
    return r.seq_id;
  }

  messages::StepPlan plan;
  std::vector<RequestOutput> step(int32_t token = 5) {
    plan = sched.schedule();
    if (plan.seqs.empty()) return {};
    auto result = worker.execute(
        plan, [&](uint64_t s) -> const std::vector<int32_t>& { return truth.at(s); },
        [&](uint64_t) { return token; });
    for (uint64_t s : result.seq_ids) truth[s].push_back(token);
    auto outs = sched.on_step_result(result);
    for (const auto& o : outs) {
      text[o.request_id] += o.new_text;
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

  Scheduler sched;
  FakeWorker worker;
  std::map<uint64_t, std::vector<int32_t>> truth;
  std::map<std::string, std::string> text;
  std::map<std::string, RequestOutput> finished;
};

TEST(Scheduler, ChunkedPrefillSplitsALongPromptWhileDecodesContinue) {
  Harness h(small_config());
  const uint64_t a = h.add(spec("a", iota(3)));
  h.step();
  ASSERT_NE(h.work(a), nullptr);
  EXPECT_EQ(h.work(a)->num_tokens, 3);
  EXPECT_EQ(h.work(a)->num_logits, 1);
  const uint64_t b = h.add(spec("b", iota(20, 100)));
  // Budget 8: a decodes (1 token), b gets 7, 7 and then its last 6 with logits.
  const int32_t chunks[] = {7, 7, 6};
  int32_t start = 0;
  for (int32_t i = 0; i < 3; ++i) {
    h.step();
    ASSERT_NE(h.work(a), nullptr) << "the decode runs in every step";
    EXPECT_EQ(h.work(a)->num_tokens, 1);
    EXPECT_EQ(h.work(a)->num_logits, 1);
    ASSERT_NE(h.work(b), nullptr);
    EXPECT_EQ(h.work(b)->start_pos, start);
    EXPECT_EQ(h.work(b)->num_tokens, chunks[i]);
    EXPECT_EQ(h.work(b)->num_logits, i == 2 ? 1 : 0);
    EXPECT_EQ(h.work(b)->prompt_len, 20);
    EXPECT_LE(h.plan.total_tokens(), 8);
    start += chunks[i];
  }
  h.step();
  EXPECT_EQ(h.work(b)->num_tokens, 1) << "b decodes after its last chunk";
}

TEST(Scheduler, WithoutChunkingAPromptRunsWholeOrWaits) {
  SchedulerConfig c = small_config();
  c.enable_chunked_prefill = false;
  c.max_model_len = 24;
  c.max_num_batched_tokens = 24;
  Harness h(c);
  const uint64_t a = h.add(spec("a", iota(3)));
  h.step();
  const uint64_t b = h.add(spec("b", iota(22, 50)));
  const uint64_t d = h.add(spec("d", iota(22, 80)));
  h.step();
  ASSERT_NE(h.work(a), nullptr);
  ASSERT_NE(h.work(b), nullptr);
  EXPECT_EQ(h.work(b)->num_tokens, 22);
  EXPECT_EQ(h.work(d), nullptr) << "1 + 22 + 22 > 24 and d is not split";
  EXPECT_EQ(h.sched.find(d)->status, RequestStatus::kWaiting);
  h.step();
  ASSERT_NE(h.work(d), nullptr) << "two decodes + 22 fit";
  EXPECT_EQ(h.work(d)->num_tokens, 22);
  EXPECT_EQ(h.work(d)->num_logits, 1);
}

TEST(Scheduler, PrefixCacheHitStartsAfterTheCachedBlocks) {
  SchedulerConfig c = small_config();
  c.max_num_batched_tokens = 16;
  Harness h(c);
  auto shared = iota(8);
  auto pa = shared;
  pa.insert(pa.end(), {1, 1});
  const uint64_t a = h.add(spec("a", pa, 1));
  h.step();  // a prefills 10 tokens, finishes (max_tokens 1); blocks 0 and 1 stay cached
  EXPECT_TRUE(h.finished.count("a"));
  auto pb = shared;
  pb.insert(pb.end(), {3, 3, 3});
  const uint64_t b = h.add(spec("b", pb, 1));
  h.step();
  ASSERT_NE(h.work(b), nullptr);
  EXPECT_EQ(h.work(b)->start_pos, 8);
  EXPECT_EQ(h.work(b)->num_tokens, 3);
  EXPECT_EQ(h.finished.at("b").num_cached_tokens, 8);
  const auto st = h.sched.stats();
  EXPECT_EQ(st.prefix_cache_queried_tokens, 10 + 11);
  EXPECT_EQ(st.prefix_cache_hit_tokens, 8);
  EXPECT_EQ(std::count(h.plan.released.begin(), h.plan.released.end(), a), 1)
      << "a finished in the previous step: released in this plan";
}

TEST(Scheduler, PrefixHitSendsTheCachedPromptOnceWhenTheRepetitionPenaltyNeedsIt) {
  SchedulerConfig c = small_config();
  c.max_num_batched_tokens = 16;
  Harness h(c);
  auto shared = iota(8);
  auto pa = shared;
  pa.insert(pa.end(), {1, 1});
  h.add(spec("a", pa, 1));
  h.step();
  // b shares a's 8 cached tokens and penalises repetition: the workers must learn them.
  auto pb = shared;
  pb.insert(pb.end(), {3, 3, 3});
  auto sb = spec("b", pb, 3);
  sb.sampling.repetition_penalty = 1.3f;
  const uint64_t b = h.add(std::move(sb));
  h.step();
  ASSERT_NE(h.work(b), nullptr);
  EXPECT_EQ(h.work(b)->start_pos, 8);
  EXPECT_EQ(h.work(b)->history_len, 8);
  EXPECT_EQ(std::vector<int32_t>(h.plan.history_ids.begin() + h.work(b)->history_offset,
                                 h.plan.history_ids.begin() + h.work(b)->history_offset + 8),
            shared);
  h.step();  // a decode: nothing to resend
  ASSERT_NE(h.work(b), nullptr);
  EXPECT_EQ(h.work(b)->history_len, 0);
  EXPECT_TRUE(h.plan.history_ids.empty());
  // Without the penalty a prefix hit sends no history.
  auto pc = shared;
  pc.insert(pc.end(), {4, 4});
  const uint64_t cseq = h.add(spec("c", pc, 1));
  h.step();
  ASSERT_NE(h.work(cseq), nullptr);
  EXPECT_EQ(h.work(cseq)->start_pos, 8);
  EXPECT_EQ(h.work(cseq)->history_len, 0);
}

TEST(Scheduler, FullyCachedPromptRecomputesItsLastBlockPrivately) {
  Harness h(small_config());
  const uint64_t a = h.add(spec("a", iota(8), 1));
  h.step();
  const std::vector<int32_t> a_blocks(h.plan.block_ids.begin() + h.work(a)->block_offset,
                                      h.plan.block_ids.begin() + h.work(a)->block_offset + 2);
  const uint64_t b = h.add(spec("b", iota(8), 1));
  h.step();
  ASSERT_NE(h.work(b), nullptr);
  EXPECT_EQ(h.work(b)->start_pos, 4) << "one of the two cached blocks: the last token needs logits";
  EXPECT_EQ(h.work(b)->num_tokens, 4);
  EXPECT_EQ(h.work(b)->num_logits, 1);
  const int32_t* b_blocks = h.plan.block_ids.data() + h.work(b)->block_offset;
  EXPECT_EQ(b_blocks[0], a_blocks[0]) << "the first block is shared";
  EXPECT_NE(b_blocks[1], a_blocks[1]) << "the last block is recomputed into a private block";
  EXPECT_TRUE(h.sched.kv_cache().pool().is_cached(a_blocks[1])) << "the first copy stays cached";
  EXPECT_FALSE(h.sched.kv_cache().pool().is_cached(b_blocks[1])) << "no duplicate entry";
}

TEST(Scheduler, PreemptsTheYoungestByRecomputeAndRequeuesIt) {
  SchedulerConfig c = small_config();
  c.block_size = 2;
  c.num_blocks = 4;
  c.max_model_len = 8;
  c.enable_prefix_caching = false;
  Harness h(c);
  const uint64_t a = h.add(spec("a", iota(3), 5));
  const uint64_t b = h.add(spec("b", iota(3, 40), 5));
  h.step();  // both prefill: 2 blocks each, pool full
  h.step();  // both decode position 3, still 2 blocks each
  EXPECT_EQ(h.sched.stats().preemptions_total, 0);
  h.step();  // position 4 needs a third block: a (older) preempts b
  EXPECT_EQ(h.sched.stats().preemptions_total, 1);
  ASSERT_NE(h.work(a), nullptr);
  EXPECT_EQ(h.work(b), nullptr);
  EXPECT_EQ(h.sched.find(b)->status, RequestStatus::kWaiting);
  EXPECT_EQ(h.sched.find(b)->num_computed_tokens, 0);
  EXPECT_EQ(h.sched.stats().num_preempted_waiting, 1);
  EXPECT_FALSE(h.sched.kv_cache().has(b));
  while (!h.finished.count("a")) h.step();
  // b comes back: its recompute covers the prompt and the 2 tokens it had generated.
  while (!h.work(b)) h.step();
  EXPECT_EQ(h.work(b)->start_pos, 0);
  EXPECT_EQ(h.work(b)->num_tokens, 5);
  EXPECT_EQ(h.work(b)->prompt_len, 3);
  EXPECT_EQ(h.work(b)->num_logits, 1);
  while (h.sched.has_unfinished_requests()) h.step();
  EXPECT_EQ(h.finished.at("b").num_output_tokens, 5);
  EXPECT_EQ(h.finished.at("b").finish_reason, FinishReason::kLength);
  EXPECT_EQ(h.sched.kv_cache().num_used_blocks(), 0);
}

TEST(Scheduler, LaxDecodePreemptsItselfRatherThanAnUrgentPrefill) {
  SchedulerConfig c = small_config();
  c.block_size = 2;
  c.num_blocks = 8;  // 16 slots
  c.max_model_len = 16;
  c.max_num_batched_tokens = 4;
  c.enable_prefix_caching = false;
  Harness h(c);
  auto lax = spec("lax", iota(3), 10);
  lax.priority = 5;
  const uint64_t l = h.add(std::move(lax));
  h.step();  // lax: 3 tokens in 2 blocks
  auto urgent = spec("urgent", iota(12, 40), 2);
  urgent.priority = 0;
  urgent.arrival_time = 1.0;
  const uint64_t u = h.add(std::move(urgent));
  h.step();  // lax decodes (position 3), urgent's first chunk of 3 tokens
  ASSERT_NE(h.work(u), nullptr);
  EXPECT_EQ(h.work(u)->num_tokens, 3);
  h.step();  // lax decodes (position 4: 3rd block), urgent chunk [3, 6): 3 blocks -> 6 of 8
  EXPECT_EQ(h.sched.kv_cache().num_used_blocks(), 6);
  h.step();  // lax position 5 (no new block), urgent [6, 9): 5 blocks -> 8 of 8
  EXPECT_EQ(h.sched.kv_cache().num_used_blocks(), 8);
  // lax's decode at position 6 needs a 4th block and none is free: lax is the least urgent
  // running request, so it preempts itself, and urgent's chunk gets the freed blocks.
  h.step();
  EXPECT_EQ(h.work(l), nullptr);
  ASSERT_NE(h.work(u), nullptr);
  EXPECT_EQ(h.sched.find(l)->status, RequestStatus::kWaiting);
  EXPECT_EQ(h.sched.stats().preemptions_total, 1);
  while (h.sched.has_unfinished_requests()) h.step();
  EXPECT_EQ(h.finished.at("lax").num_output_tokens, 10);
  EXPECT_EQ(h.finished.at("urgent").num_output_tokens, 2);
}

TEST(Scheduler, VictimPlannedEarlierInTheStepGivesBackItsTokens) {
  // lax decodes without needing a block (planned first), then urgent's chunk needs one: the
  // victim is lax, already in the step's plan, and must leave it.
  SchedulerConfig c = small_config();
  c.block_size = 4;
  c.num_blocks = 4;  // 16 slots
  c.max_model_len = 16;
  c.max_num_batched_tokens = 4;
  c.enable_prefix_caching = false;
  Harness h(c);
  auto lax = spec("lax", iota(2), 10);
  lax.priority = 5;
  const uint64_t l = h.add(std::move(lax));
  h.step();  // lax: positions 0-1 in block A
  auto urgent = spec("urgent", iota(13, 40), 2);
  urgent.priority = 0;
  urgent.arrival_time = 1.0;
  const uint64_t u = h.add(std::move(urgent));
  h.step();  // lax position 2; urgent [0, 3) in 1 block
  h.step();  // lax position 3; urgent [3, 6): 2 blocks
  EXPECT_EQ(h.sched.kv_cache().num_used_blocks(), 3);
  // lax (planned first) takes its 2nd block at position 4, filling the pool; urgent's chunk
  // [6, 9) then needs a 3rd block: the victim is lax, already in this step's plan.
  h.step();
  EXPECT_EQ(h.work(l), nullptr) << "the victim left the plan";
  EXPECT_EQ(h.sched.find(l)->status, RequestStatus::kWaiting);
  EXPECT_EQ(h.sched.find(l)->num_tokens(), 5) << "its unplanned decode sampled nothing";
  ASSERT_NE(h.work(u), nullptr);
  EXPECT_EQ(h.work(u)->start_pos, 6);
  EXPECT_EQ(h.work(u)->num_tokens, 3);
  EXPECT_EQ(h.plan.seqs.size(), 1u);
  EXPECT_EQ(h.sched.stats().preemptions_total, 1);
  while (h.sched.has_unfinished_requests()) h.step();
  EXPECT_EQ(h.finished.at("lax").num_output_tokens, 10);
  EXPECT_EQ(h.finished.at("urgent").num_output_tokens, 2);
}

TEST(Scheduler, CancelFreesBlocksAtOnceEvenWhileItsStepRuns) {
  Harness h(small_config());
  const uint64_t a = h.add(spec("a", iota(6)));
  const uint64_t b = h.add(spec("b", iota(2, 60)));
  h.step();
  EXPECT_EQ(h.sched.kv_cache().num_used_blocks(), 3);
  // Cancel between schedule() and the result.
  auto plan = h.sched.schedule();
  auto out = h.sched.cancel("a");
  ASSERT_TRUE(out);
  EXPECT_EQ(out->finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(out->finish_reason_string(), "cancelled");
  EXPECT_FALSE(h.sched.kv_cache().has(a));
  EXPECT_EQ(h.sched.kv_cache().num_used_blocks(), 1);
  messages::StepResult r;
  r.step_id = plan.step_id;
  r.sample_offsets = {0};
  for (const auto& w : plan.seqs) {
    r.seq_ids.push_back(w.seq_id);
    r.tokens.push_back(sampled(7));
    r.sample_offsets.push_back(static_cast<int32_t>(r.tokens.size()));
  }
  auto outs = h.sched.on_step_result(r);
  ASSERT_EQ(outs.size(), 1u) << "the cancelled sequence's sample is dropped";
  EXPECT_EQ(outs[0].seq_id, b);
  EXPECT_FALSE(h.sched.cancel("a")) << "already gone";
  auto next = h.sched.schedule();
  EXPECT_EQ(next.released, std::vector<uint64_t>{a});
}

TEST(Scheduler, CancellingAWaitingRequestReleasesNothingOnWorkers) {
  SchedulerConfig c = small_config();
  c.max_num_seqs = 1;
  Harness h(c);
  h.add(spec("a", iota(3)));
  const uint64_t b = h.add(spec("b", iota(3)));
  h.step();
  EXPECT_EQ(h.sched.find(b)->status, RequestStatus::kWaiting);
  ASSERT_TRUE(h.sched.cancel("b"));
  h.step();
  EXPECT_TRUE(h.plan.released.empty());
}

TEST(Scheduler, StopsOnEosStopIdsAndLength) {
  Harness h(small_config());
  h.add(spec("eos", iota(3)));
  auto ig = spec("ignore", iota(3), 2);
  ig.ignore_eos = true;
  h.add(std::move(ig));
  auto st = spec("stopid", iota(3));
  st.stop_token_ids = {5};
  h.add(std::move(st));
  h.step(/*token=*/2);  // EOS for everyone
  EXPECT_EQ(h.finished.at("eos").finish_reason_string(), "stop");
  EXPECT_EQ(h.finished.at("eos").finish_detail, "eos");
  EXPECT_EQ(h.finished.at("eos").stop_token_id, 2);
  EXPECT_EQ(h.finished.at("eos").num_output_tokens, 1);
  EXPECT_FALSE(h.finished.count("ignore"));
  EXPECT_FALSE(h.finished.count("stopid"));
  h.step(5);
  EXPECT_EQ(h.finished.at("stopid").finish_detail, "stop_token");
  EXPECT_EQ(h.finished.at("ignore").finish_reason, FinishReason::kLength);
  EXPECT_EQ(h.finished.at("ignore").finish_detail, "max_tokens");

  auto ctx = spec("ctx", iota(28));
  ctx.max_tokens.reset();
  h.add(std::move(ctx));
  int steps = 0;
  while (!h.finished.count("ctx") && steps++ < 20) h.step(5 + 1);
  EXPECT_EQ(h.finished.at("ctx").finish_detail, "context_length");
  EXPECT_EQ(h.finished.at("ctx").num_output_tokens, 4) << "28 + 4 = max_model_len 32";
}

RequestSpec with_stop(const std::string& id, std::string stop, int32_t max_tokens = 100) {
  auto s = spec(id, iota(3), max_tokens);
  s.stop_strings = {std::move(stop)};
  s.text_stream = std::make_unique<CharStream>();
  return s;
}

TEST(Scheduler, StopStringAcrossTokensIsHeldBackAndNotEmitted) {
  Harness h(small_config());  // EOS id 2 ('c')
  h.add(with_stop("s", "xyz"));
  // CharStream reads token t as 'a' + t: a x y a x y z
  const std::pair<int32_t, const char*> steps[] = {{0, "a"},    {23, "a"},   {24, "a"},
                                                   {0, "axya"}, {23, "axya"}, {24, "axya"},
                                                   {25, "axya"}};
  for (const auto& [token, text_so_far] : steps) {
    h.step(token);
    EXPECT_EQ(h.text["s"], text_so_far) << "after token " << token;
  }
  ASSERT_TRUE(h.finished.count("s"));
  EXPECT_EQ(h.finished.at("s").finish_reason_string(), "stop");
  EXPECT_EQ(h.finished.at("s").finish_detail, "stop_string");
  EXPECT_EQ(h.finished.at("s").stop_string, "xyz");
  EXPECT_FALSE(h.finished.at("s").stop_token_id);
  EXPECT_EQ(h.finished.at("s").num_output_tokens, 7);
}

TEST(Scheduler, HeldBackTextIsReleasedWhenTheStreamEndsOtherwise) {
  SchedulerConfig c = small_config();
  c.eos_token_ids = {25};  // 'z' is EOS here: its text is never emitted
  Harness h(c);
  h.add(with_stop("eos", "xyz"));
  h.add(with_stop("len", "xyz", 3));
  for (int32_t t : {0, 23, 24}) h.step(t);
  EXPECT_EQ(h.finished.at("len").finish_reason, FinishReason::kLength);
  EXPECT_EQ(h.text["len"], "axy") << "max_tokens flushes the held-back 'xy'";
  h.step(25);
  EXPECT_EQ(h.finished.at("eos").finish_detail, "eos");
  EXPECT_EQ(h.text["eos"], "axy") << "EOS flushes 'xy' and emits no text of its own";
}

// Failover: a request taken from one scheduler mid-stream (a possible stop string held back)
// continues on another from where it was: recomputed from token 0, its outputs counted on, the
// held-back text decided by the tokens that follow.
TEST(Scheduler, ATakenRequestContinuesOnAnotherSchedulerWithItsState) {
  Harness a(small_config()), b(small_config());
  a.add(with_stop("s", "xyz", 10));
  a.add(spec("w", iota(20), 5));  // waits: max_num_batched_tokens 8 leaves it for later
  for (int32_t t : {0, 23}) a.step(t);
  EXPECT_EQ(a.text["s"], "a") << "'x' may start the stop string: held back";
  auto taken = a.sched.take_all();
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_EQ(taken[0]->request_id, "s");  // queue order
  EXPECT_EQ(taken[1]->request_id, "w");
  EXPECT_FALSE(a.sched.has_unfinished_requests());
  EXPECT_EQ(a.sched.stats().kv_blocks_used, 0);
  EXPECT_TRUE(a.sched.schedule().released.empty()) << "the failed replica's workers are gone";
  const auto tokens = taken[0]->tokens;  // prompt + the 2 outputs
  ASSERT_EQ(tokens.size(), 5u);
  auto added = b.sched.adopt(std::move(taken[0]));
  ASSERT_FALSE(added.rejection);
  b.truth[added.seq_id] = tokens;
  b.step(24);
  ASSERT_NE(b.work(added.seq_id), nullptr);
  EXPECT_EQ(b.work(added.seq_id)->start_pos, 0) << "recomputed from the first token";
  EXPECT_EQ(b.work(added.seq_id)->prompt_len, 3);
  EXPECT_EQ(b.plan.token_ids, tokens) << "prompt and the streamed outputs, nothing else";
  b.step(25);
  ASSERT_TRUE(b.finished.count("s"));
  EXPECT_EQ(a.text["s"] + b.text["s"], "a") << "the held-back 'xy' never reaches the client";
  EXPECT_EQ(b.finished.at("s").stop_string, "xyz");
  EXPECT_EQ(b.finished.at("s").num_output_tokens, 4);
  EXPECT_EQ(b.finished.at("s").num_prompt_tokens, 3);
  // One whose tokens no longer fit the adopter's context is refused with the reason.
  SchedulerConfig tight = small_config();
  tight.max_model_len = 20;
  Harness c(tight);
  auto refused = c.sched.adopt(std::move(taken[1]));
  ASSERT_TRUE(refused.rejection);
  EXPECT_EQ(refused.rejection->request_id, "w");
  EXPECT_NE(refused.rejection->finish_detail.find("its 20 tokens leave no room to generate within "
                                                  "the context length of 20"),
            std::string::npos)
      << refused.rejection->finish_detail;
}

TEST(Scheduler, RejectsWithAReason) {
  Scheduler s(small_config());
  auto reason = [&](RequestSpec sp) {
    auto r = s.add_request(std::move(sp));
    EXPECT_TRUE(r.rejection);
    if (!r.rejection) return std::string();
    EXPECT_TRUE(r.rejection->finished);
    return r.rejection->finish_reason_string();
  };
  EXPECT_EQ(reason(spec("e", {})), "rejected:empty prompt");
  EXPECT_NE(reason(spec("long", iota(32))).find("context length of 32"), std::string::npos);
  EXPECT_NE(reason(spec("m", iota(3), 0)).find("max_tokens=0"), std::string::npos);
  auto nostream = spec("n", iota(3));
  nostream.stop_strings = {"x"};
  EXPECT_NE(reason(std::move(nostream)).find("detokenizer"), std::string::npos);
  auto empty_stop = spec("es", iota(3));
  empty_stop.stop_strings = {""};
  empty_stop.text_stream = std::make_unique<CharStream>();
  EXPECT_NE(reason(std::move(empty_stop)).find("stop string 0 is empty"), std::string::npos);
  EXPECT_FALSE(s.add_request(spec("dup", iota(3))).rejection);
  EXPECT_NE(reason(spec("dup", iota(3))).find("already live"), std::string::npos);
  EXPECT_EQ(s.stats().requests_rejected, 6);
  EXPECT_EQ(s.stats().num_waiting, 1);
}

TEST(Scheduler, StepProtocolIsChecked) {
  Scheduler s(small_config());
  s.add_request(spec("a", iota(6)));
  auto plan = s.schedule();
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_THROW(s.schedule(), Error) << "result of the previous step not applied";
  messages::StepResult wrong;
  wrong.step_id = plan.step_id + 1;
  wrong.sample_offsets = {0};
  EXPECT_THROW(s.on_step_result(wrong), Error);
  messages::StepResult missing;
  missing.step_id = plan.step_id;
  missing.sample_offsets = {0};
  EXPECT_THROW(s.on_step_result(missing), Error) << "the sampled token is missing";
  EXPECT_THROW(s.on_step_result(missing), Error) << "no step in flight any more";
}

TEST(Scheduler, ResultForASequenceThatDidNotSampleIsRefused) {
  SchedulerConfig c = small_config();
  Scheduler s(c);
  s.add_request(spec("a", iota(20)));
  auto plan = s.schedule();
  ASSERT_EQ(plan.seqs[0].num_logits, 0);
  messages::StepResult r;
  r.step_id = plan.step_id;
  r.seq_ids = {plan.seqs[0].seq_id};
  r.tokens = {sampled(4)};
  r.sample_offsets = {0, 1};
  EXPECT_THROW(s.on_step_result(r), Error);
}

TEST(Scheduler, LowerPriorityValueIsServedFirst) {
  SchedulerConfig c = small_config();
  c.max_num_seqs = 1;
  c.max_num_batched_tokens = 8;
  Harness h(c);
  auto lax = spec("lax", iota(3), 1);
  lax.priority = 5;
  lax.arrival_time = 0.0;
  auto urgent = spec("urgent", iota(3), 1);
  urgent.priority = -1;
  urgent.arrival_time = 1.0;
  h.add(std::move(lax));
  const uint64_t u = h.add(std::move(urgent));
  h.step();
  ASSERT_EQ(h.plan.seqs.size(), 1u);
  EXPECT_EQ(h.plan.seqs[0].seq_id, u);
}

TEST(Scheduler, WatermarkHoldsAdmissionBackWhileOthersRun) {
  SchedulerConfig c = small_config();
  c.num_blocks = 10;
  c.watermark = 0.2;  // keep 2 blocks free
  c.max_model_len = 40;
  c.max_num_batched_tokens = 40;
  Harness h(c);
  h.add(spec("a", iota(20)));  // 5 blocks
  h.step();
  const uint64_t b = h.add(spec("b", iota(12, 70)));  // 3 more blocks would leave 1 free
  h.step();
  EXPECT_EQ(h.work(b), nullptr);
  EXPECT_EQ(h.sched.find(b)->status, RequestStatus::kWaiting);
  // Alone, a request may use the whole pool: the watermark only protects running ones.
  h.sched.cancel("a");
  h.step();
  EXPECT_NE(h.work(b), nullptr);
}

TEST(Scheduler, StatsCountRunningWaitingAndBlocks) {
  SchedulerConfig c = small_config();
  c.max_num_seqs = 2;
  Harness h(c);
  h.add(spec("a", iota(3)));
  h.add(spec("b", iota(3)));
  h.add(spec("d", iota(3)));
  h.step();
  auto st = h.sched.stats();
  EXPECT_EQ(st.num_running, 2);
  EXPECT_EQ(st.num_waiting, 1);
  EXPECT_EQ(st.kv_blocks_used, 2);
  EXPECT_EQ(st.kv_blocks_total, 16);
  EXPECT_EQ(st.steps_total, 1);
  EXPECT_EQ(st.preemptions_total, 0);
}

TEST(Scheduler, IdleScheduleReturnsAnEmptyPlan) {
  Scheduler s(small_config());
  auto plan = s.schedule();
  EXPECT_TRUE(plan.seqs.empty());
  EXPECT_EQ(plan.step_id, 0u);
  EXPECT_FALSE(s.step_in_flight());
}

}  // namespace
}  // namespace shardserve::coordinator
