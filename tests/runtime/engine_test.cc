// The coordinator's engine over an in-process fake transport (no MPI): placement over replicas,
// concurrent steps, drain and cancel, failure reports and step timeouts; plus the handshake's
// consistency checks, the request file parser and the worker's KV pool sizing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/error.h"
#include "coordinator/runtime/engine_core.h"
#include "coordinator/runtime/handshake.h"
#include "coordinator/runtime/request_io.h"
#include "coordinator/runtime/scheduler_settings.h"
#include "worker/worker_loop.h"

namespace shardserve::runtime {
namespace {

using ::testing::HasSubstr;

// The fake model: the next token of a sequence is a hash of every token before it (so a
// result is right only if the plans fed the right tokens at the right positions).
int32_t next_token(const std::vector<int32_t>& tokens) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : tokens) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
  return 3 + static_cast<int32_t>(h % 50);
}

class FakeTransport final : public ReplicaTransport {
 public:
  explicit FakeTransport(int replicas) : delay_(replicas, 0), seqs_(replicas), plans_(replicas) {}

  int num_replicas() const override { return static_cast<int>(delay_.size()); }
  std::string describe(int r) const override { return "replica " + std::to_string(r) + " (fake)"; }

  void on_replica_failed(int r, const std::string& cause) override {
    failed_.emplace_back(r, cause);
  }
  bool is_failed(int r) const {
    for (const auto& f : failed_)
      if (f.first == r) return true;
    return false;
  }

  void send_plan(int r, const messages::StepPlan& plan) override {
    if (is_failed(r)) ++plans_to_failed_;
    plans_[r].push_back(plan);
    for (uint64_t id : plan.released) seqs_[r].erase(id);
    if (plan.seqs.empty()) return;
    messages::StepResult result;
    result.step_id = plan.step_id;
    result.sample_offsets.push_back(0);
    for (const auto& w : plan.seqs) {
      auto& toks = seqs_[r][w.seq_id];
      toks.resize(w.start_pos);  // a recompute after preemption starts over
      for (int i = 0; i < w.num_tokens; ++i) toks.push_back(plan.token_ids[w.token_offset + i]);
      if (w.num_logits == 0) continue;
      result.seq_ids.push_back(w.seq_id);
      messages::SampledToken t;
      t.token_id = next_token(toks);
      result.tokens.push_back(t);
      result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
    }
    if (!silent_) queue_.push_back({r, delay_[r], std::move(result)});
  }

  std::optional<ReplicaEvent> poll(std::chrono::milliseconds) override {
    ++polls_;
    if (!error_.empty()) {
      ReplicaEvent ev{error_replica_, 2, messages::WorkerError{2, error_}};
      error_.clear();
      return ev;
    }
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (silent_replicas_.count(it->replica)) continue;
      if (it->wait-- > 0) continue;
      ReplicaEvent ev{it->replica, 1, std::move(it->result)};
      queue_.erase(it);
      return ev;
    }
    return std::nullopt;
  }

  std::vector<int> delay_;  // polls before a replica's result is delivered
  bool silent_ = false;     // never answer (a dead replica)
  std::string error_;       // deliver a WorkerError on the next poll
  int error_replica_ = 0;   // ... from this replica (world rank 2)
  std::set<int> silent_replicas_;  // their results are never delivered (dead or stopped)
  std::vector<std::pair<int, std::string>> failed_;  // on_replica_failed calls
  int plans_to_failed_ = 0;
  std::vector<std::map<uint64_t, std::vector<int32_t>>> seqs_;
  std::vector<std::vector<messages::StepPlan>> plans_;
  int polls_ = 0;

 private:
  struct Pending {
    int replica;
    int wait;
    messages::StepResult result;
  };
  std::deque<Pending> queue_;
};

coordinator::SchedulerConfig sched(int32_t num_blocks) {
  coordinator::SchedulerConfig c;
  c.block_size = 4;
  c.num_blocks = num_blocks;
  c.max_num_batched_tokens = 64;
  c.max_num_seqs = 8;
  c.max_model_len = 128;
  c.eos_token_ids = {2};
  return c;
}

coordinator::RequestSpec request(int i, int prompt_len, int max_tokens) {
  coordinator::RequestSpec s;
  s.request_id = "r" + std::to_string(i);
  for (int t = 0; t < prompt_len; ++t) s.prompt_token_ids.push_back(3 + (i * 7 + t) % 40);
  s.max_tokens = max_tokens;
  s.sampling.temperature = 0;
  s.arrival_time = i;
  return s;
}

