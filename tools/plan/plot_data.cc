#include "tools/plan/plot_data.h"

#include <algorithm>
#include <set>

#include "tools/plan/speculative.h"

namespace shardserve::planner {
namespace {

constexpr int64_t kMaxPlottedBatch = 4096;  // beyond any batch a single replica schedules

// Powers of two from `low` to the first one >= `high`, plus the values asked for, so the
// curves pass through every tabulated point.
std::vector<int64_t> axis(int64_t low, int64_t high, const std::vector<int64_t>& asked) {
  std::set<int64_t> points(asked.begin(), asked.end());
  for (int64_t v = low; ; v *= 2) {
    points.insert(v);
    if (v >= high) break;
  }
  return {points.begin(), points.end()};
}

// Bytes per GPU that `batch` sequences of `context` tokens occupy: whole blocks, as allocated.
double kv_bytes(const TpPlan& p, int64_t batch, int64_t context) {
  return static_cast<double>(batch * model::kv_blocks_for_tokens(context, p.kv) *
                             p.kv_bytes_per_block);
}

}  // namespace

nlohmann::json plot_series(const Plan& plan) {
  const PlanRequest& r = plan.request;
  nlohmann::json j;
  j["title"] = r.model.name + " on " + r.gpu.name + ", weights " + r.weights.name() + ", KV " +
               std::string(model::kv_dtype_name(r.kv_dtype));
  j["model_gpu"] = r.model.name + " on " + r.gpu.name;
  j["gpu_memory_bytes"] = r.gpu.memory_bytes;

  const int64_t max_context =
      std::max(*std::max_element(r.contexts.begin(), r.contexts.end()),
               r.model.config.max_position_embeddings);
  const std::vector<int64_t> contexts = axis(512, max_context, r.contexts);
  int64_t max_batch = *std::max_element(r.batches.begin(), r.batches.end());
  for (const TpPlan& p : plan.tps) {
    for (const ContextRow& c : p.contexts) max_batch = std::max(max_batch, c.max_sequences);
  }
  const std::vector<int64_t> batches = axis(1, std::min(max_batch, kMaxPlottedBatch), r.batches);

  nlohmann::json capacity = nlohmann::json::array();
  nlohmann::json by_context = nlohmann::json::array();
  nlohmann::json by_batch = nlohmann::json::array();
  for (const TpPlan& p : plan.tps) {
    capacity.push_back({{"tp", p.tp},
                        {"kv_pool_bytes", p.kv_pool_bytes},
                        {"free_bytes", std::max<int64_t>(0, p.free_bytes)},
                        {"weight_bytes", p.weights.total_bytes()}});
    for (int64_t batch : r.batches) {
      nlohmann::json ys = nlohmann::json::array();
      for (int64_t context : contexts) ys.push_back(kv_bytes(p, batch, context));
      by_context.push_back({{"tp", p.tp}, {"batch", batch}, {"kv_bytes", ys}});
    }
    for (int64_t context : r.contexts) {
      nlohmann::json ys = nlohmann::json::array();
      for (int64_t batch : batches) ys.push_back(kv_bytes(p, batch, context));
      by_batch.push_back({{"tp", p.tp}, {"context", context}, {"kv_bytes", ys}});
    }
  }
  j["capacity"] = capacity;
  j["kv_vs_context"] = {{"contexts", contexts}, {"series", by_context}};
  j["kv_vs_batch"] = {{"batches", batches}, {"series", by_batch}};

  std::set<int64_t> ks = {1, 2, 4, 8, r.speculative.k};
  std::vector<double> acceptance;
  for (int i = 0; i <= 50; ++i) acceptance.push_back(i / 50.0);
  nlohmann::json spec = nlohmann::json::array();
  for (int64_t k : ks) {
    nlohmann::json ys = nlohmann::json::array();
    for (double a : acceptance) ys.push_back(speculative_speedup({a, k, r.speculative.draft_cost}));
    spec.push_back({{"k", k}, {"speedup", ys}});
  }
  j["speculative"] = {{"acceptance", acceptance},
                      {"draft_cost", r.speculative.draft_cost},
                      {"chosen", {{"acceptance", r.speculative.acceptance},
                                  {"k", r.speculative.k},
                                  {"speedup", plan.speculative.speedup}}},
                      {"series", spec}};

  nlohmann::json precision = nlohmann::json::array();
  for (const PrecisionRow& row : plan.by_precision) {
    precision.push_back({{"format", row.format}, {"tp", row.tp},
                         {"bytes_per_gpu", row.bytes_per_gpu ? nlohmann::json(*row.bytes_per_gpu)
                                                             : nlohmann::json(nullptr)}});
  }
  j["precision"] = precision;
  return j;
}

}  // namespace shardserve::planner
