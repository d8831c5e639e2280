#include "tools/plan/plan.h"

#include "common/error.h"
#include "tools/plan/allreduce.h"

namespace shardserve::planner {
namespace {

void require_positive_list(const std::vector<int64_t>& values, const char* what) {
  require(!values.empty(), "at least one {} is needed", what);
  for (int64_t v : values) require(v > 0, "{} must be positive, got {}", what, v);
}

}  // namespace

void validate_plan_request(const PlanRequest& request) {
  validate_gpu_spec(request.gpu);
  require_positive_list(request.tp_sizes, "tensor-parallel size");
  require_positive_list(request.contexts, "context length");
  require_positive_list(request.batches, "batch size");
  require_positive_list(request.prompts, "prompt length");
  require(request.replicas >= 1, "replicas must be at least 1, got {}", request.replicas);
  require(request.block_size > 0, "KV block size must be positive, got {}", request.block_size);
  require(request.kv_fraction > 0.0 && request.kv_fraction <= 1.0,
          "KV memory fraction must be in (0, 1], got {}", request.kv_fraction);
  require(request.reserve_bytes >= 0, "reserved memory must not be negative, got {} bytes",
          request.reserve_bytes);
  require(request.activation_bytes > 0, "activation bytes must be positive, got {}",
          request.activation_bytes);
  validate_speculative(request.speculative);
}

TpPlan plan_tp(const PlanRequest& request, int64_t tp) {
  const model::ModelConfig& config = request.model.config;
  TpPlan p;
  p.tp = tp;
  p.heads = model::shard_heads(config, tp);
  p.weights = model::rank_weights(config, tp, request.weights);
  p.kv = model::kv_layout(config, tp, request.kv_dtype, request.block_size);
  p.kv_bytes_per_token = model::kv_bytes_per_token(p.kv);
  p.kv_bytes_per_block = model::kv_bytes_per_block(p.kv);
  p.free_bytes = request.gpu.memory_bytes - p.weights.total_bytes() - request.reserve_bytes;
  p.weights_fit = p.free_bytes >= 0;
  // The worker measures free memory after loading weights and passes it here; the planner
  // predicts that measurement as capacity - weights - reserve.
  p.kv_pool_bytes = p.weights_fit ? model::kv_pool_bytes(p.free_bytes, request.kv_fraction) : 0;
  p.kv_blocks = model::kv_blocks_that_fit(p.kv_pool_bytes, p.kv);
  p.cost = rank_cost(config, tp, p.weights, p.kv);
  p.compute_bound_batch_weights_only = compute_bound_batch(p.cost, request.gpu, 0);

  for (int64_t context : request.contexts) {
    ContextRow row;
    row.context = context;
    row.beyond_model_max =
        config.max_position_embeddings > 0 && context > config.max_position_embeddings;
    row.blocks_per_sequence = model::kv_blocks_for_tokens(context, p.kv);
    row.max_sequences = p.kv_blocks / row.blocks_per_sequence;
    row.batch1 = decode_step(p.cost, request.gpu, 1, context);
    if (row.max_sequences >= 1) {
      row.at_max_batch = decode_step(p.cost, request.gpu, row.max_sequences, context);
    }
    row.compute_bound_batch = compute_bound_batch(p.cost, request.gpu, context);
    for (int64_t batch : request.batches) {
      BatchRow b;
      b.context = context;
      b.batch = batch;
      b.fits = batch <= row.max_sequences;
      b.step = decode_step(p.cost, request.gpu, batch, context);
      p.batches.push_back(b);
    }
    p.contexts.push_back(row);
  }
  for (int64_t prompt : request.prompts) {
    p.prefills.push_back({prompt, prefill(p.cost, request.gpu, prompt)});
  }
  p.allreduce_message_bytes_per_token =
      allreduce_bytes_per_token(config, request.activation_bytes);
  p.allreduce_bytes_per_gpu_per_token =
      ring_allreduce_bytes_per_gpu(static_cast<double>(p.allreduce_message_bytes_per_token), tp);
  p.allreduce_link_s_per_token = p.allreduce_bytes_per_gpu_per_token / request.gpu.link_bytes_per_s;
  return p;
}

std::vector<model::WeightFormat> compared_weight_formats() {
  return {model::parse_weight_format("bf16"), model::parse_weight_format("int8"),
          model::parse_weight_format("int4-g128")};
}

Plan make_plan(const PlanRequest& request) {
  validate_plan_request(request);
  Plan plan;
  plan.request = request;
  for (int64_t tp : request.tp_sizes) plan.tps.push_back(plan_tp(request, tp));

  for (const model::WeightFormat& format : compared_weight_formats()) {
    for (int64_t tp : request.tp_sizes) {
      PrecisionRow row;
      row.format = format.name();
      row.tp = tp;
      try {
        row.bytes_per_gpu = model::rank_weights(request.model.config, tp, format).total_bytes();
        row.fits = *row.bytes_per_gpu + request.reserve_bytes <= request.gpu.memory_bytes;
      } catch (const Error& e) {
        // Another format may not shard at a TP the requested one does (int4 groups must not
        // straddle ranks); report it in the row rather than refuse the whole plan.
        row.error = e.what();
      }
      plan.by_precision.push_back(row);
    }
  }

  const SpeculativeParams& s = request.speculative;
  plan.speculative.params = s;
  plan.speculative.expected_accepted = expected_accepted_drafts(s.acceptance, s.k);
  plan.speculative.tokens_per_verify = expected_tokens_per_verify(s.acceptance, s.k);
  plan.speculative.speedup = speculative_speedup(s);
  return plan;
}

}  // namespace shardserve::planner