std::vector<int32_t> expected_output(const coordinator::RequestSpec& s) {
  std::vector<int32_t> toks = s.prompt_token_ids, out;
  for (int i = 0; i < *s.max_tokens; ++i) {
    out.push_back(next_token(toks));
    toks.push_back(out.back());
  }
  return out;
}

// Runs the engine until every request is done; returns each request's tokens and end.
struct Finished {
  std::vector<int32_t> tokens;
  std::string reason;
};
std::map<std::string, Finished> drive(EngineCore& engine, int max_polls = 10000) {
  std::map<std::string, Finished> done;
  std::map<std::string, std::vector<int32_t>> partial;
  for (int i = 0; i < max_polls && engine.has_unfinished(); ++i) {
    for (const auto& out : engine.poll(std::chrono::milliseconds(0))) {
      for (const auto& t : out.new_tokens) partial[out.request_id].push_back(t.token_id);
      if (out.finished) done[out.request_id] = {partial[out.request_id], out.finish_reason_string()};
    }
  }
  return done;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(EngineCore, EveryRequestCompletesWithTheRightTokensSpreadOverReplicas) {
  FakeTransport t(2);
  EngineCore engine(t, {sched(64), sched(64)}, {});
  std::vector<coordinator::RequestSpec> specs;
  std::map<int, int> per_replica;
  for (int i = 0; i < 16; ++i) {
    auto s = request(i, 3 + i % 9, 5 + i % 4);
    specs.push_back(request(i, 3 + i % 9, 5 + i % 4));
    ++per_replica[engine.submit(std::move(s))];
  }
  EXPECT_EQ(per_replica[0], 8);
  EXPECT_EQ(per_replica[1], 8);
  const auto done = drive(engine);
  ASSERT_EQ(done.size(), 16u);
  for (const auto& s : specs) {
    EXPECT_EQ(done.at(s.request_id).tokens, expected_output(s)) << s.request_id;
    EXPECT_EQ(done.at(s.request_id).reason, "length");
  }
  EXPECT_FALSE(engine.has_unfinished());
  // The last plans only released the finished sequences: the fake workers hold nothing.
  EXPECT_TRUE(t.seqs_[0].empty());
  EXPECT_TRUE(t.seqs_[1].empty());
}

TEST(EngineCore, PlacementFollowsOutstandingTokensOverCapacity) {
  FakeTransport t(2);
  EngineCore engine(t, {sched(96), sched(32)}, {});  // replica 0 holds 3x the tokens
  std::map<int, int> per_replica;
  for (int i = 0; i < 8; ++i) ++per_replica[engine.submit(request(i, 4, 4))];
  EXPECT_EQ(per_replica[0], 6);
  EXPECT_EQ(per_replica[1], 2);
  EXPECT_EQ(engine.stats(0).outstanding_tokens, 6 * 8);
  drive(engine);
  EXPECT_EQ(engine.stats(0).outstanding_tokens, 0);
  EXPECT_EQ(engine.stats(1).live_requests, 0);
}

TEST(EngineCore, ReplicasStepConcurrently) {
  FakeTransport t(2);
  t.delay_ = {0, 1000000};  // replica 1's first result never comes within this test
  EngineCore engine(t, {sched(64), sched(64)}, {});
  engine.submit(request(0, 4, 6));
  engine.submit(request(1, 4, 6));
  std::vector<coordinator::RequestOutput> outs;
  for (int i = 0; i < 50; ++i)
    for (auto& o : engine.poll(std::chrono::milliseconds(0))) outs.push_back(std::move(o));
  // Replica 0 finished its request (6 steps) while replica 1's first step is still in flight.
  EXPECT_EQ(engine.stats(0).steps, 6);
  EXPECT_EQ(engine.stats(1).steps, 1);
  EXPECT_EQ(engine.replica_of("r1"), 1);
  EXPECT_EQ(engine.replica_of("r0"), -1);
  EXPECT_TRUE(engine.steps_in_flight());
}

TEST(EngineCore, DrainStopsAdmittingAndCancelAllEndsEverything) {
  FakeTransport t(2);
  EngineCore engine(t, {sched(64), sched(64)}, {});
  for (int i = 0; i < 4; ++i) engine.submit(request(i, 4, 50));
  std::map<std::string, std::string> reasons;
  for (const auto& o : engine.poll(std::chrono::milliseconds(0)))
    if (o.finished) reasons[o.request_id] = o.finish_reason_string();
  engine.stop_admitting();
  EXPECT_EQ(engine.submit(request(9, 4, 5)), -1);
  for (int i = 0; i < 3; ++i)
    for (const auto& o : engine.poll(std::chrono::milliseconds(0)))
      if (o.finished) reasons[o.request_id] = o.finish_reason_string() + "/" + o.finish_detail;
  EXPECT_EQ(reasons["r9"], "rejected:shutting down/shutting down");
  engine.cancel_all();
  for (int i = 0; i < 10 && engine.has_unfinished(); ++i)
    for (const auto& o : engine.poll(std::chrono::milliseconds(0)))
      if (o.finished) reasons[o.request_id] = o.finish_reason_string();
  EXPECT_FALSE(engine.has_unfinished());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(reasons["r" + std::to_string(i)], "cancelled") << i;
}

TEST(EngineCore, OnePollHandlesAtMostOneResultPerReplica) {
  FakeTransport t(2);  // results arrive at once: an unbounded poll would run everything
  EngineCore engine(t, {sched(64), sched(64)}, {});
  engine.submit(request(0, 4, 20));
  engine.submit(request(1, 4, 20));
  engine.poll(std::chrono::milliseconds(0));
  EXPECT_EQ(engine.stats(0).tokens_sampled + engine.stats(1).tokens_sampled, 2);
  EXPECT_EQ(drive(engine).size(), 2u);
}

TEST(EngineCore, DuplicateIdsAreRefusedAcrossReplicas) {
  FakeTransport t(2);
  EngineCore engine(t, {sched(64), sched(64)}, {});
  EXPECT_EQ(engine.submit(request(1, 4, 5)), 0);
  EXPECT_EQ(engine.submit(request(1, 4, 5)), -1);  // would have gone to replica 1
  const auto outs = engine.poll(std::chrono::milliseconds(0));
  ASSERT_FALSE(outs.empty());
  EXPECT_THAT(outs[0].finish_detail, HasSubstr("request id 'r1' is already live"));
}

TEST(EngineCore, AWorkerErrorOnTheOnlyReplicaEndsEveryRequestNamingTheRank) {
  FakeTransport t(1);
  EngineCore engine(t, {sched(64)}, {});
  engine.submit(request(0, 4, 5));
  engine.submit(request(1, 4, 5));
  engine.poll(std::chrono::milliseconds(0));
  t.error_ = "step 1: sequence 1 has token id 99 outside the vocabulary (61)";
  std::map<std::string, coordinator::RequestOutput> finals;
  for (int i = 0; i < 5; ++i)
    for (auto& o : engine.poll(std::chrono::milliseconds(0)))
      if (o.finished) finals[o.request_id] = o;
  ASSERT_EQ(finals.size(), 2u);
  for (const auto& [id, o] : finals) {
    // The service failed, not the request: unavailable (HTTP 503 at the gateway), not rejected.
    EXPECT_EQ(o.finish_reason, coordinator::FinishReason::kUnavailable) << id;
    EXPECT_EQ(o.finish_reason_string().rfind("unavailable:replica 0 (fake): world rank 2", 0), 0u)
        << o.finish_reason_string();
    EXPECT_THAT(o.finish_detail, HasSubstr("replica 0 (fake): world rank 2 failed: step 1: "
                                           "sequence 1 has token id 99"));
    EXPECT_THAT(o.finish_detail, HasSubstr("no replica is left"));
    EXPECT_EQ(o.num_prompt_tokens, 4);
    EXPECT_EQ(o.num_output_tokens, 1);  // the first step's token was streamed before the error
  }
  EXPECT_THAT(engine.failure(), HasSubstr("world rank 2 failed"));
  ASSERT_EQ(t.failed_.size(), 1u);
  EXPECT_EQ(t.failed_[0].first, 0);
  EXPECT_FALSE(engine.has_unfinished());
  // Later submits are refused with the failure; nothing more is sent.
  EXPECT_EQ(engine.submit(request(2, 4, 5)), -1);
  const auto later = engine.poll(std::chrono::milliseconds(0));
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].finish_reason, coordinator::FinishReason::kUnavailable);
  EXPECT_THAT(later[0].finish_detail, HasSubstr("no replica is left"));
  EXPECT_EQ(t.plans_to_failed_, 0);
}

