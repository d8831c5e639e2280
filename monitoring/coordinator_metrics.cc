#include "monitoring/coordinator_metrics.h"

#include <iterator>
#include <string>

#include "common/error.h"
#include "monitoring/catalogue.h"

namespace shardserve::monitoring {

// The label of an engine-ended request is its FinishReason's index in kFinishReasons.
static_assert(std::size(kFinishReasons) == 7 && kFinishTimeout == 5 && kFinishIdleTimeout == 6);
static_assert(kFinishReasons[static_cast<std::size_t>(coordinator::FinishReason::kRejected)] ==
              "rejected");
static_assert(kFinishReasons[static_cast<std::size_t>(coordinator::FinishReason::kUnavailable)] ==
              "unavailable");

StepPhase phase_of(const messages::StepPlan& plan) {
  bool prefill = false, decode = false;
  for (const auto& s : plan.seqs) {
    if (s.start_pos >= s.prompt_len && s.num_tokens == 1 + s.num_draft)
      decode = true;
    else
      prefill = true;
  }
  if (prefill && decode) return StepPhase::kMixed;
  return prefill ? StepPhase::kPrefill : StepPhase::kDecode;
}

CoordinatorMetrics::CoordinatorMetrics(MetricsEndpoint& endpoint, int num_replicas) {
  require(num_replicas >= 1, "coordinator metrics: {} replicas", num_replicas);
  using prometheus::Counter;
  using prometheus::Gauge;
  using prometheus::Histogram;
  namespace m = metric;
  auto& reg = endpoint.registry();
  received_ = &Family<Counter>(reg, m::requests_received_total).add();
  Family<Counter> finished(reg, m::requests_finished_total);
  for (std::size_t i = 0; i < finished_.size(); ++i)
    finished_[i] = &finished.add({{"reason", std::string(kFinishReasons[i])}});
  ttft_ = &Family<Histogram>(reg, m::time_to_first_token_seconds).add();
  tpot_ = &Family<Histogram>(reg, m::time_per_output_token_seconds).add();
  e2e_ = &Family<Histogram>(reg, m::e2e_request_latency_seconds).add();
  queue_ = &Family<Histogram>(reg, m::request_queue_time_seconds).add();

  Family<Gauge> running(reg, m::requests_running), waiting(reg, m::requests_waiting),
      preempted(reg, m::requests_preempted), up(reg, m::replica_up), kv_used(reg, m::kv_blocks_used),
      kv_capacity(reg, m::kv_blocks_capacity), kv_cached(reg, m::kv_blocks_cached),
      kv_usage(reg, m::kv_cache_usage_ratio), hit_ratio(reg, m::prefix_cache_hit_ratio);
  Family<Counter> prompt(reg, m::prompt_tokens_total), generation(reg, m::generation_tokens_total),
      cached(reg, m::prefix_cached_tokens_total), queried(reg, m::prefix_cache_queried_tokens_total),
      hits(reg, m::prefix_cache_hit_tokens_total), evictions(reg, m::prefix_cache_evictions_total),
      preemptions(reg, m::preemptions_total), drafts(reg, m::spec_decode_drafts_total),
      draft_tokens(reg, m::spec_decode_draft_tokens_total),
      accepted(reg, m::spec_decode_accepted_tokens_total),
      failures(reg, m::replica_failures_total), requeued(reg, m::requests_requeued_total);
  Family<Histogram> duration(reg, m::step_duration_seconds), batch(reg, m::step_batch_size),
      tokens(reg, m::step_tokens);
  replicas_.resize(num_replicas);
  for (int r = 0; r < num_replicas; ++r) {
    const prometheus::Labels l = {{"replica", std::to_string(r)}};
    Replica& x = replicas_[r];
    x.running = &running.add(l);
    x.waiting = &waiting.add(l);
    x.preempted = &preempted.add(l);
    x.prompt_tokens = &prompt.add(l);
    x.generation_tokens = &generation.add(l);
    x.cached_tokens = &cached.add(l);
    for (std::size_t p = 0; p < x.step_duration.size(); ++p)
      x.step_duration[p] = &duration.add({{"replica", std::to_string(r)},
                                          {"phase", std::string(kStepPhases[p])}});
    x.batch_size = &batch.add(l);
    x.step_tokens = &tokens.add(l);
    x.kv_used = &kv_used.add(l);
    x.kv_capacity = &kv_capacity.add(l);
    x.kv_cached = &kv_cached.add(l);
    x.kv_usage = &kv_usage.add(l);
    x.prefix_queried = &queried.add(l);
    x.prefix_hits = &hits.add(l);
    x.prefix_hit_ratio = &hit_ratio.add(l);
    x.prefix_evictions = &evictions.add(l);
    x.preemptions = &preemptions.add(l);
    x.spec_drafts = &drafts.add(l);
    x.spec_draft_tokens = &draft_tokens.add(l);
    x.spec_accepted_tokens = &accepted.add(l);
    x.failures = &failures.add(l);
    x.up = &up.add(l);
    x.up->Set(1);
    x.requeued = &requeued.add(l);
  }
}

CoordinatorMetrics::~CoordinatorMetrics() = default;

void CoordinatorMetrics::on_replica_failed(int r) {
  Replica& x = replica(r);
  x.failures->Increment();
  x.up->Set(0);
  x.step_in_flight = false;
}

void CoordinatorMetrics::on_requeued(int from, uint64_t seq_id, int to, uint64_t new_seq_id) {
  replica(from);
  Replica& x = replica(to);
  x.requeued->Increment();
  auto it = live_.find(key(from, seq_id));
  if (it == live_.end()) return;
  const Times t = it->second;
  live_.erase(it);
  live_[key(to, new_seq_id)] = t;
}

CoordinatorMetrics::Replica& CoordinatorMetrics::replica(int r) {
  require(r >= 0 && r < num_replicas(), "coordinator metrics: replica {} of {}", r,
          num_replicas());
  return replicas_[r];
}

void CoordinatorMetrics::on_admitted(int r, uint64_t seq_id, int32_t prompt_tokens,
                                     Clock::time_point now) {
  Replica& x = replica(r);
  x.prompt_tokens->Increment(static_cast<double>(prompt_tokens));
  auto [it, inserted] = live_.try_emplace(key(r, seq_id));
  if (inserted) ++unscheduled_;
  it->second = Times{now};
}

void CoordinatorMetrics::on_step_sent(int r, const messages::StepPlan& plan,
                                      Clock::time_point now) {
  Replica& x = replica(r);
  if (plan.seqs.empty()) return;  // releases only: no result comes back
  x.batch_size->Observe(static_cast<double>(plan.seqs.size()));
  x.step_tokens->Observe(static_cast<double>(plan.total_tokens()));
  x.step_phase = phase_of(plan);
  x.step_sent = now;
  x.step_in_flight = true;
  if (unscheduled_ == 0) return;
  for (const auto& s : plan.seqs) {
    auto it = live_.find(key(r, s.seq_id));
    if (it == live_.end() || it->second.scheduled) continue;
    it->second.scheduled = true;
    --unscheduled_;
    queue_->Observe(std::chrono::duration<double>(now - it->second.arrival).count());
    if (unscheduled_ == 0) break;
  }
}

void CoordinatorMetrics::on_step_done(int r, Clock::time_point now) {
  Replica& x = replica(r);
  if (!x.step_in_flight) return;
  x.step_in_flight = false;
  x.step_duration[static_cast<int>(x.step_phase)]->Observe(
      std::chrono::duration<double>(now - x.step_sent).count());
}

void CoordinatorMetrics::on_output(int r, const coordinator::RequestOutput& out,
                                   Clock::time_point now) {
  const bool placed = r >= 0 && r < num_replicas();
  const auto n_new = static_cast<int32_t>(out.new_tokens.size());
  if (placed && n_new > 0) replicas_[r].generation_tokens->Increment(n_new);
  const bool first_token = n_new > 0 && out.num_output_tokens == n_new;
  if (!first_token && !out.finished) return;

  Times* t = nullptr;
  std::unordered_map<uint64_t, Times>::iterator it;
  if (placed) {
    it = live_.find(key(r, out.seq_id));
    if (it != live_.end()) t = &it->second;
  }
  if (t != nullptr && !t->first_output_seen) {
    t->first_output_seen = true;
    if (out.num_cached_tokens > 0) replicas_[r].cached_tokens->Increment(out.num_cached_tokens);
  }
  if (t != nullptr && first_token) {
    t->first_token = now;
    ttft_->Observe(std::chrono::duration<double>(now - t->arrival).count());
  }
  if (!out.finished) return;

  const auto reason = out.finish_reason.value_or(coordinator::FinishReason::kStop);
  std::size_t label = static_cast<std::size_t>(reason);
  if (!timed_out_.empty()) {
    if (auto tit = timed_out_.find(out.request_id); tit != timed_out_.end()) {
      if (reason == coordinator::FinishReason::kCancelled)
        label = tit->second == TimeLimit::kDeadline ? kFinishTimeout : kFinishIdleTimeout;
      timed_out_.erase(tit);
    }
  }
  finished_[label]->Increment();
  if (t == nullptr) return;
  if (reason == coordinator::FinishReason::kStop || reason == coordinator::FinishReason::kLength) {
    e2e_->Observe(std::chrono::duration<double>(now - t->arrival).count());
    if (out.num_output_tokens > 1 && t->first_token != Clock::time_point{})
      tpot_->Observe(std::chrono::duration<double>(now - t->first_token).count() /
                     (out.num_output_tokens - 1));
  }
  if (!t->scheduled) --unscheduled_;
  live_.erase(it);
}

void CoordinatorMetrics::on_cancel_reason(const std::string& request_id, TimeLimit limit) {
  timed_out_[request_id] = limit;
}

void CoordinatorMetrics::on_replica_state(int r, const coordinator::SchedulerStats& s) {
  Replica& x = replica(r);
  x.running->Set(s.num_running);
  x.waiting->Set(s.num_waiting);
  x.preempted->Set(s.num_preempted_waiting);
  x.kv_used->Set(s.kv_blocks_used);
  x.kv_capacity->Set(s.kv_blocks_total);
  x.kv_cached->Set(s.kv_blocks_cached);
  x.kv_usage->Set(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total
                                        : 0.0);
  x.prefix_hit_ratio->Set(s.prefix_cache_queried_tokens > 0
                              ? static_cast<double>(s.prefix_cache_hit_tokens) /
                                    static_cast<double>(s.prefix_cache_queried_tokens)
                              : 0.0);
  // The scheduler's counters only grow; the exported ones follow by their increments.
  auto mirror = [](prometheus::Counter* c, int64_t now, int64_t before) {
    if (now > before) c->Increment(static_cast<double>(now - before));
  };
  mirror(x.prefix_queried, s.prefix_cache_queried_tokens, x.last.prefix_cache_queried_tokens);
  mirror(x.prefix_hits, s.prefix_cache_hit_tokens, x.last.prefix_cache_hit_tokens);
  mirror(x.prefix_evictions, s.prefix_cache_evictions, x.last.prefix_cache_evictions);
  mirror(x.preemptions, s.preemptions_total, x.last.preemptions_total);
  mirror(x.spec_drafts, s.spec_decode_drafts_total, x.last.spec_decode_drafts_total);
  mirror(x.spec_draft_tokens, s.spec_decode_draft_tokens_total,
         x.last.spec_decode_draft_tokens_total);
  mirror(x.spec_accepted_tokens, s.spec_decode_accepted_tokens_total,
         x.last.spec_decode_accepted_tokens_total);
  x.last = s;
}

}  // namespace shardserve::monitoring
