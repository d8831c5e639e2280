#pragma once
// The roofline of one tensor-parallel rank: a forward pass takes at least the time to stream
// its bytes from HBM and at least the time to do its FLOPs, and a well-overlapped kernel
// takes about the larger of the two. Every rank of a TP group does the same share, so the
// rank's time is the step's time (the all-reduces between ranks are costed separately, in
// allreduce.h).
#include <cstdint>
#include <optional>

#include "model/memory_plan.h"
#include "model/model_config.h"
#include "tools/plan/gpu_spec.h"

namespace shardserve::planner {

// What one forward pass costs a rank, independent of batch and context.
struct RankCost {
  // Weights every pass reads in full: the layers' linear shards, the norms and the LM head
  // (the embedding table when tied). An untied embedding is not counted: a lookup reads only
  // the batch's rows.
  double weight_bytes_read = 0;
  double layer_linear_params = 0;  // matmul parameters per token in the decoder layers
  double lm_head_params = 0;       // matmul parameters per token that gets logits
  double kv_bytes_per_token = 0;
  // FLOPs of one query token against one cached position: QK^T and PV, each
  // 2 * head_dim per head, over the rank's query heads and every layer:
  // 4 * layers * q_heads_per_rank * head_dim.
  double attention_flops_per_position = 0;
};

RankCost rank_cost(const model::ModelConfig& config, int64_t tp, const model::RankWeights& weights,
                   const model::KvLayout& kv);

struct StepEstimate {
  double bytes = 0;
  double flops = 0;
  double memory_s = 0;   // bytes / bandwidth
  double compute_s = 0;  // flops / FLOP rate

  double seconds() const { return memory_s > compute_s ? memory_s : compute_s; }
  bool compute_bound() const { return compute_s >= memory_s; }
  double intensity() const { return flops / bytes; }  // FLOP per byte
};

// One decode step of `batch` sequences that each have `context` tokens in the KV cache:
//   bytes = weight_bytes_read + batch * context * kv_bytes_per_token
//   flops = batch * (2 * (layer_linear_params + lm_head_params)
//                    + context * attention_flops_per_position)
// Activations and the new token's own KV write (1/context of the read) are left out.
StepEstimate decode_step(const RankCost& cost, const GpuSpec& gpu, int64_t batch, int64_t context);

// Prefill of one prompt of `prompt_tokens` tokens (the time to first token):
//   bytes = weight_bytes_read + prompt_tokens * kv_bytes_per_token (the KV written once)
//   flops = 2 * layer_linear_params * P + 2 * lm_head_params   (logits for the last token)
//         + attention_flops_per_position * P (P + 1) / 2        (causal: token i sees i positions)
StepEstimate prefill(const RankCost& cost, const GpuSpec& gpu, int64_t prompt_tokens);

// FLOP per byte at which the GPU's two ceilings meet: flops_per_s / bandwidth.
double ridge_intensity(const GpuSpec& gpu);

// The smallest batch at which a decode step at `context` is compute-bound
// (compute_s >= memory_s), or nullopt when it never is: each added sequence brings
// 2 * params + context * attention FLOPs but also context * kv_bytes_per_token bytes, and
// when those bytes take longer than those FLOPs the step stays memory-bound at every batch.
// Closed form: batch >= (W / bw) / ((2 * params + context * a) / rate - context * kv / bw).
std::optional<int64_t> compute_bound_batch(const RankCost& cost, const GpuSpec& gpu,
                                           int64_t context);

}  // namespace shardserve::planner