// The continuation is exact: the fake model's next token hashes every token before it, so a
// requeued request produces the reference output only if the surviving replica was fed prompt +
// the tokens already streamed, and streamed nothing twice.
void expect_failover_is_exact(FakeTransport& t, EngineCore& engine,
                              const std::function<void()>& fault, int polls_before_fault) {
  std::vector<coordinator::RequestSpec> specs;
  for (int i = 0; i < 12; ++i) {
    specs.push_back(request(i, 3 + i % 5, 20 + i % 7));
    engine.submit(request(i, 3 + i % 5, 20 + i % 7));
  }
  std::map<std::string, std::vector<int32_t>> streamed;
  std::map<std::string, coordinator::RequestOutput> finals;
  auto take = [&](std::vector<coordinator::RequestOutput> outs) {
    for (auto& o : outs) {
      ASSERT_EQ(finals.count(o.request_id), 0u) << o.request_id << " output after its final";
      for (const auto& tok : o.new_tokens) streamed[o.request_id].push_back(tok.token_id);
      if (o.finished) finals[o.request_id] = o;
    }
  };
  for (int i = 0; i < polls_before_fault; ++i) take(engine.poll(std::chrono::milliseconds(0)));
  ASSERT_GT(engine.stats(1).live_requests, 0) << "the fault must hit live requests";
  int mid_stream = 0;  // requests of replica 1 with some but not all of their tokens streamed
  for (const auto& s : specs)
    if (engine.replica_of(s.request_id) == 1 && !streamed[s.request_id].empty()) ++mid_stream;
  EXPECT_GT(mid_stream, 0);
  const int live_on_1 = engine.stats(1).live_requests;
  fault();
  const auto start = std::chrono::steady_clock::now();
  while (engine.has_unfinished() && std::chrono::steady_clock::now() - start < std::chrono::seconds(10))
    take(engine.poll(std::chrono::milliseconds(1)));
  ASSERT_EQ(finals.size(), specs.size());
  for (const auto& s : specs) {
    const auto& o = finals.at(s.request_id);
    EXPECT_EQ(o.finish_reason_string(), "length") << s.request_id;
    EXPECT_EQ(streamed[s.request_id], expected_output(s)) << s.request_id;
    EXPECT_EQ(o.num_output_tokens, *s.max_tokens) << s.request_id;
    EXPECT_EQ(o.num_prompt_tokens, static_cast<int32_t>(s.prompt_token_ids.size()));
  }
  EXPECT_TRUE(engine.replica_failed(1));
  EXPECT_FALSE(engine.replica_failed(0));
  EXPECT_EQ(engine.requeued(), live_on_1);
  EXPECT_TRUE(engine.failure().empty());
  EXPECT_EQ(t.plans_to_failed_, 0);
  ASSERT_EQ(t.failed_.size(), 1u);
  EXPECT_EQ(t.failed_[0].first, 1);
  // Serving goes on: a new request goes to the survivor and completes.
  EXPECT_EQ(engine.submit(request(40, 4, 6)), 0);
  const auto more = drive(engine);
  EXPECT_EQ(more.at("r40").tokens, expected_output(request(40, 4, 6)));
  EXPECT_EQ(engine.stats(1).live_requests, 0);
  EXPECT_TRUE(t.seqs_[0].empty());  // the survivor released everything
}

