// Property tests: the real Scheduler driven for thousands of steps by random arrivals, prompt
// and output lengths, shared prefixes, cancellations (also while a step runs) and tiny pools,
// against a FakeWorker that checks the KV every sequence attends to. After every step:
//  * the pool's and the tables' books agree: ref counts equal owners, nothing freed twice,
//    free + used = total; waiting requests hold no blocks;
//  * a block held by two sequences is a full, computed prefix block with the same hash chain
//    in both, at the same index; a block being written is held by its writer alone;
//  * the plan respects the token budget and the sequence cap; every running decode is in it
//    unless it was preempted in that step; victims are younger than every survivor;
//  * under FCFS, requests first run in arrival order (nobody overtakes, nobody starves);
// and at the end every request has exactly one final event (finished or rejected with a
// reason), outputs respect max_tokens and the context, and the streamed text equals the
// detokenized output cut at the first stop string.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "coordinator/scheduler.h"
#include "tests/scheduler/fake_worker.h"

namespace shardserve::coordinator {
namespace {

using testing::FakeWorker;
using testing::piece_of;
using testing::PieceStream;

constexpr int32_t kVocab = 40;
constexpr int32_t kEos = 39;

struct Scenario {
  const char* name;
  uint64_t seed;
  int32_t block_size, num_blocks, max_model_len, budget, max_seqs;
  double watermark;
  bool prefix_caching, chunked, priorities;
  double arrival_rate;  // requests per step while arrivals last
  double cancel_rate;   // cancellations per step
  // Speculative decoding: method, K, adaptive K. Requests ask for their own K now and then
  // (0 = none), so speculating and plain decodes share steps.
  SpeculativeMethod spec = SpeculativeMethod::kNone;
  int32_t spec_k = 0;
  bool adaptive = false;
};

struct Tracked {
  std::string id;
  uint64_t seq = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;  // the truth: prompt + every token the worker sampled for it
  std::optional<int32_t> max_tokens;
  std::vector<int32_t> stop_ids;
  std::vector<std::string> stops;
  bool ignore_eos = false;
  int32_t priority = 0;
  std::string text;  // streamed
  int finals = 0;
  bool cancelled = false;
  RequestOutput last;
};

class Driver {
 public:
  explicit Driver(const Scenario& sc)
      : sc_(sc), rng_(sc.seed), sched_(make_config(sc)), worker_(sc.num_blocks, sc.block_size) {
    // A few shared "system prompts" so that prefixes repeat, as in chat traffic.
    for (int i = 0; i < 3; ++i) prefixes_.push_back(random_tokens(uniform(1, sc.max_model_len / 2)));
  }

  static SchedulerConfig make_config(const Scenario& sc) {
    SchedulerConfig c;
    c.block_size = sc.block_size;
    c.num_blocks = sc.num_blocks;
    c.max_model_len = sc.max_model_len;
    c.max_num_batched_tokens = sc.budget;
    c.max_num_seqs = sc.max_seqs;
    c.watermark = sc.watermark;
    c.enable_prefix_caching = sc.prefix_caching;
    c.enable_chunked_prefill = sc.chunked;
    c.eos_token_ids = {kEos};
    c.speculative.method = sc.spec;
    c.speculative.num_speculative_tokens = sc.spec_k;
    c.speculative.adaptive = sc.adaptive;
    c.speculative.ngram_max = 2;
    return c;
  }

  void run(int arrival_steps, int drain_limit) {
    int step = 0;
    for (; step < arrival_steps; ++step) {
      arrivals(step);
      one_step(step);
      if (::testing::Test::HasFailure()) return;
    }
    // Drain: no new work; everything must end within the limit.
    int drained = 0;
    while (sched_.has_unfinished_requests() && drained < drain_limit) {
      one_step(step++);
      ++drained;
      if (::testing::Test::HasFailure()) return;
    }
    ASSERT_FALSE(sched_.has_unfinished_requests())
        << sc_.name << ": " << sched_.stats().num_running << " running, "
        << sched_.stats().num_waiting << " waiting after " << drain_limit << " drain steps";
    final_checks();
  }

  int64_t steps_with_work() const { return sched_.stats().steps_total; }
  int64_t preemptions() const { return sched_.stats().preemptions_total; }
  int64_t hit_tokens() const { return sched_.stats().prefix_cache_hit_tokens; }
  SchedulerStats stats() const { return sched_.stats(); }
  size_t num_requests() const { return tracked_.size(); }

