// The scheduler's policies, each on its own: queue order, victim choice, decode-first order,
// prefill chunking, the cached-prefix cap and the token-level stop conditions.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "coordinator/decode_policy.h"
#include "coordinator/kv_cache_manager.h"
#include "coordinator/prefill_policy.h"
#include "coordinator/preemption_policy.h"
#include "coordinator/request_queue.h"
#include "coordinator/stop_checker.h"

namespace shardserve::coordinator {
namespace {

std::unique_ptr<Request> make(uint64_t seq, int32_t priority, double arrival, int32_t prompt = 4) {
  RequestSpec spec;
  spec.request_id = "r" + std::to_string(seq);
  spec.prompt_token_ids.assign(prompt, 1);
  spec.priority = priority;
  spec.arrival_time = arrival;
  return std::make_unique<Request>(seq, std::move(spec), 4, false);
}

TEST(RequestQueue, OrdersByPriorityThenArrivalThenSeq) {
  auto a = make(1, 0, 5.0), b = make(2, 0, 1.0), c = make(3, -1, 9.0), d = make(4, 0, 1.0);
  RequestQueue q;
  for (auto* r : {a.get(), b.get(), c.get(), d.get()}) q.push(r);
  std::vector<uint64_t> order;
  while (!q.empty()) {
    order.push_back(q.front()->seq_id);
    q.pop_front();
  }
  EXPECT_EQ(order, (std::vector<uint64_t>{3, 2, 4, 1}));
}

TEST(RequestQueue, PreemptedRequestGoesBackInFrontOfLaterArrivals) {
  auto old = make(1, 0, 1.0), later = make(2, 0, 2.0);
  RequestQueue q;
  q.push(later.get());
  q.push(old.get());  // requeued after preemption with its original key
  EXPECT_EQ(q.front(), old.get());
  EXPECT_TRUE(q.remove(old.get()));
  EXPECT_FALSE(q.remove(old.get()));
  EXPECT_EQ(q.front(), later.get());
}

TEST(PreemptionPolicy, VictimIsLeastUrgentThenLatest) {
  auto a = make(1, 0, 1.0), b = make(2, 0, 3.0), c = make(3, 0, 2.0);
  std::vector<Request*> running = {a.get(), b.get(), c.get()};
  EXPECT_EQ(choose_victim(running), b.get()) << "FCFS: the latest arrival";
  auto urgent_late = make(4, -5, 10.0);
  auto lax_early = make(5, 5, 0.0);
  running = {a.get(), urgent_late.get(), lax_early.get()};
  EXPECT_EQ(choose_victim(running), lax_early.get()) << "priority before arrival";
}

TEST(PreemptionPolicy, RecomputeFreesBlocksAndResets) {
  KVCacheManager kv(4, 4, false);
  auto r = make(1, 0, 0.0, 8);
  ASSERT_TRUE(kv.admit(1, {}, 0, 8, 0, 0));
  r->status = RequestStatus::kRunning;
  r->num_computed_tokens = 8;
  preempt_by_recompute(*r, kv);
  EXPECT_FALSE(kv.has(1));
  EXPECT_EQ(kv.num_free_blocks(), 4);
  EXPECT_EQ(r->num_computed_tokens, 0);
  EXPECT_EQ(r->status, RequestStatus::kWaiting);
  EXPECT_EQ(r->num_preemptions, 1);
}

TEST(DecodePolicy, DecodesFirstThenPrefillsEachInQueueOrder) {
  auto p_old = make(1, 0, 1.0, 8), d_new = make(2, 0, 4.0), d_old = make(3, 0, 2.0),
       p_new = make(4, 0, 3.0, 8);
  d_new->num_computed_tokens = 4;
  d_new->append_token(9);  // 5 tokens, 4 computed: decoding
  d_old->num_computed_tokens = 4;
  d_old->append_token(9);
  p_old->num_computed_tokens = 4;  // mid-prefill
  std::vector<Request*> running = {p_old.get(), d_new.get(), d_old.get(), p_new.get()};
  auto order = order_running(running);
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], d_old.get());
  EXPECT_EQ(order[1], d_new.get());
  EXPECT_EQ(order[2], p_old.get());
  EXPECT_EQ(order[3], p_new.get());
}

TEST(PrefillPolicy, ChunksOnlyWhenChunkingIsOn) {
  EXPECT_EQ(prefill_chunk(100, 512, true), 100);
  EXPECT_EQ(prefill_chunk(1000, 512, true), 512);
  EXPECT_EQ(prefill_chunk(1000, 512, false), 0);
  EXPECT_EQ(prefill_chunk(512, 512, false), 512);
  EXPECT_EQ(prefill_chunk(10, 0, true), 0);
}

TEST(PrefillPolicy, CachedPrefixLeavesTheLastTokenToCompute) {
  EXPECT_EQ(max_cached_blocks(32, 16), 1) << "a prompt of exactly two blocks reuses one";
  EXPECT_EQ(max_cached_blocks(33, 16), 2);
  EXPECT_EQ(max_cached_blocks(1, 16), 0);
  EXPECT_EQ(max_cached_blocks(17, 16), 1);
}

TEST(StopChecker, EosStopIdsIgnoreEosAndLength) {
  auto r = make(1, 0, 0.0, 4);
  const std::vector<int32_t> eos = {2, 7};
  EXPECT_EQ(check_stop_token(*r, 7, eos), TokenStop::kEos);
  EXPECT_EQ(check_stop_token(*r, 3, eos), TokenStop::kNone);
  r->ignore_eos = true;
  EXPECT_EQ(check_stop_token(*r, 7, eos), TokenStop::kNone);
  r->stop_token_ids = {7};
  EXPECT_EQ(check_stop_token(*r, 7, eos), TokenStop::kStopToken) << "stop ids ignore ignore_eos";
  r->max_tokens = 2;
  r->append_token(5);
  EXPECT_FALSE(reached_length(*r, 100));
  r->append_token(5);
  EXPECT_TRUE(reached_length(*r, 100));
  r->max_tokens.reset();
  EXPECT_FALSE(reached_length(*r, 7));
  EXPECT_TRUE(reached_length(*r, 6)) << "context length: 6 tokens in a 6-token context";
}

}  // namespace
}  // namespace shardserve::coordinator