TEST(EngineCore, AWorkerErrorMovesTheReplicasRequestsAndTheirStreamsContinueExactly) {
  FakeTransport t(2);
  EngineCore engine(t, {sched(64), sched(64)}, {});
  expect_failover_is_exact(t, engine, [&] {
    t.error_replica_ = 1;
    t.error_ = "CUDA error: an illegal memory access";
    t.silent_replicas_.insert(1);
  }, 5);
  EXPECT_THAT(t.failed_[0].second, HasSubstr("replica 1 (fake): world rank 2 failed: CUDA error"));
}

TEST(EngineCore, AReplicaThatStopsAnsweringTimesOutAndItsRequestsMove) {
  FakeTransport t(2);
  EngineCore engine(t, {sched(64), sched(64)}, {std::chrono::milliseconds(50)});
  expect_failover_is_exact(t, engine, [&] { t.silent_replicas_.insert(1); }, 7);
  EXPECT_THAT(t.failed_[0].second, HasSubstr("replica 1 (fake) sent no result for step"));
  EXPECT_THAT(t.failed_[0].second, HasSubstr("runtime.step_timeout_s = 0.05"));
}

TEST(EngineCore, AbortPolicyEndsEveryRequestOnEveryReplica) {
  FakeTransport t(2);
  EngineOptions o;
  o.on_replica_failure = FailurePolicy::kAbort;
  EngineCore engine(t, {sched(64), sched(64)}, o);
  for (int i = 0; i < 4; ++i) engine.submit(request(i, 4, 30));
  for (int i = 0; i < 3; ++i) engine.poll(std::chrono::milliseconds(0));
  t.error_replica_ = 1;
  t.error_ = "boom";
  std::map<std::string, std::string> details;
  for (int i = 0; i < 5; ++i)
    for (auto& o : engine.poll(std::chrono::milliseconds(0)))
      if (o.finished) details[o.request_id] = o.finish_reason_string();
  ASSERT_EQ(details.size(), 4u);
  for (const auto& [id, d] : details)
    EXPECT_EQ(d, "unavailable:replica 1 (fake): world rank 2 failed: boom "
                 "(runtime.on_replica_failure = \"abort\")") << id;
  EXPECT_FALSE(engine.has_unfinished());
  EXPECT_FALSE(engine.failure().empty());
  EXPECT_EQ(engine.requeued(), 0);
}

