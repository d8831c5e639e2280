#include "coordinator/scheduler_config.h"

#include <cmath>

#include "common/error.h"

namespace shardserve::coordinator {

void validate_scheduler_config(const SchedulerConfig& c) {
  require(c.block_size >= 1 && c.block_size <= 1024,
          "scheduler: block_size={} must be in [1, 1024]", c.block_size);
  require(c.num_blocks >= 1, "scheduler: num_blocks={} must be at least 1", c.num_blocks);
  require(c.max_model_len >= 2,
          "scheduler: max_model_len={} must be at least 2 (one prompt token, one generated)",
          c.max_model_len);
  // A request alone on the replica must always fit, or recompute preemption could loop on it
  // forever: it would evict itself, be readmitted, and run out again at the same length.
  const int64_t pool_tokens = int64_t{c.num_blocks} * c.block_size;
  require(pool_tokens >= c.max_model_len,
          "scheduler: num_blocks={} x block_size={} holds {} tokens, fewer than max_model_len={}; "
          "a request at full context could never fit: lower max_model_len or enlarge the pool",
          c.num_blocks, c.block_size, pool_tokens, c.max_model_len);
  require(c.max_num_seqs >= 1, "scheduler: max_num_seqs={} must be at least 1", c.max_num_seqs);
  // Decodes are scheduled before any prefill; this makes every running sequence decode each step.
  require(c.max_num_batched_tokens >= c.max_num_seqs,
          "scheduler: max_num_batched_tokens={} must be at least max_num_seqs={} so that every "
          "running sequence can decode in every step",
          c.max_num_batched_tokens, c.max_num_seqs);
  require(c.enable_chunked_prefill || c.max_num_batched_tokens >= c.max_model_len,
          "scheduler: with enable_chunked_prefill=false, max_num_batched_tokens={} must be at least "
          "max_model_len={}: an unsplit prompt (or a preempted sequence's recompute) must fit one step",
          c.max_num_batched_tokens, c.max_model_len);
  require(std::isfinite(c.watermark) && c.watermark >= 0.0 && c.watermark < 1.0,
          "scheduler: watermark={} must be in [0, 1)", c.watermark);
  // Swapping needs a host block pool on every worker and swap-in/out lists in the step plan;
  // neither exists, so the option is refused rather than silently treated as recompute.
  require(c.preemption_mode == PreemptionMode::kRecompute,
          "scheduler: preemption_mode=swap is not implemented (the step plan carries no swap "
          "lists and workers keep no host KV pool); use preemption_mode=recompute");
  const SpeculativeConfig& sp = c.speculative;
  if (sp.method != SpeculativeMethod::kNone) {
    require(sp.num_speculative_tokens >= 1 && sp.num_speculative_tokens <= kMaxSpeculativeTokens,
            "scheduler: speculative.num_speculative_tokens={} must be in [1, {}] with method {}",
            sp.num_speculative_tokens, kMaxSpeculativeTokens, to_string(sp.method));
    require(sp.ngram_min >= 1 && sp.ngram_max >= sp.ngram_min && sp.ngram_max <= 64,
            "scheduler: speculative ngram_min={} / ngram_max={} must satisfy 1 <= min <= max <= 64",
            sp.ngram_min, sp.ngram_max);
    require(std::isfinite(sp.draft_cost) && sp.draft_cost >= 0.0,
            "scheduler: speculative.draft_cost={} must be >= 0", sp.draft_cost);
    require(std::isfinite(sp.initial_acceptance) && sp.initial_acceptance > 0.0 &&
                sp.initial_acceptance < 1.0,
            "scheduler: speculative.initial_acceptance={} must be in (0, 1)",
            sp.initial_acceptance);
    require(std::isfinite(sp.acceptance_decay) && sp.acceptance_decay >= 0.0 &&
                sp.acceptance_decay < 1.0,
            "scheduler: speculative.acceptance_decay={} must be in [0, 1)", sp.acceptance_decay);
  }
}

SpeculativeMethod parse_speculative_method(std::string_view name) {
  if (name == "none") return SpeculativeMethod::kNone;
  if (name == "ngram") return SpeculativeMethod::kNgram;
  if (name == "draft_model") return SpeculativeMethod::kDraftModel;
  fail("scheduler: speculative method '{}' is not one of none, ngram, draft_model", name);
}

std::string_view to_string(SpeculativeMethod method) {
  switch (method) {
    case SpeculativeMethod::kNone: return "none";
    case SpeculativeMethod::kNgram: return "ngram";
    case SpeculativeMethod::kDraftModel: return "draft_model";
  }
  return "?";
}

PreemptionMode parse_preemption_mode(std::string_view name) {
  if (name == "recompute") return PreemptionMode::kRecompute;
  if (name == "swap") return PreemptionMode::kSwap;
  fail("scheduler: preemption_mode='{}' is not one of recompute, swap", name);
}

std::string_view to_string(PreemptionMode mode) {
  return mode == PreemptionMode::kRecompute ? "recompute" : "swap";
}

int32_t watermark_blocks(const SchedulerConfig& c) {
  return static_cast<int32_t>(std::floor(c.watermark * c.num_blocks));
}

}  // namespace shardserve::coordinator
