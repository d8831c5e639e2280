#include "coordinator/scheduler.h"

#include <algorithm>
#include <unordered_set>

#include "common/error.h"
#include "coordinator/decode_policy.h"
#include "coordinator/ngram_proposer.h"
#include "coordinator/prefill_policy.h"
#include "coordinator/preemption_policy.h"
#include "coordinator/stop_checker.h"

namespace shardserve::coordinator {

Scheduler::Scheduler(SchedulerConfig config)
    : config_((validate_scheduler_config(config), std::move(config))),
      watermark_blocks_(watermark_blocks(config_)),
      kv_(config_.num_blocks, config_.block_size, config_.enable_prefix_caching) {}

std::optional<std::string> Scheduler::rejection_reason(const RequestSpec& spec) const {
  if (spec.request_id.empty()) return "empty request id";
  if (by_request_id_.count(spec.request_id))
    return fmt::format("request id '{}' is already live", spec.request_id);
  if (spec.prompt_token_ids.empty()) return "empty prompt";
  const auto prompt_len = static_cast<int64_t>(spec.prompt_token_ids.size());
  if (prompt_len >= config_.max_model_len)
    return fmt::format("prompt of {} tokens leaves no room to generate within the context "
                       "length of {} tokens",
                       prompt_len, config_.max_model_len);
  for (size_t i = 0; i < spec.prompt_token_ids.size(); ++i)
    if (spec.prompt_token_ids[i] < 0)
      return fmt::format("prompt token {} has negative id {}", i, spec.prompt_token_ids[i]);
  if (spec.max_tokens && *spec.max_tokens < 1)
    return fmt::format("max_tokens={} must be at least 1", *spec.max_tokens);
  for (size_t i = 0; i < spec.stop_strings.size(); ++i)
    if (spec.stop_strings[i].empty()) return fmt::format("stop string {} is empty", i);
  if (!spec.stop_strings.empty() && !spec.text_stream)
    return "stop strings given without a detokenizer (text_stream)";
  return std::nullopt;
}

AddResult Scheduler::add_request(RequestSpec spec) {
  AddResult result;
  result.seq_id = next_seq_id_++;
  if (auto reason = rejection_reason(spec)) {
    RequestOutput out;
    out.request_id = spec.request_id;
    out.seq_id = result.seq_id;
    out.finished = true;
    out.finish_reason = FinishReason::kRejected;
    out.finish_detail = std::move(*reason);
    out.num_prompt_tokens = static_cast<int32_t>(spec.prompt_token_ids.size());
    ++counters_.requests_rejected;
    result.rejection = std::move(out);
    return result;
  }
  const SpeculativeConfig& sp = config_.speculative;
  const int32_t max_num_draft =
      sp.method == SpeculativeMethod::kNone
          ? 0
          : std::clamp(spec.num_speculative_tokens.value_or(sp.num_speculative_tokens), 0,
                       sp.num_speculative_tokens);
  auto request = std::make_unique<Request>(result.seq_id, std::move(spec), config_.block_size,
                                           config_.enable_prefix_caching);
  Request* r = request.get();
  r->max_num_draft = max_num_draft;
  by_request_id_.emplace(r->request_id, r->seq_id);
  requests_.emplace(r->seq_id, std::move(request));
  waiting_.push(r);
  return result;
}

messages::StepPlan Scheduler::schedule() {
  require(!in_flight_, "scheduler: schedule() called while step {} awaits its result",
          in_flight_ ? in_flight_->step_id : 0);
  std::vector<Scheduled> scheduled;
  int32_t budget = config_.max_num_batched_tokens;
  bool preempted = false;
  schedule_running(scheduled, budget, preempted);
  // After a preemption the pool is short: admitting now would only preempt again next step.
  if (!preempted) admit_waiting(scheduled, budget);
  return build_plan(scheduled);
}

void Scheduler::schedule_running(std::vector<Scheduled>& scheduled, int32_t& budget,
                                 bool& preempted) {
  const std::vector<Request*> order = order_running(running_);
  // Decodes still to be served after the current one: draft tokens come only from the budget
  // they leave, so that every running decode still gets its step.
  int32_t decodes_after = 0;
  for (const Request* r : order) decodes_after += r->is_decoding();
  for (Request* r : order) {
    const bool decoding = r->is_decoding();
    if (decoding) --decodes_after;
    if (r->status != RequestStatus::kRunning) continue;  // a victim earlier in this loop
    if (budget == 0) break;
    const int32_t n = decoding ? 1
                               : prefill_chunk(r->num_uncomputed_tokens(), budget,
                                               config_.enable_chunked_prefill);
    if (n == 0) continue;
    Scheduled s{r, n};
    if (decoding && r->max_num_draft > 0)
      plan_drafts(*r, std::max(0, budget - n - decodes_after), s);
    // Lookahead slots for the drafts, from free blocks only: speculation never preempts. With
    // too few, as many drafts as the sequence's blocks and the free ones have slots for.
    if (s.num_draft > 0 &&
        !kv_.allocate_slots(r->seq_id, r->num_computed_tokens + n, s.num_draft)) {
      const int32_t held = static_cast<int32_t>(kv_.block_table(r->seq_id).size());
      const int32_t slots = (held + kv_.num_free_blocks()) * config_.block_size -
                            (r->num_computed_tokens + n);
      s.num_draft = std::max(0, std::min(s.num_draft - 1, slots));
      s.drafts.resize(s.drafts.empty() ? 0 : s.num_draft);
      if (s.num_draft > 0 &&
          !kv_.allocate_slots(r->seq_id, r->num_computed_tokens + n, s.num_draft)) {
        s.num_draft = 0;
        s.drafts.clear();
      }
    }
    bool self_preempted = false;
    while (!kv_.allocate_slots(r->seq_id, r->num_computed_tokens + n, /*num_lookahead=*/0)) {
      Request* victim = choose_victim(running_);
      preempt(victim, scheduled, budget);
      preempted = true;
      if (victim == r) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) continue;
    budget -= s.budget();
    scheduled.push_back(std::move(s));
  }
}

void Scheduler::plan_drafts(const Request& r, int32_t cap, Scheduled& s) const {
  const SpeculativeConfig& sp = config_.speculative;
  int32_t k = r.max_num_draft;
  if (sp.adaptive)
    k = best_num_draft(r.acceptance.rate(sp.initial_acceptance), k, sp.draft_cost);
  // A verify yields up to k + 1 tokens: never more than the request may still produce.
  k = std::min(k, cap);
  k = std::min(k, config_.max_model_len - r.num_tokens() - 1);
  if (r.max_tokens) k = std::min(k, *r.max_tokens - r.num_output_tokens() - 1);
  if (k <= 0) return;
  if (sp.method == SpeculativeMethod::kNgram) {
    s.drafts = propose_ngram(r.tokens, k, sp.ngram_min, sp.ngram_max);
    s.num_draft = static_cast<int32_t>(s.drafts.size());
  } else {
    s.num_draft = k;
  }
}

void Scheduler::admit_waiting(std::vector<Scheduled>& scheduled, int32_t& budget) {
  const int32_t bs = config_.block_size;
  while (Request* r = waiting_.front()) {
    if (static_cast<int32_t>(running_.size()) >= config_.max_num_seqs || budget == 0) break;
    const int32_t hit_blocks =
        kv_.count_cached_prefix(r->block_hashes, max_cached_blocks(r->num_tokens(), bs));
    const int32_t computed = hit_blocks * bs;
    const int32_t n =
        prefill_chunk(r->num_tokens() - computed, budget, config_.enable_chunked_prefill);
    if (n == 0) break;  // strict queue order: nobody overtakes the head
    // The watermark keeps a little room for the running decodes; a request alone needs none,
    // and must not be kept out by it (it may need the whole pool).
    const int32_t keep_free = running_.empty() ? 0 : watermark_blocks_;
    if (!kv_.admit(r->seq_id, r->block_hashes, hit_blocks, computed + n, /*num_lookahead=*/0,
                   keep_free))
      break;
    waiting_.pop_front();
    r->status = RequestStatus::kRunning;
    r->num_computed_tokens = computed;
    if (!r->ever_scheduled) {
      r->ever_scheduled = true;
      r->num_cached_prompt_tokens = computed;
    }
    counters_.prefix_cache_queried_tokens += r->num_tokens();
    counters_.prefix_cache_hit_tokens += computed;
    auto pos = std::upper_bound(running_.begin(), running_.end(), r,
                                [](const Request* a, const Request* b) { return a->key() < b->key(); });
    running_.insert(pos, r);
    scheduled.push_back({r, n});
    budget -= n;
  }
}

void Scheduler::preempt(Request* victim, std::vector<Scheduled>& scheduled, int32_t& budget) {
  // A victim already planned in this step gives its tokens back: its blocks are gone.
  auto it = std::find_if(scheduled.begin(), scheduled.end(),
                         [&](const Scheduled& s) { return s.request == victim; });
  if (it != scheduled.end()) {
    budget += it->budget();
    scheduled.erase(it);
  }
  preempt_by_recompute(*victim, kv_);
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  waiting_.push(victim);
  ++counters_.preemptions_total;
}

messages::StepPlan Scheduler::build_plan(const std::vector<Scheduled>& scheduled) {
  messages::StepPlan plan;
  for (const Scheduled& s : scheduled) {
    Request& r = *s.request;
    messages::SequenceWork w;
    w.seq_id = r.seq_id;
    w.start_pos = r.num_computed_tokens;
    w.num_tokens = s.num_tokens + s.num_draft;
    w.num_logits = (w.start_pos + s.num_tokens == r.num_tokens()) ? 1 + s.num_draft : 0;
    w.prompt_len = r.prompt_len;
    w.token_offset = plan.total_tokens();
    plan.token_ids.insert(plan.token_ids.end(), r.tokens.begin() + w.start_pos,
                          r.tokens.begin() + w.start_pos + s.num_tokens);
    if (s.num_draft > 0) {
      w.num_draft = s.num_draft;
      if (config_.speculative.method == SpeculativeMethod::kNgram) {
        w.draft_source = messages::DraftSource::kPlan;
        plan.token_ids.insert(plan.token_ids.end(), s.drafts.begin(), s.drafts.end());
      } else {
        w.draft_source = messages::DraftSource::kDraftModel;
        plan.token_ids.insert(plan.token_ids.end(), s.num_draft, -1);  // the worker drafts
      }
    }
    const auto& table = kv_.block_table(r.seq_id);
    w.block_offset = static_cast<int32_t>(plan.block_ids.size());
    w.num_blocks = kv_.blocks_for_tokens(w.start_pos + w.num_tokens);
    plan.block_ids.insert(plan.block_ids.end(), table.begin(), table.begin() + w.num_blocks);
    // A first admission past a prefix-cache hit: the workers never saw the cached prompt
    // tokens, which the repetition penalty reads. Send them once.
    if (w.start_pos > r.num_fed_tokens && r.sampling.repetition_penalty != 1.0f) {
      w.history_offset = static_cast<int32_t>(plan.history_ids.size());
      w.history_len = w.start_pos - r.num_fed_tokens;
      plan.history_ids.insert(plan.history_ids.end(), r.tokens.begin() + r.num_fed_tokens,
                              r.tokens.begin() + w.start_pos);
    }
    r.num_fed_tokens = std::max(r.num_fed_tokens, w.start_pos + s.num_tokens);
    if (w.num_logits > 0) {
      w.sampling_index = static_cast<int32_t>(plan.sampling.size());
      plan.sampling.push_back(r.sampling);
    }
    plan.seqs.push_back(w);
  }
  plan.released = std::move(released_);
  released_.clear();
  if (!plan.seqs.empty()) {
    plan.step_id = next_step_id_++;
    in_flight_ = InFlight{plan.step_id, plan.seqs};
    ++counters_.steps_total;
  }
  return plan;
}

std::vector<RequestOutput> Scheduler::on_step_result(const messages::StepResult& result) {
  require(in_flight_.has_value(), "scheduler: step result {} but no step is in flight",
          result.step_id);
  require(result.step_id == in_flight_->step_id,
          "scheduler: step result for step {} but step {} is in flight", result.step_id,
          in_flight_->step_id);
  require(result.sample_offsets.size() == result.seq_ids.size() + 1,
          "scheduler: step {} result has {} sample offsets for {} sequences (want one more)",
          result.step_id, result.sample_offsets.size(), result.seq_ids.size());
  require(result.sample_offsets.front() == 0 &&
              result.sample_offsets.back() == static_cast<int32_t>(result.tokens.size()) &&
              std::is_sorted(result.sample_offsets.begin(), result.sample_offsets.end()),
          "scheduler: step {} result's sample offsets do not partition its {} tokens",
          result.step_id, result.tokens.size());
  InFlight flight = std::move(*in_flight_);
  in_flight_.reset();

  std::unordered_map<uint64_t, size_t> sample_of;
  for (size_t i = 0; i < result.seq_ids.size(); ++i) sample_of.emplace(result.seq_ids[i], i);
  std::unordered_set<uint64_t> expected;
  for (const auto& w : flight.seqs)
    if (w.num_logits > 0) expected.insert(w.seq_id);
  for (uint64_t id : result.seq_ids)
    require(expected.count(id) != 0,
            "scheduler: step {} result samples sequence {} that had no logits in the plan",
            result.step_id, id);

  std::vector<RequestOutput> outputs;
  for (const auto& w : flight.seqs) {
    auto it = requests_.find(w.seq_id);
    if (it == requests_.end()) continue;  // cancelled while the step ran; its blocks are free
    Request& r = *it->second;
    if (w.num_draft == 0) {
      r.num_computed_tokens += w.num_tokens;
      kv_.cache_full_blocks(r.seq_id, r.block_hashes, r.num_computed_tokens);
    }
    if (w.num_logits == 0) continue;
    auto s = sample_of.find(w.seq_id);
    require(s != sample_of.end(), "scheduler: step {} result lacks the token of sequence {}",
            result.step_id, w.seq_id);
    const int32_t begin = result.sample_offsets[s->second];
    const int32_t count = result.sample_offsets[s->second + 1] - begin;
    const std::span<const messages::SampledToken> samples(result.tokens.data() + begin, count);
    if (w.num_draft == 0) {
      require(count == w.num_logits,
              "scheduler: step {} result has {} tokens for sequence {}, the plan asked for {}",
              result.step_id, count, w.seq_id, w.num_logits);
      outputs.push_back(process_samples(r, samples.first(1)));
      continue;
    }
    // Speculative verify: the accepted drafts, then the target's own token.
    require(count >= 1 && count <= w.num_draft + 1,
            "scheduler: step {} result has {} tokens for sequence {}, which verified {} drafts "
            "(want 1 to {})",
            result.step_id, count, w.seq_id, w.num_draft, w.num_draft + 1);
    const int32_t accepted = count - 1;
    ++counters_.spec_decode_drafts_total;
    counters_.spec_decode_draft_tokens_total += w.num_draft;
    counters_.spec_decode_accepted_tokens_total += accepted;
    r.acceptance.update(accepted, w.num_draft, config_.speculative.acceptance_decay);
    // KV is valid for the fed tokens and the accepted drafts; the workers' sampler counted the
    // accepted drafts too.
    r.num_computed_tokens += w.num_tokens - w.num_draft + accepted;
    r.num_fed_tokens = std::max(r.num_fed_tokens, r.num_computed_tokens);
    const uint64_t seq = r.seq_id;
    RequestOutput out = process_samples(r, samples);
    // Rollback: blocks that held only rejected drafts go back to the pool (a finished request
    // has freed all of its blocks already).
    if (!out.finished)
      counters_.spec_decode_rollback_blocks_total += kv_.trim(seq, r.num_tokens());
    outputs.push_back(std::move(out));
  }
  return outputs;
}

namespace {

// Feeds detokenized text through the stop-string matcher; true when a stop string matched.
bool feed_text(Request& r, const std::string& piece, RequestOutput& out) {
  if (r.stop_matcher.empty()) {
    out.new_text += piece;
    return false;
  }
  auto res = r.stop_matcher.push(piece);
  out.new_text += res.emit;
  if (!res.matched) return false;
  out.stop_string = r.stop_matcher.stop_strings()[*res.matched];
  return true;
}

// End of the text stream: the detokenizer's and the matcher's held-back text. True when that
// tail completed a stop string after all.
bool end_text(Request& r, RequestOutput& out) {
  if (r.text_stream && feed_text(r, r.text_stream->flush(), out)) return true;
  if (!r.stop_matcher.empty()) out.new_text += r.stop_matcher.flush();
  return false;
}

}  // namespace

RequestOutput Scheduler::process_samples(Request& r,
                                         std::span<const messages::SampledToken> samples) {
  RequestOutput out;
  for (const messages::SampledToken& sample : samples) {
    const int32_t token = sample.token_id;
    r.append_token(token);
    // A speculative verify computed KV past the tokens known before it: blocks that the
    // accepted tokens complete are registered now (no-op for plain steps).
    kv_.cache_full_blocks(r.seq_id, r.block_hashes, r.num_computed_tokens);
    out.new_tokens.push_back(sample);
    auto finish_now = [&](FinishReason reason, const char* detail) {
      RequestOutput full = base_output(r);
      full.new_tokens = std::move(out.new_tokens);
      full.new_text = std::move(out.new_text);
      full.stop_token_id = out.stop_token_id;
      full.stop_string = std::move(out.stop_string);
      return finish(r, reason, detail, std::move(full));
    };

    // Order: stop token, stop string, length. Whatever follows a token that ends the request
    // (rest of an accepted draft run) is dropped.
    const TokenStop ts = check_stop_token(r, token, config_.eos_token_ids);
    if (ts != TokenStop::kNone) {
      // The stop token's own text is not emitted; text held back before it is.
      const bool by_string = end_text(r, out);
      out.stop_token_id = by_string ? std::nullopt : std::optional<int32_t>(token);
      return finish_now(FinishReason::kStop,
                        by_string ? "stop_string" : (ts == TokenStop::kEos ? "eos" : "stop_token"));
    }
    const std::string piece = r.text_stream ? r.text_stream->push(token) : std::string();
    if (feed_text(r, piece, out)) return finish_now(FinishReason::kStop, "stop_string");
    if (reached_length(r, config_.max_model_len)) {
      if (end_text(r, out)) return finish_now(FinishReason::kStop, "stop_string");
      const bool by_max_tokens = r.max_tokens && r.num_output_tokens() >= *r.max_tokens;
      return finish_now(FinishReason::kLength, by_max_tokens ? "max_tokens" : "context_length");
    }
  }
  RequestOutput full = base_output(r);
  full.new_tokens = std::move(out.new_tokens);
  full.new_text = std::move(out.new_text);
  return full;
}

RequestOutput Scheduler::finish(Request& r, FinishReason reason, std::string detail,
                                RequestOutput out) {
  out.finished = true;
  out.finish_reason = reason;
  out.finish_detail = std::move(detail);
  if (reason == FinishReason::kCancelled)
    ++counters_.requests_cancelled;
  else
    ++counters_.requests_finished;
  erase_request(r);
  return out;
}

void Scheduler::erase_request(Request& r) {
  kv_.free(r.seq_id);
  // Only sequences a worker has seen hold worker state (sampler streams, penalty counts).
  if (r.ever_scheduled) released_.push_back(r.seq_id);
  if (r.status == RequestStatus::kRunning)
    running_.erase(std::find(running_.begin(), running_.end(), &r));
  else
    waiting_.remove(&r);
  r.status = RequestStatus::kFinished;
  by_request_id_.erase(r.request_id);
  requests_.erase(r.seq_id);  // destroys r
}

std::vector<std::unique_ptr<Request>> Scheduler::take_all() {
  std::vector<Request*> order(running_.begin(), running_.end());
  for (const auto& [key, r] : waiting_) order.push_back(r);
  std::sort(order.begin(), order.end(),
            [](const Request* a, const Request* b) { return a->key() < b->key(); });
  std::vector<std::unique_ptr<Request>> taken;
  taken.reserve(order.size());
  for (Request* r : order) {
    auto it = requests_.find(r->seq_id);
    kv_.free(r->seq_id);
    if (r->status == RequestStatus::kRunning)
      running_.erase(std::find(running_.begin(), running_.end(), r));
    else
      waiting_.remove(r);
    r->status = RequestStatus::kWaiting;
    by_request_id_.erase(r->request_id);
    taken.push_back(std::move(it->second));
    requests_.erase(it);
  }
  in_flight_.reset();
  released_.clear();
  return taken;
}

AddResult Scheduler::adopt(std::unique_ptr<Request> request) {
  require(request != nullptr, "scheduler: adopt(nullptr)");
  require(request->block_size() == config_.block_size,
          "scheduler: adopting request '{}' hashed with block size {}; this replica's is {}",
          request->request_id, request->block_size(), config_.block_size);
  AddResult result;
  result.seq_id = next_seq_id_++;
  Request& r = *request;
  std::optional<std::string> reason;
  if (by_request_id_.count(r.request_id))
    reason = fmt::format("request id '{}' is already live", r.request_id);
  else if (r.num_tokens() >= config_.max_model_len)
    reason = fmt::format("its {} tokens leave no room to generate within the context length of {} "
                         "tokens", r.num_tokens(), config_.max_model_len);
  r.seq_id = result.seq_id;
  if (reason) {
    RequestOutput out = base_output(r);
    out.finished = true;
    out.finish_reason = FinishReason::kRejected;
    out.finish_detail = std::move(*reason);
    ++counters_.requests_rejected;
    result.rejection = std::move(out);
    return result;
  }
  // The workers of this replica have never seen it: everything is recomputed and re-fed.
  r.status = RequestStatus::kWaiting;
  r.num_computed_tokens = 0;
  r.num_fed_tokens = 0;
  const SpeculativeConfig& sp = config_.speculative;
  r.max_num_draft = sp.method == SpeculativeMethod::kNone
                        ? 0
                        : std::min(r.max_num_draft, sp.num_speculative_tokens);
  Request* p = request.get();
  by_request_id_.emplace(p->request_id, p->seq_id);
  requests_.emplace(p->seq_id, std::move(request));
  waiting_.push(p);
  return result;
}

std::optional<RequestOutput> Scheduler::cancel(std::string_view request_id) {
  auto it = by_request_id_.find(std::string(request_id));
  if (it == by_request_id_.end()) return std::nullopt;
  Request& r = *requests_.at(it->second);
  return finish(r, FinishReason::kCancelled, "cancelled", base_output(r));
}

RequestOutput Scheduler::base_output(const Request& r) const {
  RequestOutput out;
  out.request_id = r.request_id;
  out.seq_id = r.seq_id;
  out.num_prompt_tokens = r.prompt_len;
  out.num_output_tokens = r.num_output_tokens();
  out.num_cached_tokens = r.num_cached_prompt_tokens;
  return out;
}

const Request* Scheduler::find(uint64_t seq_id) const {
  auto it = requests_.find(seq_id);
  return it == requests_.end() ? nullptr : it->second.get();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s = counters_;
  s.num_running = static_cast<int32_t>(running_.size());
  s.num_waiting = static_cast<int32_t>(waiting_.size());
  s.num_preempted_waiting = 0;
  for (const auto& [key, r] : waiting_)
    if (r->num_preemptions > 0) ++s.num_preempted_waiting;
  s.kv_blocks_used = kv_.num_used_blocks();
  s.kv_blocks_total = kv_.num_total_blocks();
  s.kv_blocks_cached = kv_.pool().num_cached();
  s.prefix_cache_evictions = kv_.pool().num_evictions();
  return s;
}

}  // namespace shardserve::coordinator