// Failover that cannot place a request (the survivor's context is too short for the tokens it
// carries) ends it unavailable, naming the failure and why, while serving goes on.
TEST(EngineCore, ARequestTheSurvivorCannotContinueEndsUnavailable) {
  FakeTransport t(2);
  auto small = sched(64);
  small.max_model_len = 16;
  EngineCore engine(t, {sched(64), small}, {});
  ASSERT_EQ(engine.submit(request(0, 12, 30)), 0);  // tie: the lowest index
  int streamed = 0;
  for (int i = 0; i < 8; ++i)
    for (auto& o : engine.poll(std::chrono::milliseconds(0))) streamed += o.new_tokens.size();
  ASSERT_GE(streamed, 4);  // 12 + 4 tokens: no room left within replica 1's 16
  t.error_replica_ = 0;
  t.error_ = "gone";
  t.silent_replicas_.insert(0);
  std::vector<coordinator::RequestOutput> finals;
  for (int i = 0; i < 5; ++i)
    for (auto& o : engine.poll(std::chrono::milliseconds(0)))
      if (o.finished) finals.push_back(o);
  ASSERT_EQ(finals.size(), 1u);
  EXPECT_EQ(finals[0].request_id, "r0");
  EXPECT_EQ(finals[0].finish_reason, coordinator::FinishReason::kUnavailable);
  EXPECT_THAT(finals[0].finish_detail,
              HasSubstr("replica 0 (fake): world rank 2 failed: gone; replica 1 cannot continue "
                        "it: its "));
  EXPECT_THAT(finals[0].finish_detail, HasSubstr("within the context length of 16 tokens"));
  EXPECT_EQ(finals[0].num_output_tokens, streamed);
  EXPECT_TRUE(engine.failure().empty());  // replica 1 still serves
  EXPECT_EQ(engine.requeued(), 0);
  EXPECT_FALSE(engine.has_unfinished());
}

// Stop strings, text and the held-back part of a possible stop string survive the move.
class LetterStream final : public coordinator::TextStream {
 public:
  std::string push(int32_t token) override { return std::string(1, static_cast<char>('a' + token % 26)); }
};

TEST(EngineCore, StopStringStateAndTextContinueAcrossAFailover) {
  // Reference run without a fault, then the same with replica 1 failing mid-stream.
  auto run = [](bool fault) {
    FakeTransport t(2);
    EngineCore engine(t, {sched(64), sched(64)}, {});
    for (int i = 0; i < 6; ++i) {
      auto s = request(i, 4, 40);
      s.text_stream = std::make_unique<LetterStream>();
      s.stop_strings = {"qqu", "wwo", "iim", "uuc"};
      engine.submit(std::move(s));
    }
    std::map<std::string, std::string> text, reason;
    for (int i = 0; i < 10000 && engine.has_unfinished(); ++i) {
      if (fault && i == 6) {
        t.error_replica_ = 1;
        t.error_ = "gone";
        t.silent_replicas_.insert(1);
      }
      for (auto& o : engine.poll(std::chrono::milliseconds(0))) {
        text[o.request_id] += o.new_text;
        if (o.finished) reason[o.request_id] = o.finish_reason_string() + "/" + o.finish_detail;
      }
    }
    if (fault) {
      EXPECT_GT(engine.requeued(), 0);
    }
    return std::make_pair(text, reason);
  };
  const auto clean = run(false);
  const auto faulty = run(true);
  EXPECT_EQ(faulty.first, clean.first);
  EXPECT_EQ(faulty.second, clean.second);
  EXPECT_EQ(clean.second.size(), 6u);
  int stopped = 0;  // the stop strings matter in this workload
  for (const auto& [id, r] : clean.second) stopped += r.rfind("stop/stop_string", 0) == 0;
  EXPECT_GT(stopped, 0) << clean.first.begin()->second;
}

