#pragma once
// A capacity plan: for one model on one GPU type, every TP size asked for, what fits in memory
// and how fast it can run. Pure computation on model/memory_plan.h (memory) and roofline.h
// (time), so the reports (markdown, JSON, plots) only format what is here.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/memory_plan.h"
#include "tools/plan/gpu_spec.h"
#include "tools/plan/model_presets.h"
#include "tools/plan/roofline.h"
#include "tools/plan/speculative.h"

namespace shardserve::planner {

struct PlanRequest {
  ModelSpec model;
  GpuSpec gpu;
  std::vector<int64_t> tp_sizes = {1};
  int64_t replicas = 1;
  model::WeightFormat weights;
  std::string weights_origin;  // where the format came from, when not from --weights
  model::KvDtype kv_dtype = model::KvDtype::kBf16;
  std::vector<int64_t> contexts = {2048, 8192, 32768, 131072};  // tokens per sequence
  std::vector<int64_t> batches = {1, 8, 32, 64, 128};           // concurrent sequences
  std::vector<int64_t> prompts = {2048, 8192, 32768};           // prefill lengths
  int64_t block_size = 16;      // tokens per KV block (the worker's paged-attention block)
  double kv_fraction = 0.9;     // share of the memory left after weights and reserve
  int64_t reserve_bytes = int64_t{1} << 30;  // CUDA context, cuBLAS/NCCL workspace, activations
  int64_t activation_bytes = 2;  // bf16 hidden states in the all-reduces
  SpeculativeParams speculative;
};

// Throws on an empty or non-positive list, replicas < 1, a bad fraction, a negative reserve.
void validate_plan_request(const PlanRequest& request);

struct ContextRow {
  int64_t context = 0;
  bool beyond_model_max = false;     // context > max_position_embeddings
  int64_t blocks_per_sequence = 0;
  int64_t max_sequences = 0;         // per replica: kv_blocks / blocks_per_sequence
  StepEstimate batch1;               // one sequence at this context
  std::optional<StepEstimate> at_max_batch;  // max_sequences sequences, when >= 1 fits
  std::optional<int64_t> compute_bound_batch;
};

struct BatchRow {
  int64_t context = 0;
  int64_t batch = 0;
  bool fits = false;  // batch * blocks_per_sequence <= kv_blocks
  StepEstimate step;
};

struct PrefillRow {
  int64_t prompt = 0;
  StepEstimate step;
};

struct TpPlan {
  int64_t tp = 1;
  model::HeadLayout heads;
  model::RankWeights weights;
  model::KvLayout kv;
  int64_t kv_bytes_per_token = 0;
  int64_t kv_bytes_per_block = 0;
  int64_t free_bytes = 0;     // memory - weights - reserve; negative when weights do not fit
  bool weights_fit = false;
  int64_t kv_pool_bytes = 0;  // kv_pool_bytes(free_bytes, kv_fraction), 0 when nothing is free
  int64_t kv_blocks = 0;      // kv_blocks_that_fit(kv_pool_bytes, kv)
  RankCost cost;
  // The batch at which decode turns compute-bound counting weights only (context 0): the
  // textbook number, reached only while contexts are short.
  std::optional<int64_t> compute_bound_batch_weights_only;
  std::vector<ContextRow> contexts;
  std::vector<BatchRow> batches;   // every (context, batch) pair asked for
  std::vector<PrefillRow> prefills;
  int64_t allreduce_message_bytes_per_token = 0;
  double allreduce_bytes_per_gpu_per_token = 0;  // ring traffic each GPU sends
  double allreduce_link_s_per_token = 0;         // that traffic at the link bandwidth
};

// Weight memory of every format at one TP size: the "memory by precision" comparison.
struct PrecisionRow {
  std::string format;
  int64_t tp = 1;
  std::optional<int64_t> bytes_per_gpu;  // nullopt when the format cannot shard at this tp
  std::string error;                     // why not, then
  bool fits = false;                     // weights + reserve <= GPU memory
};

struct SpeculativeRow {
  SpeculativeParams params;
  double expected_accepted = 0;
  double tokens_per_verify = 0;
  double speedup = 0;
};

struct Plan {
  PlanRequest request;
  std::vector<TpPlan> tps;
  std::vector<PrecisionRow> by_precision;
  SpeculativeRow speculative;
};

TpPlan plan_tp(const PlanRequest& request, int64_t tp);
Plan make_plan(const PlanRequest& request);

// The weight formats the precision comparison covers.
std::vector<model::WeightFormat> compared_weight_formats();

}  // namespace shardserve::planner
