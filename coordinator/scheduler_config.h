#pragma once
// The scheduler's settings for one replica, checked once by validate_scheduler_config so that
// the scheduler itself may assume them. Every limit that could make a request wait forever is
// checked here rather than discovered at run time.
#include <cstdint>
#include <string_view>
#include <vector>

namespace shardserve::coordinator {

// What happens to a victim when the KV pool runs out.
enum class PreemptionMode {
  kRecompute,  // free its blocks; it is requeued and its KV recomputed (prefix cache permitting)
  kSwap,       // copy its blocks to host memory: refused by validation (see scheduler_config.cc)
};

struct SchedulerConfig {
  int32_t block_size = 16;                // tokens per KV block
  int32_t num_blocks = 0;                 // physical blocks in the pool (the memory planner's figure)
  int32_t max_num_batched_tokens = 2048;  // token budget of one step (decodes + prefill chunks)
  int32_t max_num_seqs = 256;             // running sequences at most
  int32_t max_model_len = 0;              // context length: prompt + output tokens at most
  double watermark = 0.01;                // fraction of the pool admission keeps free
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  PreemptionMode preemption_mode = PreemptionMode::kRecompute;
  std::vector<int32_t> eos_token_ids;     // every id that ends generation (ModelConfig's list)
};

// Throws shardserve::Error naming the offending setting and value.
void validate_scheduler_config(const SchedulerConfig& config);

// "recompute" or "swap" (command-line and config-file spelling).
PreemptionMode parse_preemption_mode(std::string_view name);
std::string_view to_string(PreemptionMode mode);

// Blocks that admission leaves free: floor(watermark * num_blocks).
int32_t watermark_blocks(const SchedulerConfig& config);

}  // namespace shardserve::coordinator