// The queue time's end (api: timings.queue_s): started() lists a request once, in the poll that
// sent its first step, never before it is stepped, never again after a preemption's recompute,
// and never for a request cancelled while waiting.
TEST(EngineCore, StartedReportsEachRequestsFirstStepOnce) {
  FakeTransport t(1);
  auto c = sched(10);  // 40 token slots: two requests of 4 + 20 tokens cannot both finish
  c.max_model_len = 40;
  c.max_num_seqs = 2;  // the third request waits
  c.watermark = 0;
  c.enable_prefix_caching = false;  // so that a recompute starts at position 0
  EngineCore engine(t, {c}, {});
  for (int i = 0; i < 3; ++i) engine.submit(request(i, 4, 20));
  engine.submit(request(3, 4, 5));
  ASSERT_TRUE(engine.cancel("r3"));  // cancelled before any step: never started
  EXPECT_TRUE(engine.started().empty());
  std::map<std::string, int> times_started;
  std::map<std::string, int> poll_started, poll_finished;
  for (int i = 0; i < 10000 && engine.has_unfinished(); ++i) {
    const auto before = std::chrono::steady_clock::now();
    const auto outs = engine.poll(std::chrono::milliseconds(0));
    const auto after = std::chrono::steady_clock::now();
    for (const auto& [id, at] : engine.started()) {
      ++times_started[id];
      poll_started[id] = i;
      EXPECT_TRUE(before <= at && at <= after) << id;
    }
    for (const auto& o : outs)
      if (o.finished) poll_finished[o.request_id] = i;
  }
  ASSERT_FALSE(engine.has_unfinished());
  EXPECT_GT(engine.stats(0).scheduler.preemptions_total, 0);  // a recompute happened
  EXPECT_EQ(times_started, (std::map<std::string, int>{{"r0", 1}, {"r1", 1}, {"r2", 1}}));
  EXPECT_EQ(poll_started["r0"], 0);
  EXPECT_EQ(poll_started["r1"], 0);
  // r2 waited for a running request to end (finish or preemption) before its first step.
  EXPECT_GT(poll_started["r2"], 0);
  // Some sequence was fed from position 0 twice (the recompute), yet started once above.
  std::map<uint64_t, int> from_zero;
  for (const auto& plan : t.plans_[0])
    for (const auto& w : plan.seqs)
      if (w.start_pos == 0) ++from_zero[w.seq_id];
  EXPECT_EQ(from_zero.size(), 3u);
  int recomputed = 0;
  for (const auto& [seq, n] : from_zero) recomputed += n > 1;
  EXPECT_GE(recomputed, 1);
}

TEST(Handshake, ChecksConsistencyAndTakesTheMinimumPool) {
  const comm::WorldLayout layout{2, 2};
  std::vector<messages::WorkerHello> hellos;
  for (int w = 1; w <= 4; ++w) {
    messages::WorkerHello h;
    h.world_rank = w;
    h.replica = layout.replica_of(w);
    h.tp_rank = layout.tp_rank_of(w);
    h.tp_size = 2;
    h.model_name = "m";
    h.model_type = "llama";
    h.num_layers = 2;
    h.hidden_size = 64;
    h.vocab_size = 1000;
    h.num_heads_per_rank = 2;
    h.num_kv_heads_per_rank = 1;
    h.head_dim = 16;
    h.block_size = 16;
    h.num_kv_blocks = 100 + 10 * w;
    hellos.push_back(h);
  }
  const auto caps = check_hellos(layout, hellos, "m");
  ASSERT_EQ(caps.size(), 2u);
  EXPECT_EQ(caps[0].num_kv_blocks, 110);
  EXPECT_EQ(caps[1].num_kv_blocks, 130);
  EXPECT_EQ(caps[1].world_ranks, (std::vector<int>{3, 4}));
  auto bad = hellos;
  bad[2].hidden_size = 32;
  EXPECT_THAT(error_of([&] { check_hellos(layout, bad, "m"); }),
              HasSubstr("world rank 3 (replica 1, tp rank 0 of 2) reports hidden_size = 32 but "
                        "world rank 1 reports 64"));
  bad = hellos;
  bad[3].tp_rank = 0;
  EXPECT_THAT(error_of([&] { check_hellos(layout, bad, "m"); }),
              HasSubstr("world rank 4 (replica 1, tp rank 1 of 2) reports replica 1, tp rank 0 of 2"));
  EXPECT_THAT(error_of([&] { check_hellos(layout, hellos, "other"); }),
              HasSubstr("serves model 'm' but the coordinator expects 'other'"));
}

