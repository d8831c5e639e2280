// make_plan and the measured-vs-predicted comparison. The KV capacity test rebuilds the
// worker's allocation by hand, so "predicted equals allocated" is checked against arithmetic
// that does not come from the code under test.
#include "tools/plan/plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "tools/plan/comparison.h"

namespace shardserve::planner {
namespace {

PlanRequest llama70b_int4_on_h200() {
  PlanRequest r;
  r.model = load_model_spec("llama-3.1-70b");
  r.gpu = gpu_preset("h200");
  r.tp_sizes = {1, 2, 4, 8};
  r.weights = model::parse_weight_format("int4");
  r.contexts = {2048, 8192, 32768, 131072};
  r.batches = {1, 32};
  r.prompts = {2048};
  return r;  // block 16, fraction 0.9, reserve 1 GiB: the defaults
}

TEST(Plan, KvCapacityEqualsTheWorkersAllocationByHand) {
  const Plan plan = make_plan(llama70b_int4_on_h200());
  const TpPlan& p = plan.tps.front();
  // H200 datasheet 141 GiB = 151397597184 B; 70B int4 weights 39767785472 B (see
  // memory_plan_test); reserve 1 GiB = 1073741824 B.
  //   free  = 151397597184 - 39767785472 - 1073741824 = 110556069888
  //   pool  = floor(0.9 * 110556069888) = floor(99500462899.2) = 99500462899
  //   block = 16 tokens * 327680 B = 5242880 B
  //   blocks = floor(99500462899 / 5242880) = 18978
  const int64_t free_bytes = 151397597184 - 39767785472 - 1073741824;
  EXPECT_EQ(p.free_bytes, free_bytes);
  EXPECT_EQ(p.kv_pool_bytes, 99500462899);
  EXPECT_EQ(p.kv_blocks, 18978);
  // The worker sizes its pool with exactly these two calls on the free memory it measures.
  const model::KvLayout layout =
      model::kv_layout(load_model_spec("llama-3.1-70b").config, 1, model::KvDtype::kBf16, 16);
  EXPECT_EQ(model::kv_blocks_that_fit(model::kv_pool_bytes(free_bytes, 0.9), layout), 18978);
  // Sequences: 18978 blocks / (context / 16) blocks each:
  //   2048 -> 128 blocks -> 148; 8192 -> 512 -> 37; 32768 -> 2048 -> 9; 131072 -> 8192 -> 2.
  ASSERT_EQ(p.contexts.size(), 4u);
  EXPECT_EQ(p.contexts[0].max_sequences, 148);
  EXPECT_EQ(p.contexts[1].max_sequences, 37);
  EXPECT_EQ(p.contexts[2].max_sequences, 9);
  EXPECT_EQ(p.contexts[3].max_sequences, 2);
}

TEST(Plan, TensorParallelSplitsWeightsAndKv) {
  const Plan plan = make_plan(llama70b_int4_on_h200());
  ASSERT_EQ(plan.tps.size(), 4u);
  // TP 8: 1 KV head per GPU, 40960 B per token; weights 4973281280 B (memory_plan_test).
  const TpPlan& p8 = plan.tps[3];
  EXPECT_EQ(p8.kv_bytes_per_token, 40960);
  EXPECT_EQ(p8.weights.total_bytes(), 4973281280);
  // free = 151397597184 - 4973281280 - 1073741824 = 145350574080; pool = floor(0.9 * that)
  // = 130815516672; blocks of 16 * 40960 = 655360 B -> 199608.
  EXPECT_EQ(p8.kv_blocks, 199608);
  // All-reduce: 2621440 B per token, 1.75x of it sent per GPU by a ring of 8.
  EXPECT_EQ(p8.allreduce_message_bytes_per_token, 2621440);
  EXPECT_DOUBLE_EQ(p8.allreduce_bytes_per_gpu_per_token, 4587520.0);
  EXPECT_DOUBLE_EQ(p8.allreduce_link_s_per_token, 4587520.0 / 450e9);
}

TEST(Plan, BatchOneAndLargestBatch) {
  const Plan plan = make_plan(llama70b_int4_on_h200());
  const ContextRow& c = plan.tps.front().contexts[1];  // context 8192
  // 8.40641536 ms (roofline_test); the largest batch is the 37 that fit:
  //   bytes = 37666439168 + 37 * 8192 * 327680 = 37666439168 + 99321118720 = 136987557888
  //   -> 28.539 ms at 4.8 TB/s.
  EXPECT_NEAR(c.batch1.seconds() * 1e3, 8.40641536, 1e-9);
  ASSERT_TRUE(c.at_max_batch.has_value());
  EXPECT_DOUBLE_EQ(c.at_max_batch->bytes, 136987557888.0);
  EXPECT_FALSE(c.compute_bound_batch.has_value());
  // Requested batch 32 at 8192 fits (32 <= 37); the rows are context-major.
  const BatchRow& b = plan.tps.front().batches[3];
  EXPECT_EQ(b.context, 8192);
  EXPECT_EQ(b.batch, 32);
  EXPECT_TRUE(b.fits);
}

TEST(Plan, WeightsThatDoNotFitLeaveNoKv) {
  PlanRequest r = llama70b_int4_on_h200();
  r.weights = model::parse_weight_format("bf16");
  r.gpu = gpu_preset("l40s");
  r.tp_sizes = {1};
  const Plan plan = make_plan(r);
  const TpPlan& p = plan.tps.front();
  EXPECT_FALSE(p.weights_fit);
  EXPECT_LT(p.free_bytes, 0);
  EXPECT_EQ(p.kv_blocks, 0);
  EXPECT_EQ(p.contexts.front().max_sequences, 0);
  EXPECT_FALSE(p.contexts.front().at_max_batch.has_value());
}

TEST(Plan, PrecisionTableReportsFormatsThatCannotShard) {
  PlanRequest r = llama70b_int4_on_h200();
  r.model = load_model_spec("llama-2-13b");
  r.weights = model::parse_weight_format("bf16");
  r.tp_sizes = {8};
  const Plan plan = make_plan(r);
  ASSERT_EQ(plan.by_precision.size(), 3u);  // bf16, int8, int4-g128 at TP 8
  EXPECT_TRUE(plan.by_precision[0].bytes_per_gpu.has_value());
  EXPECT_FALSE(plan.by_precision[2].bytes_per_gpu.has_value());
  EXPECT_NE(plan.by_precision[2].error.find("1728"), std::string::npos);
  // Asking for int4 at TP 8 itself is an error naming the shard.
  r.weights = model::parse_weight_format("int4");
  EXPECT_THROW(make_plan(r), Error);
}

TEST(Plan, RejectsBadRequests) {
  auto with = [](auto change) {
    PlanRequest r = llama70b_int4_on_h200();
    change(r);
    return r;
  };
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.contexts.clear(); })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.batches = {0}; })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.prompts = {-8}; })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.replicas = 0; })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.reserve_bytes = -1; })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.kv_fraction = 0; })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.tp_sizes = {3}; })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.gpu.memory_bytes = -5; })), Error);
  EXPECT_THROW(make_plan(with([](PlanRequest& r) { r.speculative.acceptance = 2; })), Error);
}

