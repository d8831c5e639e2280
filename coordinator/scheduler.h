#pragma once
// Continuous batching for one replica: every step, decide which sequences compute which tokens
// under the token budget, the sequence cap and the KV pool; then take the sampled tokens back,
// apply stop conditions and free what finished. Plain logic: no threads, no clock, no I/O.
//
// Engine loop (one replica, strictly alternating):
//   Scheduler s(config);
//   s.add_request(spec)                -> AddResult (rejection, if any, is final at once)
//   loop:
//     StepPlan plan = s.schedule();    // send to every rank if plan.seqs or plan.released
//     if (!plan.seqs.empty())
//       for (auto& out : s.on_step_result(result_of(plan)))  ... stream out to its client
//   s.cancel(request_id)               -> final "cancelled" output; blocks free at once
// See coordinator/README.md for the contract.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "coordinator/kv_cache_manager.h"
#include "coordinator/request.h"
#include "coordinator/request_output.h"
#include "coordinator/request_queue.h"
#include "coordinator/scheduler_config.h"
#include "coordinator/scheduler_stats.h"
#include "messages/step_plan.h"

namespace shardserve::coordinator {

struct AddResult {
  uint64_t seq_id = 0;
  std::optional<RequestOutput> rejection;  // set: the request is finished as rejected:<reason>
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config);  // validates the config

  AddResult add_request(RequestSpec spec);

  // The next step. Requests may be added and cancelled between schedule() and
  // on_step_result(), but schedule() must not be called again until the result of a plan with
  // work has been applied (shardserve::Error otherwise).
  messages::StepPlan schedule();

  // Applies the result of the last plan: advances computed tokens, registers newly full blocks
  // in the prefix cache, appends sampled tokens, checks stop conditions, frees finished
  // sequences (listed in the next plan's `released`). One output per sequence that sampled.
  std::vector<RequestOutput> on_step_result(const messages::StepResult& result);

  // Cancels a live request; its blocks are freed at once. nullopt when it is not live.
  std::optional<RequestOutput> cancel(std::string_view request_id);

  // Failover (coordinator/runtime/engine_core.h): the replica this scheduler drives has failed.
  // Takes every live request out in queue order, with its tokens (prompt + outputs already
  // streamed), text stream, stop-string state and counts; its KV, the step in flight and the
  // pending releases are forgotten (the replica's ranks are gone). The scheduler is empty after.
  std::vector<std::unique_ptr<Request>> take_all();
  // Adopts a request taken from another replica's scheduler: a new seq id here, queued as if
  // preempted (recomputed from its first token, which also rebuilds the workers' sampler
  // history), so that its outputs continue the same token stream; max_tokens, output counts and
  // stop strings go on from where they were. Rejected (the output says why) when its tokens no
  // longer leave room within this replica's max_model_len.
  AddResult adopt(std::unique_ptr<Request> request);

  bool has_unfinished_requests() const { return !requests_.empty(); }
  bool step_in_flight() const { return in_flight_.has_value(); }
  SchedulerStats stats() const;
  const SchedulerConfig& config() const { return config_; }

  // Read-only views for tests and metrics.
  const KVCacheManager& kv_cache() const { return kv_; }
  const Request* find(uint64_t seq_id) const;
  const std::vector<Request*>& running() const { return running_; }
  const RequestQueue& waiting() const { return waiting_; }

 private:
  struct Scheduled {
    Request* request;
    int32_t num_tokens;             // the sequence's own tokens (drafts not included)
    int32_t num_draft = 0;          // draft tokens to verify after them
    std::vector<int32_t> drafts = {};  // prompt lookup: the proposals (draft model: empty)
    int32_t budget() const { return num_tokens + num_draft; }
  };
  struct InFlight {
    uint64_t step_id;
    std::vector<messages::SequenceWork> seqs;
  };

  std::optional<std::string> rejection_reason(const RequestSpec& spec) const;
  void schedule_running(std::vector<Scheduled>& scheduled, int32_t& budget, bool& preempted);
  void admit_waiting(std::vector<Scheduled>& scheduled, int32_t& budget);
  void preempt(Request* victim, std::vector<Scheduled>& scheduled, int32_t& budget);
  messages::StepPlan build_plan(const std::vector<Scheduled>& scheduled);
  // Draft tokens for a decoding request this step, at most `cap` (budget and lookahead rules in
  // coordinator/speculative_policy.h).
  void plan_drafts(const Request& r, int32_t cap, Scheduled& s) const;
  // Appends a step's tokens for one sequence in order, checking the stop conditions after each;
  // tokens after one that finishes the request are dropped.
  RequestOutput process_samples(Request& r, std::span<const messages::SampledToken> samples);
  RequestOutput finish(Request& r, FinishReason reason, std::string detail, RequestOutput out);
  void erase_request(Request& r);
  RequestOutput base_output(const Request& r) const;

  SchedulerConfig config_;
  int32_t watermark_blocks_;
  KVCacheManager kv_;
  std::unordered_map<uint64_t, std::unique_ptr<Request>> requests_;  // live: waiting or running
  std::unordered_map<std::string, uint64_t> by_request_id_;
  RequestQueue waiting_;
  std::vector<Request*> running_;  // in queue order
  std::vector<uint64_t> released_;  // finished since the last plan: the workers drop them
  std::optional<InFlight> in_flight_;
  uint64_t next_seq_id_ = 1;
  uint64_t next_step_id_ = 1;
  SchedulerStats counters_;
};

}  // namespace shardserve::coordinator