TEST(RequestIo, ParsesAndValidatesRequests) {
  const auto s = parse_request(nlohmann::json::parse(R"({"id": "a", "prompt_ids": [1, 2, 3],
      "max_tokens": 7, "temperature": 0.5, "top_k": 4, "seed": 9, "ignore_eos": true,
      "stop_token_ids": [5]})"),
                               "f:1");
  EXPECT_EQ(s.request_id, "a");
  EXPECT_EQ(s.prompt_token_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(*s.max_tokens, 7);
  EXPECT_EQ(s.sampling.temperature, 0.5f);
  EXPECT_EQ(s.sampling.top_k, 4);
  EXPECT_EQ(s.sampling.seed, 9u);
  EXPECT_TRUE(s.ignore_eos);
  EXPECT_EQ(s.stop_token_ids, (std::vector<int32_t>{5}));
  auto err = [](const char* text) {
    return error_of([&] { parse_request(nlohmann::json::parse(text), "f:2"); });
  };
  EXPECT_THAT(err(R"({"id": "a", "prompt_ids": [1], "temprature": 1})"),
              HasSubstr("f:2: unknown request field \"temprature\""));
  EXPECT_THAT(err(R"({"prompt_ids": [1]})"), HasSubstr("\"id\" must be a non-empty string"));
  EXPECT_THAT(err(R"({"id": "a", "prompt_ids": [1, -4]})"), HasSubstr("\"prompt_ids\"[1] = -4"));
  EXPECT_THAT(err(R"({"id": "a", "prompt": "hello"})"), HasSubstr("needs the model's tokenizer"));
  EXPECT_THAT(err(R"({"id": "a", "prompt_ids": [1], "top_p": 0})"), HasSubstr("top_p = 0"));
  EXPECT_EQ(parse_id_list("1,22,333", "--prompt-ids"), (std::vector<int32_t>{1, 22, 333}));
  EXPECT_THAT(error_of([] { parse_id_list("1,x", "--prompt-ids"); }), HasSubstr("'x' is not a token id"));
}

TEST(RequestIo, TextPromptsUseTheModelsTokenizer) {
  namespace fs = std::filesystem;
  const auto dir = fs::path(SHARDSERVE_SOURCE_DIR) / "tests" / "fixtures" / "llama3-bpe";
  const auto tokenizer = model::load_tokenizer(dir);
  const auto ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  const auto& p = ref["prompts"][0];
  auto s = parse_request({{"id", "t"}, {"prompt", p["text"]}, {"stop", {"the"}}}, "x", tokenizer.get());
  EXPECT_EQ(s.prompt_token_ids, p["ids"].get<std::vector<int32_t>>());  // BOS included
  EXPECT_EQ(s.stop_strings, (std::vector<std::string>{"the"}));
  ASSERT_NE(s.text_stream, nullptr);
  std::string text;
  for (int32_t id : p["greedy"].get<std::vector<int32_t>>()) text += s.text_stream->push(id);
  text += s.text_stream->flush();
  EXPECT_EQ(text, tokenizer->decode(p["greedy"].get<std::vector<int32_t>>(), true));
  EXPECT_THAT(error_of([] { parse_request({{"id", "t"}, {"prompt", "hi"}}, "x", nullptr); }),
              HasSubstr("a text prompt needs the model's tokenizer"));
  EXPECT_THAT(error_of([&] {
                parse_request({{"id", "t"}, {"prompt", "hi"}, {"prompt_ids", {1}}}, "x", tokenizer.get());
              }),
              HasSubstr("not both"));
}