 private:
  int32_t uniform(int32_t lo, int32_t hi) {
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng_);
  }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  std::vector<int32_t> random_tokens(int32_t n) {
    std::vector<int32_t> v(n);
    for (auto& t : v) t = uniform(0, kVocab - 2);  // prompts avoid EOS (it would not matter)
    return v;
  }

  void arrivals(int step) {
    int n = 0;
    for (double r = sc_.arrival_rate; r > 0; r -= 1.0) n += chance(std::min(r, 1.0));
    for (int i = 0; i < n; ++i) add(step);
  }

  void add(int step) {
    Tracked t;
    t.id = "req" + std::to_string(next_id_++);
    const int kind = uniform(0, 9);
    if (kind < 4) {  // shared prefix + own suffix
      t.prompt = prefixes_[uniform(0, 2)];
      auto tail = random_tokens(uniform(0, sc_.max_model_len / 3));
      t.prompt.insert(t.prompt.end(), tail.begin(), tail.end());
    } else if (kind < 5 && !tracked_.empty()) {  // exact repeat of an earlier prompt
      t.prompt = tracked_[uniform(0, static_cast<int32_t>(tracked_.size()) - 1)].prompt;
    } else if (kind < 6) {  // sometimes invalid: too long or empty
      t.prompt = random_tokens(chance(0.5) ? 0 : uniform(sc_.max_model_len, sc_.max_model_len + 8));
    } else {
      t.prompt = random_tokens(uniform(1, sc_.max_model_len - 1));
    }
    if (chance(0.8)) t.max_tokens = uniform(chance(0.05) ? 0 : 1, sc_.max_model_len);
    if (chance(0.3)) t.stop_ids = {uniform(0, kVocab - 1)};
    if (chance(0.3)) {
      const int n = uniform(1, 2);
      for (int i = 0; i < n; ++i) {
        std::string s(uniform(2, 4), 'a');
        for (char& c : s) c = "abc"[uniform(0, 2)];
        t.stops.push_back(s);
      }
    }
    t.ignore_eos = chance(0.2);
    t.priority = sc_.priorities ? uniform(0, 3) : 0;
    t.tokens = t.prompt;

    RequestSpec spec;
    spec.request_id = t.id;
    spec.prompt_token_ids = t.prompt;
    spec.max_tokens = t.max_tokens;
    spec.stop_token_ids = t.stop_ids;
    spec.stop_strings = t.stops;
    spec.ignore_eos = t.ignore_eos;
    spec.priority = t.priority;
    spec.arrival_time = step;
    spec.text_stream = std::make_unique<PieceStream>();
    if (sc_.spec != SpeculativeMethod::kNone && chance(0.4)) {
      spec.num_speculative_tokens = uniform(0, sc_.spec_k + 2);
    }
    auto r = sched_.add_request(std::move(spec));
    t.seq = r.seq_id;
    index_[t.seq] = tracked_.size();
    tracked_.push_back(std::move(t));
    if (r.rejection) record(*r.rejection);
  }

  Tracked& of(uint64_t seq) { return tracked_.at(index_.at(seq)); }

  void record(const RequestOutput& o) {
    Tracked& t = of(o.seq_id);
    EXPECT_EQ(t.finals, 0) << t.id << " has output after its final one";
    EXPECT_EQ(o.request_id, t.id);
    t.text += o.new_text;
    if (o.finished) {
      ++t.finals;
      t.last = o;
      EXPECT_FALSE(o.finish_reason_string().empty());
    }
  }

  void cancel_random() {
    const auto& running = sched_.running();
    std::vector<uint64_t> live;
    for (const Request* r : running) live.push_back(r->seq_id);
    for (const auto& [key, r] : sched_.waiting()) live.push_back(r->seq_id);
    if (live.empty()) return;
    const uint64_t seq = live[uniform(0, static_cast<int32_t>(live.size()) - 1)];
    auto out = sched_.cancel(of(seq).id);
    ASSERT_TRUE(out);
    EXPECT_EQ(out->finish_reason, FinishReason::kCancelled);
    EXPECT_FALSE(sched_.kv_cache().has(seq)) << "cancel frees blocks at once";
    of(seq).cancelled = true;
    record(*out);
  }

