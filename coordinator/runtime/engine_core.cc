#include "coordinator/runtime/engine_core.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "common/error.h"

namespace shardserve::runtime {

using coordinator::RequestOutput;
using Clock = std::chrono::steady_clock;

EngineCore::EngineCore(ReplicaTransport& transport,
                       std::vector<coordinator::SchedulerConfig> replicas, EngineOptions options)
    : transport_(transport), options_(options), metrics_(options.metrics) {
  require(!replicas.empty(), "engine: no replicas");
  require(static_cast<int>(replicas.size()) == transport.num_replicas(),
          "engine: {} scheduler configs for {} replicas", replicas.size(), transport.num_replicas());
  for (auto& c : replicas) {
    Replica r;
    r.capacity_tokens = int64_t{c.num_blocks} * c.block_size;
    r.scheduler = std::make_unique<coordinator::Scheduler>(std::move(c));
    replicas_.push_back(std::move(r));
  }
  if (metrics_) {
    require(metrics_->num_replicas() == num_replicas(), "engine: metrics for {} replicas, {} replicas",
            metrics_->num_replicas(), num_replicas());
    for (int i = 0; i < num_replicas(); ++i)
      metrics_->on_replica_state(i, replicas_[i].scheduler->stats());
  }
}

EngineCore::~EngineCore() = default;

int EngineCore::choose_replica() const {
  int best = -1;
  for (int r = 0; r < num_replicas(); ++r) {
    const Replica& a = replicas_[r];
    if (a.failed) continue;
    if (best < 0) {
      best = r;
      continue;
    }
    const Replica& b = replicas_[best];
    // a.load / a.cap < b.load / b.cap, in integers.
    const __int128 lhs = static_cast<__int128>(a.outstanding_tokens) * b.capacity_tokens;
    const __int128 rhs = static_cast<__int128>(b.outstanding_tokens) * a.capacity_tokens;
    if (lhs < rhs || (lhs == rhs && a.live < b.live)) best = r;
  }
  return best;
}

int EngineCore::num_live_replicas() const {
  int n = 0;
  for (const auto& r : replicas_) n += !r.failed;
  return n;
}

int EngineCore::submit(coordinator::RequestSpec spec) {
  if (metrics_) metrics_->on_submitted();
  if (!admitting_ || !failure_.empty()) {
    RequestOutput out;
    out.request_id = spec.request_id;
    out.finished = true;
    // After a failure the service cannot serve anyone (unavailable); a drain is refusal by
    // design (rejected, as before).
    out.finish_reason = failure_.empty() ? coordinator::FinishReason::kRejected
                                         : coordinator::FinishReason::kUnavailable;
    out.finish_detail = failure_.empty() ? std::string("shutting down") : failure_;
    out.num_prompt_tokens = static_cast<int32_t>(spec.prompt_token_ids.size());
    if (metrics_) metrics_->on_output(-1, out, Clock::now());
    pending_.push_back(std::move(out));
    return -1;
  }
  const int r = choose_replica();
  Replica& replica = replicas_[r];
  const auto& cfg = replica.scheduler->config();
  const int64_t prompt = static_cast<int64_t>(spec.prompt_token_ids.size());
  const int64_t tokens = std::min<int64_t>(
      cfg.max_model_len, spec.max_tokens ? prompt + *spec.max_tokens : int64_t{cfg.max_model_len});
  std::string id = spec.request_id;
  const bool duplicate = placement_.count(id) != 0;
  if (duplicate) {
    // Each replica's scheduler checks ids only among its own requests: check across all here.
    RequestOutput out;
    out.request_id = id;
    out.finished = true;
    out.finish_reason = coordinator::FinishReason::kRejected;
    out.finish_detail = fmt::format("request id '{}' is already live", id);
    out.num_prompt_tokens = static_cast<int32_t>(prompt);
    if (metrics_) metrics_->on_output(-1, out, Clock::now());
    pending_.push_back(std::move(out));
    return -1;
  }
  auto added = replica.scheduler->add_request(std::move(spec));
  if (added.rejection) {
    if (metrics_) metrics_->on_output(r, *added.rejection, Clock::now());
    pending_.push_back(std::move(*added.rejection));
    return -1;
  }
  if (metrics_) metrics_->on_admitted(r, added.seq_id, static_cast<int32_t>(prompt), Clock::now());
  replica.unscheduled.emplace(added.seq_id, id);
  placement_.emplace(std::move(id), Placement{r, tokens});
  replica.outstanding_tokens += tokens;
  ++replica.live;
  return r;
}

void EngineCore::retire(const RequestOutput& out) {
  if (!out.finished) return;
  auto it = placement_.find(out.request_id);
  if (it == placement_.end()) return;
  Replica& r = replicas_[it->second.replica];
  r.unscheduled.erase(out.seq_id);
  r.outstanding_tokens -= it->second.tokens;
  --r.live;
  placement_.erase(it);
}

bool EngineCore::cancel(std::string_view request_id) {
  auto it = placement_.find(std::string(request_id));
  if (it == placement_.end()) return false;
  const int r = it->second.replica;
  auto out = replicas_[r].scheduler->cancel(request_id);
  if (!out) return false;
  if (metrics_) metrics_->on_output(r, *out, Clock::now());
  retire(*out);
  pending_.push_back(std::move(*out));
  return true;
}

void EngineCore::cancel_all() {
  std::vector<std::string> ids;
  ids.reserve(placement_.size());
  for (const auto& [id, _] : placement_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (const auto& id : ids) cancel(id);
}

void EngineCore::start_step(int r) {
  Replica& replica = replicas_[r];
  if (replica.in_flight) return;
  messages::StepPlan plan = replica.scheduler->schedule();
  if (plan.seqs.empty() && plan.released.empty()) return;
  transport_.send_plan(r, plan);
  if (!plan.seqs.empty()) {
    const auto now = Clock::now();
    replica.in_flight = InFlight{plan.step_id, now};
    ++replica.steps;
    if (metrics_) metrics_->on_step_sent(r, plan, now);
    for (std::size_t i = 0; i < plan.seqs.size() && !replica.unscheduled.empty(); ++i) {
      auto it = replica.unscheduled.find(plan.seqs[i].seq_id);
      if (it == replica.unscheduled.end()) continue;
      started_.emplace_back(std::move(it->second), now);
      replica.unscheduled.erase(it);
    }
  }
}

void EngineCore::apply(ReplicaEvent event, std::vector<RequestOutput>& outputs) {
  require(event.replica >= 0 && event.replica < num_replicas(), "engine: event from replica {}",
          event.replica);
  Replica& replica = replicas_[event.replica];
  // What a failed replica's ranks still send (a result they had under way, an error) is moot.
  if (replica.failed || !failure_.empty()) return;
  if (auto* err = std::get_if<messages::WorkerError>(&event.payload)) {
    fail_replica(event.replica, fmt::format("{}: world rank {} failed: {}",
                                            transport_.describe(event.replica), event.world_rank,
                                            err->message));
    return;
  }
  auto& result = std::get<messages::StepResult>(event.payload);
  if (!replica.in_flight || replica.in_flight->step_id != result.step_id) {
    fail_replica(event.replica,
                 fmt::format("{} returned a result for step {} but {}",
                             transport_.describe(event.replica), result.step_id,
                             replica.in_flight
                                 ? fmt::format("step {} is in flight", replica.in_flight->step_id)
                                 : std::string("no step is in flight")));
    return;
  }
  replica.in_flight.reset();
  replica.tokens_sampled += static_cast<int64_t>(result.tokens.size());
  const auto now = Clock::now();
  if (metrics_) metrics_->on_step_done(event.replica, now);
  std::vector<RequestOutput> produced;
  try {
    produced = replica.scheduler->on_step_result(result);
  } catch (const Error& e) {
    // A result the scheduler cannot apply (wrong sequences, counts): that replica is broken.
    fail_replica(event.replica, fmt::format("{} returned an invalid result for step {}: {}",
                                            transport_.describe(event.replica), result.step_id,
                                            e.what()));
    return;
  }
  for (auto& out : produced) {
    if (metrics_) metrics_->on_output(event.replica, out, now);
    retire(out);
    outputs.push_back(std::move(out));
  }
  start_step(event.replica);  // keep this replica busy while the others compute
}

void EngineCore::end_with_failure(int r, const coordinator::Request& req, const std::string& detail) {
  RequestOutput out;
  out.request_id = req.request_id;
  out.seq_id = req.seq_id;
  out.finished = true;
  out.finish_reason = coordinator::FinishReason::kUnavailable;  // the service failed, not the request
  out.finish_detail = detail;
  out.num_prompt_tokens = req.prompt_len;
  out.num_output_tokens = req.num_output_tokens();
  out.num_cached_tokens = req.num_cached_prompt_tokens;
  if (metrics_) metrics_->on_output(r, out, Clock::now());
  pending_.push_back(std::move(out));
}

void EngineCore::fail_replica(int r, const std::string& cause) {
  Replica& dead = replicas_[r];
  if (dead.failed) return;
  dead.failed = true;
  dead.in_flight.reset();
  const bool abort = options_.on_replica_failure == FailurePolicy::kAbort;
  const int survivors = num_live_replicas();
  spdlog::error("{}; {}", cause,
                abort ? std::string("runtime.on_replica_failure = \"abort\": ending every request")
                : survivors == 0
                    ? std::string("no replica is left: ending its requests")
                    : fmt::format("moving its {} live request(s) to the {} other replica(s)",
                                  dead.live, survivors));
  // Logged first: without mpirun's recovery options, killing the ranks ends the job at once.
  transport_.on_replica_failed(r, cause);
  if (metrics_) metrics_->on_replica_failed(r);
  if (abort || survivors == 0) {
    failure_ = abort ? fmt::format("{} (runtime.on_replica_failure = \"abort\")", cause)
                     : fmt::format("{}; no replica is left", cause);
    // Every replica's requests end; the healthy replicas' steps in flight are not awaited.
    for (int i = 0; i < num_replicas(); ++i) {
      Replica& x = replicas_[i];
      x.in_flight.reset();
      for (auto& req : x.scheduler->take_all()) {
        placement_.erase(req->request_id);
        end_with_failure(i, *req, failure_);
      }
      x.unscheduled.clear();
      x.live = 0;
      x.outstanding_tokens = 0;
    }
    return;
  }
  for (auto& req : dead.scheduler->take_all()) {
    const std::string id = req->request_id;
    const uint64_t old_seq = req->seq_id;
    auto placed = placement_.find(id);
    const int64_t tokens = placed == placement_.end() ? 0 : placed->second.tokens;
    const bool unstarted = dead.unscheduled.erase(old_seq) > 0;
    const int to = choose_replica();
    Replica& target = replicas_[to];
    auto added = target.scheduler->adopt(std::move(req));
    if (added.rejection) {
      if (placed != placement_.end()) placement_.erase(placed);
      added.rejection->seq_id = old_seq;  // the metrics know it by its seq id on replica r
      // It was admitted and ran; only the failure keeps it from finishing.
      added.rejection->finish_reason = coordinator::FinishReason::kUnavailable;
      added.rejection->finish_detail =
          fmt::format("{}; replica {} cannot continue it: {}", cause, to, added.rejection->finish_detail);
      if (metrics_) metrics_->on_output(r, *added.rejection, Clock::now());
      pending_.push_back(std::move(*added.rejection));
      continue;
    }
    if (placed != placement_.end()) placed->second.replica = to;
    if (unstarted) target.unscheduled.emplace(added.seq_id, id);
    target.outstanding_tokens += tokens;
    ++target.live;
    ++requeued_;
    if (metrics_) metrics_->on_requeued(r, old_seq, to, added.seq_id);
  }
  dead.unscheduled.clear();
  dead.live = 0;
  dead.outstanding_tokens = 0;
}

void EngineCore::check_deadlines() {
  const auto now = std::chrono::steady_clock::now();
  for (int r = 0; r < num_replicas(); ++r) {
    const auto& f = replicas_[r].in_flight;
    if (replicas_[r].failed || !failure_.empty()) continue;
    if (f && now - f->sent > options_.step_timeout) {
      const double s = std::chrono::duration<double>(now - f->sent).count();
      fail_replica(r, fmt::format("{} sent no result for step {} within {:.1f} s "
                                  "(runtime.step_timeout_s = {:g}): a rank died or hangs",
                                  transport_.describe(r), f->step_id, s,
                                  std::chrono::duration<double>(options_.step_timeout).count()));
    }
  }
}

std::vector<RequestOutput> EngineCore::poll(std::chrono::milliseconds wait) {
  std::vector<RequestOutput> outputs = std::move(pending_);
  pending_.clear();
  started_.clear();
  if (failure_.empty())
    for (int r = 0; r < num_replicas(); ++r)
      if (!replicas_[r].failed) start_step(r);
  if (!outputs.empty() || !steps_in_flight()) wait = std::chrono::milliseconds(0);
  // Then whatever else has arrived, but at most one event per replica, so that a caller's
  // signals, submissions and cancellations are seen between rounds.
  auto event = transport_.poll(wait);
  for (int handled = 0; event; ) {
    apply(std::move(*event), outputs);
    if (++handled == num_replicas()) break;
    event = transport_.poll(std::chrono::milliseconds(0));
  }
  check_deadlines();
  // A failure's requeued requests start on their new replica in the same round.
  if (failure_.empty())
    for (int r = 0; r < num_replicas(); ++r)
      if (!replicas_[r].failed) start_step(r);
  // Cancellations applied while results were handled are outputs too.
  for (auto& o : pending_) outputs.push_back(std::move(o));
  pending_.clear();
  if (metrics_)
    for (int r = 0; r < num_replicas(); ++r)
      metrics_->on_replica_state(r, replicas_[r].scheduler->stats());
  return outputs;
}

bool EngineCore::has_unfinished() const {
  if (!pending_.empty() || !placement_.empty()) return true;
  return steps_in_flight();
}

bool EngineCore::steps_in_flight() const {
  for (const auto& r : replicas_)
    if (r.in_flight && !r.failed) return true;
  return false;
}

int EngineCore::replica_of(std::string_view request_id) const {
  auto it = placement_.find(std::string(request_id));
  return it == placement_.end() ? -1 : it->second.replica;
}

ReplicaStats EngineCore::stats(int replica) const {
  const Replica& r = replicas_.at(replica);
  ReplicaStats s;
  s.live_requests = r.live;
  s.outstanding_tokens = r.outstanding_tokens;
  s.steps = r.steps;
  s.tokens_sampled = r.tokens_sampled;
  s.failed = r.failed;
  s.scheduler = r.scheduler->stats();
  return s;
}

}  // namespace shardserve::runtime