TEST(KvPool, SizedFromTheSettings) {
  model::ModelConfig m;
  m.model_type = "llama";
  m.vocab_size = 100;
  m.hidden_size = 64;
  m.intermediate_size = 128;
  m.num_hidden_layers = 2;
  m.num_attention_heads = 4;
  m.num_key_value_heads = 2;
  m.head_dim = 16;
  m.max_position_embeddings = 256;
  config::ServiceConfig c;
  c.tp = 4;  // one (replicated) KV head per rank
  c.kv.block_size = 16;
  // 2 (K, V) x 2 layers x 1 head x 16 dims x 4 bytes x 16 tokens = 4 KiB per block.
  c.kv.num_blocks = 10;
  EXPECT_EQ(worker::plan_kv_pool(c, m, 0).num_blocks, 10);
  EXPECT_EQ(worker::plan_kv_pool(c, m, 0).bytes_per_block, 4096);
  c.kv.num_blocks = 0;
  c.kv.memory_bytes = 4096 * 7 + 100;
  EXPECT_EQ(worker::plan_kv_pool(c, m, 0).num_blocks, 7);
  c.kv.memory_bytes = 0;
  c.kv.memory_fraction = 0.5;
  c.scheduler.max_num_seqs = 1000;
  EXPECT_EQ(worker::plan_kv_pool(c, m, 4096 * 20).num_blocks, 10);
  // Capped at what max_num_seqs sequences of max_model_len can use: 2 x 256 / 16 = 32 blocks.
  c.scheduler.max_num_seqs = 2;
  const auto capped = worker::plan_kv_pool(c, m, int64_t{1} << 40);
  EXPECT_EQ(capped.num_blocks, 32);
  EXPECT_THAT(capped.source, HasSubstr("capped"));
  EXPECT_THAT(error_of([&] { worker::plan_kv_pool(c, m, 100); }),
              HasSubstr("leaves room for no block of 4096 bytes"));

  // With a draft model each block id addresses a block in both pools: the budget per block is
  // the sum. A draft of 1 layer and 1 KV head, whole on this rank: 2 x 1 x 1 x 16 x 4 x 16 = 2 KiB.
  model::ModelConfig d = m;
  d.num_hidden_layers = 1;
  d.num_attention_heads = 2;
  d.num_key_value_heads = 1;
  c.kv.memory_fraction = 0.9;
  c.kv.memory_bytes = 6144 * 5 + 100;
  const auto both = worker::plan_kv_pool(c, m, 0, &d, 1);
  EXPECT_EQ(both.bytes_per_block, 4096 + 2048);
  EXPECT_EQ(both.num_blocks, 5);
  EXPECT_THAT(error_of([&] {
                c.kv.memory_bytes = 6000;
                worker::plan_kv_pool(c, m, 0, &d, 1);
              }),
              HasSubstr("leaves room for no block of 6144 bytes"));
}

TEST(SchedulerSettings, TheSpeculativeTableBecomesTheSchedulersConfig) {
  config::ServiceConfig c;
  model::ModelConfig m;
  m.max_position_embeddings = 256;
  m.eos_token_ids = {2};
  HandshakeResult hs;
  hs.replicas = {{0, {1}, 64, 16}, {1, {2}, 48, 16}};
  for (const auto& sc : scheduler_configs_for(c, m, hs))
    EXPECT_EQ(sc.speculative.method, coordinator::SpeculativeMethod::kNone);
  c.speculative.method = "draft";
  c.speculative.num_speculative_tokens = 5;
  c.speculative.adaptive = true;
  c.speculative.draft_cost = 0.2;
  auto scs = scheduler_configs_for(c, m, hs);
  ASSERT_EQ(scs.size(), 2u);
  for (const auto& sc : scs) {
    EXPECT_EQ(sc.speculative.method, coordinator::SpeculativeMethod::kDraftModel);
    EXPECT_EQ(sc.speculative.num_speculative_tokens, 5);
    EXPECT_TRUE(sc.speculative.adaptive);
    EXPECT_EQ(sc.speculative.draft_cost, 0.2);
  }
  EXPECT_EQ(scs[1].num_blocks, 48);
  c.speculative.method = "ngram";
  c.speculative.ngram_min = 2;
  c.speculative.ngram_max = 4;
  scs = scheduler_configs_for(c, m, hs);
  EXPECT_EQ(scs[0].speculative.method, coordinator::SpeculativeMethod::kNgram);
  EXPECT_EQ(scs[0].speculative.ngram_min, 2);
  EXPECT_EQ(scs[0].speculative.ngram_max, 4);
}

}  // namespace
}  // namespace shardserve::runtime