  void one_step(int step) {
    if (chance(sc_.cancel_rate)) cancel_random();

    // Before: who runs, and which of them are decoding.
    std::map<uint64_t, QueueKey> running_before;
    std::set<uint64_t> decoding_before;
    for (const Request* r : sched_.running()) {
      running_before[r->seq_id] = r->key();
      if (r->is_decoding()) decoding_before.insert(r->seq_id);
    }

    const messages::StepPlan plan = sched_.schedule();
    check_plan(plan, running_before, decoding_before);
    if (::testing::Test::HasFailure()) return;

    if (!plan.seqs.empty()) {
      // Cancel while the step runs, now and then.
      if (chance(sc_.cancel_rate / 2)) cancel_random();
      auto result = worker_.execute(
          plan, [&](uint64_t s) -> const std::vector<int32_t>& { return of(s).tokens; },
          [&](uint64_t) { return next_token(); },
          [&](uint64_t, const std::vector<int32_t>& drafts) { return verify(drafts); },
          [&](uint64_t) { return next_token(); });
      std::map<uint64_t, std::vector<int32_t>> returned;
      for (size_t i = 0; i < result.seq_ids.size(); ++i)
        for (int32_t j = result.sample_offsets[i]; j < result.sample_offsets[i + 1]; ++j)
          returned[result.seq_ids[i]].push_back(result.tokens[j].token_id);
      for (const auto& o : sched_.on_step_result(result)) {
        // The scheduler keeps the returned tokens in order, up to the first that ends the
        // request; the truth is what it kept.
        const auto& back = returned[o.seq_id];
        EXPECT_GE(o.new_tokens.size(), 1u);
        EXPECT_LE(o.new_tokens.size(), back.size());
        if (o.new_tokens.size() < back.size()) {
          EXPECT_TRUE(o.finished) << o.request_id << " dropped tokens but did not finish";
        }
        for (size_t j = 0; j < o.new_tokens.size() && j < back.size(); ++j) {
          EXPECT_EQ(o.new_tokens[j].token_id, back[j]);
          of(o.seq_id).tokens.push_back(o.new_tokens[j].token_id);
        }
        record(o);
      }
    }
    check_books(step);
  }

  int32_t next_token() {
    // EOS now and then; otherwise any id (stop ids and stop strings do the rest).
    return chance(0.03) ? kEos : uniform(0, kVocab - 2);
  }

  // A random verify outcome: a prefix of the drafts, then a token that differs from the first
  // rejected draft (as the exact rule's residual never yields it), or a bonus token.
  std::vector<int32_t> verify(const std::vector<int32_t>& drafts) {
    const int32_t k = static_cast<int32_t>(drafts.size());
    const int32_t accepted = chance(0.3) ? k : uniform(0, k);
    std::vector<int32_t> out(drafts.begin(), drafts.begin() + accepted);
    int32_t t = next_token();
    while (accepted < k && t == drafts[accepted]) t = next_token();
    out.push_back(t);
    return out;
  }

  void check_plan(const messages::StepPlan& plan, const std::map<uint64_t, QueueKey>& before,
                  const std::set<uint64_t>& decoding_before) {
    EXPECT_LE(plan.total_tokens(), sc_.budget);
    EXPECT_LE(static_cast<int32_t>(plan.seqs.size()), sc_.max_seqs);
    std::set<uint64_t> in_plan;
    for (const auto& w : plan.seqs) {
      in_plan.insert(w.seq_id);
      const Request* r = sched_.find(w.seq_id);
      ASSERT_NE(r, nullptr);
      EXPECT_EQ(r->status, RequestStatus::kRunning);
      if (!sc_.chunked) {
        EXPECT_EQ(w.start_pos + w.num_tokens, r->num_tokens()) << "no chunks";
      }
      // Blocks written this step are private and not in the prefix cache.
      const int32_t* table = plan.block_ids.data() + w.block_offset;
      for (int32_t b = w.start_pos / sc_.block_size; b < w.num_blocks; ++b) {
        EXPECT_EQ(sched_.kv_cache().pool().ref_count(table[b]), 1)
            << "seq " << w.seq_id << " writes shared block " << table[b];
        EXPECT_FALSE(sched_.kv_cache().pool().is_cached(table[b]))
            << "seq " << w.seq_id << " writes cached block " << table[b];
      }
      // Under FCFS requests first run in arrival (= seq id) order.
      if (!r->num_preemptions && !first_run_.count(w.seq_id)) {
        first_run_.insert(w.seq_id);
        if (!sc_.priorities) {
          EXPECT_GT(w.seq_id, last_first_run_) << "seq " << w.seq_id << " overtook an earlier one";
          last_first_run_ = std::max(last_first_run_, w.seq_id);
        }
      }
    }
    // Victims: those running before and waiting now.
    std::vector<QueueKey> victims, survivors;
    for (const auto& [seq, key] : before) {
      const Request* r = sched_.find(seq);
      if (!r) continue;  // cancelled before schedule()
      if (r->status == RequestStatus::kWaiting) {
        victims.push_back(key);
        EXPECT_FALSE(sched_.kv_cache().has(seq));
      } else {
        survivors.push_back(key);
        if (decoding_before.count(seq)) {
          EXPECT_TRUE(in_plan.count(seq)) << "running decode " << seq << " was left out";
        }
      }
    }
    for (const auto& v : victims)
      for (const auto& s : survivors)
        EXPECT_LT(s, v) << "a preemption victim was not younger than a survivor";
  }