TEST(Plan, SpeculativeSummary) {
  const Plan plan = make_plan(llama70b_int4_on_h200());
  EXPECT_NEAR(plan.speculative.tokens_per_verify, 3.3616, 1e-12);  // a 0.8, K 4
  EXPECT_NEAR(plan.speculative.speedup, 3.3616 / 1.2, 1e-12);      // c 0.05
}

TEST(Comparison, PutsMeasuredNextToPredicted) {
  const PlanRequest r = llama70b_int4_on_h200();
  const BenchmarkResult bench = load_benchmark_result(
      std::filesystem::path(SHARDSERVE_SOURCE_DIR) /
      "tests/planner/data/llama70b-h200-tp1-example.json");
  const Comparison c = compare_with_benchmark(r, bench);
  EXPECT_TRUE(c.notes.empty());  // "H200" is the plan's GPU; contexts and prompt recorded
  // copy, flops, 2 decode contexts, 2 step batches, 1 prefill.
  ASSERT_EQ(c.rows.size(), 7u);
  EXPECT_DOUBLE_EQ(c.rows[0].predicted, 4.8);
  EXPECT_DOUBLE_EQ(c.rows[0].achieved(), 4.24 / 4.8);
  const ComparisonRow& decode8k = c.rows[3];
  EXPECT_EQ(decode8k.at, "context 8192");
  EXPECT_NEAR(decode8k.predicted, 8.40641536, 1e-9);
  EXPECT_DOUBLE_EQ(decode8k.measured, 10.5);
  EXPECT_DOUBLE_EQ(decode8k.achieved(), decode8k.predicted / 10.5);
  EXPECT_DOUBLE_EQ(*decode8k.benchmark_roofline, 8.41);
  EXPECT_EQ(c.rows[6].quantity, "prefill tokens/s");
  EXPECT_EQ(c.rows[6].at, "prompt 2048");
}

TEST(Comparison, NotesAMismatchedGpu) {
  PlanRequest r = llama70b_int4_on_h200();
  r.gpu = gpu_preset("a100");
  BenchmarkResult bench;
  bench.gpu = "H200";
  bench.tp = 2;  // not in the request's TP list: planned on demand
  bench.decode_ms_per_token[2048] = 5.0;
  const Comparison c = compare_with_benchmark(r, bench);
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_NE(c.notes[0].find("H200"), std::string::npos);
  ASSERT_EQ(c.rows.size(), 1u);
  EXPECT_EQ(c.tp, 2);
}

}  // namespace
}  // namespace shardserve::planner
