#include "coordinator/runtime/scheduler_settings.h"

#include <algorithm>
#include <cstdint>

#include "common/error.h"

namespace shardserve::runtime {

coordinator::SpeculativeConfig speculative_config_for(const config::SpeculativeSettings& s) {
  coordinator::SpeculativeConfig out;
  // The config file says "draft"; the scheduler's own spelling is "draft_model".
  out.method = s.method == "draft" ? coordinator::SpeculativeMethod::kDraftModel
                                   : coordinator::parse_speculative_method(s.method);
  if (out.method == coordinator::SpeculativeMethod::kNone) return out;
  out.num_speculative_tokens = s.num_speculative_tokens;
  out.ngram_min = s.ngram_min;
  out.ngram_max = s.ngram_max;
  out.adaptive = s.adaptive;
  out.draft_cost = s.draft_cost;
  return out;
}

std::vector<coordinator::SchedulerConfig> scheduler_configs_for(
    const config::ServiceConfig& cfg, const model::ModelConfig& model,
    const HandshakeResult& handshake) {
  std::vector<coordinator::SchedulerConfig> out;
  for (const auto& c : handshake.replicas) {
    coordinator::SchedulerConfig sc;
    sc.block_size = cfg.kv.block_size;
    sc.num_blocks = static_cast<int32_t>(std::min<int64_t>(c.num_kv_blocks, INT32_MAX));
    sc.max_num_batched_tokens = cfg.scheduler.max_num_batched_tokens;
    sc.max_num_seqs = cfg.scheduler.max_num_seqs;
    sc.max_model_len = config::effective_max_model_len(cfg, model);
    sc.watermark = cfg.scheduler.watermark;
    sc.enable_prefix_caching = cfg.scheduler.enable_prefix_caching;
    sc.enable_chunked_prefill = cfg.scheduler.enable_chunked_prefill;
    sc.eos_token_ids = model.eos_token_ids;
    sc.speculative = speculative_config_for(cfg.speculative);
    try {
      coordinator::validate_scheduler_config(sc);
    } catch (const Error& e) {
      fail("replica {} (KV pool of {} blocks): {}", c.replica, c.num_kv_blocks, e.what());
    }
    out.push_back(std::move(sc));
  }
  return out;
}

}  // namespace shardserve::runtime