  void check_books(int step) {
    const auto& kv = sched_.kv_cache();
    EXPECT_NO_THROW(kv.check_invariants()) << "step " << step;
    const auto& pool = kv.pool();
    // Independent count of owners over every live sequence's table.
    std::map<int32_t, std::vector<std::pair<uint64_t, int32_t>>> owners;  // block -> (seq, index)
    int32_t live = 0;
    auto visit = [&](const Request* r) {
      ++live;
      if (!kv.has(r->seq_id)) {
        EXPECT_NE(r->status, RequestStatus::kRunning) << "running seq without blocks";
        return;
      }
      EXPECT_EQ(r->status, RequestStatus::kRunning) << "waiting seq " << r->seq_id << " holds blocks";
      const auto& table = kv.block_table(r->seq_id);
      EXPECT_GE(static_cast<int32_t>(table.size()) * sc_.block_size, r->num_computed_tokens);
      EXPECT_LE(r->num_computed_tokens, r->num_tokens());
      // Rollback: no block beyond the known tokens stays held between steps (lookahead slots
      // for rejected drafts are given back).
      EXPECT_LE(static_cast<int32_t>(table.size()), kv.blocks_for_tokens(r->num_tokens()))
          << "seq " << r->seq_id << " keeps blocks past its tokens at step " << step;
      for (int32_t i = 0; i < static_cast<int32_t>(table.size()); ++i)
        owners[table[i]].push_back({r->seq_id, i});
    };
    for (const Request* r : sched_.running()) visit(r);
    for (const auto& [key, r] : sched_.waiting()) visit(r);
    int32_t referenced = 0;
    for (int32_t b = 0; b < pool.num_blocks(); ++b) {
      const auto it = owners.find(b);
      const int32_t n = it == owners.end() ? 0 : static_cast<int32_t>(it->second.size());
      EXPECT_EQ(pool.ref_count(b), n) << "block " << b << " at step " << step;
      referenced += n > 0;
      if (n < 2) continue;
      // Shared: same index, full and computed in every owner, same hash chain.
      const auto [s0, i0] = it->second[0];
      const Request* r0 = sched_.find(s0);
      for (const auto& [s, i] : it->second) {
        const Request* r = sched_.find(s);
        EXPECT_EQ(i, i0) << "block " << b << " shared at different positions";
        EXPECT_LE((i + 1) * sc_.block_size, r->num_computed_tokens)
            << "block " << b << " shared before it was full and computed";
        ASSERT_LT(static_cast<size_t>(i), r->block_hashes.size());
        EXPECT_EQ(r->block_hashes[i], r0->block_hashes[i0]) << "block " << b << " shared wrongly";
        EXPECT_TRUE(std::equal(r->tokens.begin(), r->tokens.begin() + (i + 1) * sc_.block_size,
                               r0->tokens.begin()))
            << "block " << b << " shared by sequences with different prefixes";
      }
    }
    EXPECT_EQ(referenced + pool.num_free(), pool.num_blocks());
    EXPECT_EQ(referenced, kv.num_used_blocks());
    const auto st = sched_.stats();
    EXPECT_EQ(st.num_running + st.num_waiting, live);
    EXPECT_LE(st.num_running, sc_.max_seqs);
  }

