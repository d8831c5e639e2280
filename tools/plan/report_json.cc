#include "tools/plan/report_json.h"

#include "tools/plan/plot_data.h"

namespace shardserve::planner {
namespace {

nlohmann::json step_json(const StepEstimate& s) {
  return {{"seconds", s.seconds()},   {"bytes", s.bytes},
          {"flops", s.flops},         {"memory_seconds", s.memory_s},
          {"compute_seconds", s.compute_s}, {"flop_per_byte", s.intensity()},
          {"bound", s.compute_bound() ? "compute" : "memory"}};
}

nlohmann::json tp_json(const TpPlan& p, int64_t replicas) {
  nlohmann::json j;
  j["tp"] = p.tp;
  j["gpus"] = p.tp * replicas;
  j["q_heads_per_gpu"] = p.heads.q_heads_per_rank;
  j["kv_heads_per_gpu"] = p.heads.kv_heads_per_rank;
  j["kv_head_replicas"] = p.heads.kv_replicas;
  j["weight_bytes_per_gpu"] = {{"total", p.weights.total_bytes()},
                               {"layer_linear", p.weights.layer_linear_bytes},
                               {"embedding", p.weights.embedding_bytes},
                               {"lm_head", p.weights.lm_head_bytes},
                               {"norms", p.weights.norm_bytes}};
  j["matmul_params_per_gpu"] = p.weights.layer_linear_params + p.weights.lm_head_params;
  j["kv_bytes_per_token_per_gpu"] = p.kv_bytes_per_token;
  j["kv_bytes_per_block_per_gpu"] = p.kv_bytes_per_block;
  j["free_bytes_per_gpu"] = p.free_bytes;
  j["weights_fit"] = p.weights_fit;
  j["kv_pool_bytes_per_gpu"] = p.kv_pool_bytes;
  j["kv_blocks"] = p.kv_blocks;
  j["kv_tokens"] = p.kv_blocks * p.kv.block_size;
  j["compute_bound_batch_weights_only"] =
      p.compute_bound_batch_weights_only ? nlohmann::json(*p.compute_bound_batch_weights_only)
                                         : nlohmann::json(nullptr);
  j["contexts"] = nlohmann::json::array();
  for (const ContextRow& c : p.contexts) {
    nlohmann::json row = {{"context", c.context},
                          {"beyond_model_max", c.beyond_model_max},
                          {"blocks_per_sequence", c.blocks_per_sequence},
                          {"max_sequences_per_replica", c.max_sequences},
                          {"max_sequences_all_replicas", c.max_sequences * replicas},
                          {"decode_batch1", step_json(c.batch1)},
                          {"decode_at_max_batch", nullptr},
                          {"compute_bound_batch", nullptr}};
    if (c.at_max_batch) {
      row["decode_at_max_batch"] = step_json(*c.at_max_batch);
      row["decode_at_max_batch"]["tokens_per_s_per_replica"] =
          static_cast<double>(c.max_sequences) / c.at_max_batch->seconds();
    }
    if (c.compute_bound_batch) row["compute_bound_batch"] = *c.compute_bound_batch;
    j["contexts"].push_back(row);
  }
  j["batches"] = nlohmann::json::array();
  for (const BatchRow& b : p.batches) {
    nlohmann::json row = {{"context", b.context}, {"batch", b.batch}, {"fits", b.fits},
                          {"step", step_json(b.step)}};
    row["tokens_per_s_per_replica"] = static_cast<double>(b.batch) / b.step.seconds();
    j["batches"].push_back(row);
  }
  j["prefill"] = nlohmann::json::array();
  for (const PrefillRow& r : p.prefills) {
    nlohmann::json row = {{"prompt", r.prompt}, {"step", step_json(r.step)}};
    row["tokens_per_s"] = static_cast<double>(r.prompt) / r.step.seconds();
    j["prefill"].push_back(row);
  }
  j["allreduce"] = {{"message_bytes_per_token", p.allreduce_message_bytes_per_token},
                    {"ring_bytes_per_gpu_per_token", p.allreduce_bytes_per_gpu_per_token},
                    {"link_seconds_per_token", p.allreduce_link_s_per_token}};
  return j;
}

}  // namespace

nlohmann::json plan_to_json(const Plan& plan, const std::optional<Comparison>& comparison) {
  const PlanRequest& r = plan.request;
  const model::ModelConfig& m = r.model.config;
  nlohmann::json j;
  j["model"] = {{"name", r.model.name},
                {"num_hidden_layers", m.num_hidden_layers},
                {"hidden_size", m.hidden_size},
                {"intermediate_size", m.intermediate_size},
                {"num_attention_heads", m.num_attention_heads},
                {"num_key_value_heads", m.num_key_value_heads},
                {"head_dim", m.head_dim},
                {"vocab_size", m.vocab_size},
                {"max_position_embeddings", m.max_position_embeddings},
                {"tie_word_embeddings", m.tie_word_embeddings}};
  j["gpu"] = {{"name", r.gpu.name},
              {"memory_bytes", r.gpu.memory_bytes},
              {"bandwidth_bytes_per_s", r.gpu.bandwidth_bytes_per_s},
              {"flops_per_s", r.gpu.flops_per_s},
              {"link_bytes_per_s", r.gpu.link_bytes_per_s},
              {"ridge_flop_per_byte", ridge_intensity(r.gpu)},
              {"source", r.gpu.source}};
  j["settings"] = {{"replicas", r.replicas},
                   {"weights", r.weights.name()},
                   {"weights_origin", r.weights_origin},
                   {"kv_dtype", model::kv_dtype_name(r.kv_dtype)},
                   {"block_size", r.block_size},
                   {"kv_fraction", r.kv_fraction},
                   {"reserve_bytes", r.reserve_bytes},
                   {"activation_bytes", r.activation_bytes}};
  j["plans"] = nlohmann::json::array();
  for (const TpPlan& p : plan.tps) j["plans"].push_back(tp_json(p, r.replicas));
  j["by_precision"] = nlohmann::json::array();
  for (const PrecisionRow& row : plan.by_precision) {
    nlohmann::json e = {{"format", row.format}, {"tp", row.tp}, {"fits", row.fits},
                        {"bytes_per_gpu", nullptr}};
    if (row.bytes_per_gpu) e["bytes_per_gpu"] = *row.bytes_per_gpu;
    if (!row.error.empty()) e["error"] = row.error;
    j["by_precision"].push_back(e);
  }
  const SpeculativeRow& s = plan.speculative;
  j["speculative"] = {{"acceptance", s.params.acceptance},
                      {"k", s.params.k},
                      {"draft_cost", s.params.draft_cost},
                      {"expected_accepted", s.expected_accepted},
                      {"tokens_per_verify", s.tokens_per_verify},
                      {"speedup", s.speedup}};
  j["measured"] = nullptr;
  if (comparison) {
    nlohmann::json c = {{"source", comparison->source}, {"gpu", comparison->gpu},
                        {"date", comparison->date},     {"tp", comparison->tp},
                        {"notes", comparison->notes},   {"rows", nlohmann::json::array()}};
    for (const ComparisonRow& row : comparison->rows) {
      nlohmann::json e = {{"quantity", row.quantity},   {"at", row.at},
                          {"predicted", row.predicted}, {"measured", row.measured},
                          {"achieved", row.achieved()}, {"benchmark_roofline", nullptr}};
      if (row.benchmark_roofline) e["benchmark_roofline"] = *row.benchmark_roofline;
      c["rows"].push_back(e);
    }
    j["measured"] = c;
  }
  j["plot"] = plot_series(plan);
  return j;
}

}  // namespace shardserve::planner
