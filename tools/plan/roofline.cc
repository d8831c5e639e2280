#include "tools/plan/roofline.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace shardserve::planner {

RankCost rank_cost(const model::ModelConfig& config, int64_t tp, const model::RankWeights& weights,
                   const model::KvLayout& kv) {
  const model::HeadLayout heads = model::shard_heads(config, tp);
  RankCost cost;
  const int64_t head_matrix = weights.tied_embeddings ? weights.embedding_bytes
                                                      : weights.lm_head_bytes;
  cost.weight_bytes_read = static_cast<double>(weights.layer_linear_bytes + weights.norm_bytes +
                                               head_matrix);
  cost.layer_linear_params = static_cast<double>(weights.layer_linear_params);
  cost.lm_head_params = static_cast<double>(weights.lm_head_params);
  cost.kv_bytes_per_token = static_cast<double>(model::kv_bytes_per_token(kv));
  cost.attention_flops_per_position =
      4.0 *
      static_cast<double>(config.num_hidden_layers * heads.q_heads_per_rank * config.head_dim);
  return cost;
}

namespace {

StepEstimate estimate(double bytes, double flops, const GpuSpec& gpu) {
  StepEstimate step;
  step.bytes = bytes;
  step.flops = flops;
  step.memory_s = bytes / gpu.bandwidth_bytes_per_s;
  step.compute_s = flops / gpu.flops_per_s;
  return step;
}

}  // namespace

StepEstimate decode_step(const RankCost& cost, const GpuSpec& gpu, int64_t batch, int64_t context) {
  require(batch >= 1, "decode batch must be at least 1, got {}", batch);
  require(context >= 0, "decode context must not be negative, got {}", context);
  const double b = static_cast<double>(batch);
  const double c = static_cast<double>(context);
  const double bytes = cost.weight_bytes_read + b * c * cost.kv_bytes_per_token;
  const double flops = b * (2.0 * (cost.layer_linear_params + cost.lm_head_params) +
                            c * cost.attention_flops_per_position);
  return estimate(bytes, flops, gpu);
}

StepEstimate prefill(const RankCost& cost, const GpuSpec& gpu, int64_t prompt_tokens) {
  require(prompt_tokens >= 1, "prompt length must be at least 1 token, got {}", prompt_tokens);
  const double p = static_cast<double>(prompt_tokens);
  const double bytes = cost.weight_bytes_read + p * cost.kv_bytes_per_token;
  const double flops = 2.0 * cost.layer_linear_params * p + 2.0 * cost.lm_head_params +
                       cost.attention_flops_per_position * p * (p + 1.0) / 2.0;
  return estimate(bytes, flops, gpu);
}

double ridge_intensity(const GpuSpec& gpu) { return gpu.flops_per_s / gpu.bandwidth_bytes_per_s; }

std::optional<int64_t> compute_bound_batch(const RankCost& cost, const GpuSpec& gpu,
                                           int64_t context) {
  require(context >= 0, "decode context must not be negative, got {}", context);
  const double c = static_cast<double>(context);
  const double fixed_memory_s = cost.weight_bytes_read / gpu.bandwidth_bytes_per_s;
  const double per_seq_compute_s =
      (2.0 * (cost.layer_linear_params + cost.lm_head_params) +
       c * cost.attention_flops_per_position) / gpu.flops_per_s;
  const double per_seq_memory_s = c * cost.kv_bytes_per_token / gpu.bandwidth_bytes_per_s;
  const double gain_s = per_seq_compute_s - per_seq_memory_s;
  if (gain_s <= 0) return std::nullopt;
  const double exact = fixed_memory_s / gain_s;
  // Past 2^53 sequences the answer is "never" for any deployment; it also keeps the cast exact.
  if (exact > 9.0e15) return std::nullopt;
  int64_t batch = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(exact)));
  // The closed form can land one off through rounding; settle it against decode_step itself so
  // that the two can never disagree.
  while (batch > 1 && decode_step(cost, gpu, batch - 1, context).compute_bound()) --batch;
  while (!decode_step(cost, gpu, batch, context).compute_bound()) ++batch;
  return batch;
}

}  // namespace shardserve::planner