  void final_checks() {
    EXPECT_EQ(sched_.kv_cache().num_used_blocks(), 0) << "blocks leaked";
    for (const Tracked& t : tracked_) {
      ASSERT_EQ(t.finals, 1) << t.id << " got " << t.finals << " final events";
      const RequestOutput& o = t.last;
      ASSERT_TRUE(o.finish_reason);
      if (*o.finish_reason == FinishReason::kRejected) {
        EXPECT_FALSE(o.finish_detail.empty()) << t.id << " rejected without a reason";
        continue;
      }
      if (*o.finish_reason == FinishReason::kCancelled) continue;
      const int32_t outputs = static_cast<int32_t>(t.tokens.size() - t.prompt.size());
      EXPECT_EQ(o.num_output_tokens, outputs) << t.id;
      if (t.max_tokens) {
        EXPECT_LE(outputs, *t.max_tokens) << t.id;
      }
      EXPECT_LE(static_cast<int32_t>(t.tokens.size()), sc_.max_model_len) << t.id;
      const int32_t last = t.tokens.back();
      auto is_stop = [&](int32_t id) {
        return std::count(t.stop_ids.begin(), t.stop_ids.end(), id) ||
               (id == kEos && !t.ignore_eos);
      };
      const bool stop_token = is_stop(last);
      // Stop conditions are checked on every kept token: none before the last one stops.
      for (size_t i = t.prompt.size(); i + 1 < t.tokens.size(); ++i)
        EXPECT_FALSE(is_stop(t.tokens[i])) << t.id << " went on past stop token at " << i;
      // The text: every output token's piece, except a final stop token's.
      std::string full;
      size_t before_last = 0;
      for (size_t i = t.prompt.size(); i < t.tokens.size(); ++i) {
        before_last = full.size();
        if (i + 1 == t.tokens.size() && stop_token) break;
        full += piece_of(t.tokens[i]);
      }
      // Earliest-ending stop string in the full text.
      size_t best_end = std::string::npos, best_pos = 0;
      for (const auto& s : t.stops) {
        const size_t p = full.find(s);
        if (p != std::string::npos && (p + s.size() < best_end ||
                                       (p + s.size() == best_end && p < best_pos))) {
          best_end = p + s.size();
          best_pos = p;
        }
      }
      if (o.finish_detail == "stop_string") {
        ASSERT_NE(best_end, std::string::npos) << t.id;
        EXPECT_GT(best_end, before_last) << t.id << " should have stopped at an earlier token";
        EXPECT_EQ(t.text, full.substr(0, best_pos)) << t.id;
        EXPECT_EQ(o.finish_reason, FinishReason::kStop);
      } else {
        EXPECT_EQ(best_end, std::string::npos) << t.id << " missed stop string in '" << full << "'";
        EXPECT_EQ(t.text, full) << t.id;
        if (o.finish_reason == FinishReason::kStop) {
          EXPECT_TRUE(stop_token) << t.id;
          EXPECT_EQ(o.stop_token_id, last);
        } else {
          ASSERT_EQ(o.finish_reason, FinishReason::kLength) << t.id;
          EXPECT_FALSE(stop_token) << t.id;
          EXPECT_TRUE((t.max_tokens && outputs == *t.max_tokens) ||
                      static_cast<int32_t>(t.tokens.size()) == sc_.max_model_len)
              << t.id;
        }
      }
    }
  }

  Scenario sc_;
  std::mt19937_64 rng_;
  Scheduler sched_;
  FakeWorker worker_;
  std::vector<std::vector<int32_t>> prefixes_;
  std::vector<Tracked> tracked_;
  std::map<uint64_t, size_t> index_;
  std::set<uint64_t> first_run_;
  uint64_t last_first_run_ = 0;
  int next_id_ = 0;
};

class SchedulerProperty : public ::testing::TestWithParam<Scenario> {};

TEST_P(SchedulerProperty, RandomWorkloadKeepsEveryInvariant) {
  const Scenario& sc = GetParam();
  Driver d(sc);
  d.run(/*arrival_steps=*/2500, /*drain_limit=*/20000);
  // The scenario must actually exercise what it is about.
  EXPECT_GT(d.steps_with_work(), 1500) << sc.name;
  EXPECT_GT(d.num_requests(), 200u) << sc.name;
  if (sc.num_blocks * sc.block_size < 4 * sc.max_model_len) {
    EXPECT_GT(d.preemptions(), 0) << sc.name;
  }
  if (sc.prefix_caching) {
    EXPECT_GT(d.hit_tokens(), 0) << sc.name;
  }
  if (sc.spec != SpeculativeMethod::kNone) {
    const auto st = d.stats();
    EXPECT_GT(st.spec_decode_drafts_total, 100) << sc.name;
    EXPECT_GT(st.spec_decode_accepted_tokens_total, 0) << sc.name;
    EXPECT_LT(st.spec_decode_accepted_tokens_total, st.spec_decode_draft_tokens_total) << sc.name;
    EXPECT_GT(st.spec_decode_rollback_blocks_total, 0) << sc.name;
    RecordProperty("spec_acceptance", std::to_string(st.spec_acceptance_rate()));
  }
  RecordProperty("preemptions", std::to_string(d.preemptions()));
}

// name, seed, block_size, num_blocks, max_model_len, budget, max_seqs, watermark,
// prefix_caching, chunked, priorities, arrival_rate, cancel_rate
const Scenario kScenarios[] = {
    {"tiny_pool_chunked_cached", 1, 4, 12, 40, 16, 4, 0.0, true, true, false, 0.4, 0.02},
    {"tiny_pool_chunked_cached_s2", 2, 4, 12, 40, 16, 4, 0.1, true, true, false, 0.5, 0.05},
    {"block1_pool", 3, 1, 40, 40, 12, 6, 0.0, true, true, false, 0.5, 0.02},
    {"no_chunking", 4, 4, 16, 32, 32, 4, 0.05, true, false, false, 0.4, 0.02},
    {"no_prefix_cache", 5, 2, 24, 40, 10, 5, 0.0, false, true, false, 0.5, 0.03},
    {"priorities", 6, 4, 12, 40, 16, 4, 0.0, true, true, true, 0.6, 0.02},
    {"priorities_no_chunk", 7, 2, 20, 40, 40, 8, 0.1, true, false, true, 0.5, 0.03},
    {"roomy_pool_many_seqs", 8, 8, 64, 48, 64, 16, 0.02, true, true, false, 1.5, 0.02},
    {"budget_equals_seqs", 9, 4, 10, 40, 3, 3, 0.0, true, true, false, 0.3, 0.02},
    {"heavy_cancel", 10, 4, 12, 40, 16, 4, 0.0, true, true, false, 0.8, 0.4},
    // Urgent prompts arriving behind lax decodes, with a budget so small that their prefill
    // spans many steps: their chunks preempt decodes already planned in the same step.
    {"priorities_small_budget", 11, 4, 10, 40, 4, 4, 0.0, true, true, true, 0.25, 0.01},
    // Speculative decoding mixed with plain decodes (requests that ask for K = 0), in small
    // pools where lookahead slots compete with growth and preemption.
    {"spec_ngram", 12, 4, 12, 40, 16, 4, 0.0, true, true, false, 0.4, 0.02,
     SpeculativeMethod::kNgram, 4, false},
    {"spec_ngram_block1_adaptive", 13, 1, 40, 40, 12, 6, 0.0, true, true, false, 0.5, 0.02,
     SpeculativeMethod::kNgram, 3, true},
    {"spec_draft_model", 14, 4, 12, 40, 16, 4, 0.05, true, true, false, 0.5, 0.05,
     SpeculativeMethod::kDraftModel, 3, false},
    {"spec_draft_model_small_budget", 15, 2, 24, 40, 6, 5, 0.0, false, true, true, 0.5, 0.03,
     SpeculativeMethod::kDraftModel, 5, true},
    {"spec_roomy_many_seqs", 16, 8, 64, 48, 64, 16, 0.02, true, true, false, 1.5, 0.02,
     SpeculativeMethod::kDraftModel, 4, false},
};

// gtest prints parameters in failure messages; the name is enough.
void PrintTo(const Scenario& s, std::ostream* os) { *os << s.name; }

INSTANTIATE_TEST_SUITE_P(Scenarios, SchedulerProperty, ::testing::ValuesIn(kScenarios),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace shardserve::coordinator
