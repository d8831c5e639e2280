// tools/plan/roofline.h, allreduce.h and speculative.h against hand-computed values.
#include "tools/plan/roofline.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/planner/test_models.h"
#include "tools/plan/allreduce.h"
#include "tools/plan/speculative.h"

namespace shardserve::planner {
namespace {

using testing::llama31_70b;

// Round ceilings so the arithmetic fits in comments: 1 TB/s, 100 TFLOP/s, ridge 100 FLOP/B.
GpuSpec round_gpu() { return {"round", int64_t{1} << 40, 1e12, 1e14, 1e11, "test"}; }

// W = 1e9 bytes, 1e9 layer params, 1e8 LM-head params, 1000 B of KV per token, 1000 attention
// FLOPs per (token, position).
RankCost round_cost() { return {1e9, 1e9, 1e8, 1000, 1000}; }

TEST(RankCost, Llama70bInt4) {
  // Bytes read per pass: layer linears 35562455040 + norms 2637824 + LM head
  // 128256 * 8192 * 2 = 2101346304 -> 37666439168 (the untied embedding is only gathered).
  // Params: 80 * 855638016 = 68451041280 in the layers, 128256 * 8192 = 1050673152 LM head.
  // Attention: 4 * 80 layers * 64 heads * 128 = 2621440 FLOPs per (token, position).
  const model::ModelConfig c = llama31_70b();
  const model::RankWeights w = model::rank_weights(c, 1, model::parse_weight_format("int4"));
  const RankCost cost = rank_cost(c, 1, w, model::kv_layout(c, 1, model::KvDtype::kBf16, 16));
  EXPECT_DOUBLE_EQ(cost.weight_bytes_read, 37666439168.0);
  EXPECT_DOUBLE_EQ(cost.layer_linear_params, 68451041280.0);
  EXPECT_DOUBLE_EQ(cost.lm_head_params, 1050673152.0);
  EXPECT_DOUBLE_EQ(cost.kv_bytes_per_token, 327680.0);
  EXPECT_DOUBLE_EQ(cost.attention_flops_per_position, 2621440.0);

  // Batch 1 at context 8192 on the H200 datasheet (4.8 TB/s, 989 TFLOP/s):
  //   bytes = 37666439168 + 8192 * 327680 = 40350793728 -> / 4.8e12 = 8.40641536 ms
  //   flops = 2 * (68451041280 + 1050673152) + 8192 * 2621440 = 160478265344
  //         -> / 989e12 = 0.16226 ms: memory-bound.
  const StepEstimate s = decode_step(cost, gpu_preset("h200"), 1, 8192);
  EXPECT_DOUBLE_EQ(s.bytes, 40350793728.0);
  EXPECT_DOUBLE_EQ(s.flops, 160478265344.0);
  EXPECT_NEAR(s.seconds() * 1e3, 8.40641536, 1e-9);
  EXPECT_FALSE(s.compute_bound());
}

TEST(RankCost, TiedHeadReadsTheEmbedding) {
  const model::ModelConfig c = testing::llama_shape(2, 256, 512, 4, 2, 1000, true);
  const model::RankWeights w = model::rank_weights(c, 2, model::parse_weight_format("bf16"));
  const RankCost cost = rank_cost(c, 2, w, model::kv_layout(c, 2, model::KvDtype::kBf16, 16));
  // 1179648 layer bytes + 2560 norms + the 256000-byte table the LM head multiplies by.
  EXPECT_DOUBLE_EQ(cost.weight_bytes_read, 1179648.0 + 2560.0 + 256000.0);
}

TEST(DecodeStep, ByHand) {
  // Batch 4, context 100:
  //   bytes = 1e9 + 4 * 100 * 1000 = 1000400000 -> 1.0004 ms at 1 TB/s
  //   flops = 4 * (2 * (1e9 + 1e8) + 100 * 1000) = 8800400000 -> 0.088004 ms at 100 TFLOP/s
  const StepEstimate s = decode_step(round_cost(), round_gpu(), 4, 100);
  EXPECT_DOUBLE_EQ(s.bytes, 1000400000.0);
  EXPECT_DOUBLE_EQ(s.flops, 8800400000.0);
  EXPECT_DOUBLE_EQ(s.memory_s, 1.0004e-3);
  EXPECT_DOUBLE_EQ(s.compute_s, 8.8004e-5);
  EXPECT_DOUBLE_EQ(s.seconds(), 1.0004e-3);
  EXPECT_DOUBLE_EQ(s.intensity(), 8800400000.0 / 1000400000.0);
  EXPECT_THROW(decode_step(round_cost(), round_gpu(), 0, 100), Error);
  EXPECT_THROW(decode_step(round_cost(), round_gpu(), 1, -1), Error);
}

TEST(Prefill, ByHand) {
  // Prompt of 4: bytes = 1e9 + 4 * 1000 = 1000004000;
  //   flops = 2 * 1e9 * 4 + 2 * 1e8 (logits of the last token only) + 1000 * 4 * 5 / 2
  //         = 8200010000 -> 82.0001 us, below 1.000004 ms of memory time.
  StepEstimate s = prefill(round_cost(), round_gpu(), 4);
  EXPECT_DOUBLE_EQ(s.bytes, 1000004000.0);
  EXPECT_DOUBLE_EQ(s.flops, 8200010000.0);
  EXPECT_FALSE(s.compute_bound());
  // Prompt of 1000: flops = 2e12 + 2e8 + 1000 * 1000 * 1001 / 2 = 2000700500000 -> 20.007 ms
  // against bytes 1e9 + 1e6 -> 1.001 ms: compute-bound.
  s = prefill(round_cost(), round_gpu(), 1000);
  EXPECT_DOUBLE_EQ(s.flops, 2000700500000.0);
  EXPECT_TRUE(s.compute_bound());
  EXPECT_DOUBLE_EQ(s.seconds(), 2000700500000.0 / 1e14);
  EXPECT_THROW(prefill(round_cost(), round_gpu(), 0), Error);
}

TEST(Roofline, RidgeAndCrossover) {
  EXPECT_DOUBLE_EQ(ridge_intensity(round_gpu()), 100.0);
  // No KV in the cost (context 0): each sequence adds 2 * 1.1e9 FLOPs = 22 us against a fixed
  // 1 ms of weights: B >= 1e-3 / 2.2e-5 = 45.45 -> 46.
  EXPECT_EQ(compute_bound_batch(round_cost(), round_gpu(), 0), 46);
  EXPECT_FALSE(decode_step(round_cost(), round_gpu(), 45, 0).compute_bound());
  EXPECT_TRUE(decode_step(round_cost(), round_gpu(), 46, 0).compute_bound());
  // Context 1000: per sequence (2.2e9 + 1e6) FLOPs = 22.01 us but also 1e6 B = 1 us of KV:
  // B >= 1e-3 / (22.01e-6 - 1e-6) = 47.59 -> 48.
  EXPECT_EQ(compute_bound_batch(round_cost(), round_gpu(), 1000), 48);
  // 1e6 B of KV per token: per sequence 1 ms of KV at context 1000 against 22 us of FLOPs,
  // so no batch is ever compute-bound.
  RankCost kv_heavy = round_cost();
  kv_heavy.kv_bytes_per_token = 1e6;
  EXPECT_EQ(compute_bound_batch(kv_heavy, round_gpu(), 1000), std::nullopt);
}

TEST(Roofline, Llama70bBf16CrossoverNearTheRidge) {
  // bf16 reads 2 bytes per matmul parameter, so without KV the crossover sits at the ridge:
  // W = 136902082560 + 2637824 + 2101346304 = 139006066688 B read, P = 69501714432 params;
  // (W / 4.8e12) / (2 * P / 989e12) = 28.9596 ms / 0.140549 ms = 206.05 -> 207.
  const model::ModelConfig c = llama31_70b();
  const model::RankWeights w = model::rank_weights(c, 1, model::parse_weight_format("bf16"));
  const RankCost cost = rank_cost(c, 1, w, model::kv_layout(c, 1, model::KvDtype::kBf16, 16));
  EXPECT_EQ(compute_bound_batch(cost, gpu_preset("h200"), 0), 207);
  // At 8k context GQA attention does 2 * 8 (group) FLOPs per 2-byte KV element: 8 FLOP/B,
  // far below the 206 FLOP/B ridge, so KV reads outgrow FLOPs: never compute-bound.
  EXPECT_EQ(compute_bound_batch(cost, gpu_preset("h200"), 8192), std::nullopt);
}

TEST(AllReduce, TwoPerLayerAndRingTraffic) {
  // 70B: 2 * 80 layers * 8192 hidden * 2 bytes = 2621440 B = 2.5 MiB per token.
  EXPECT_EQ(allreduce_bytes_per_token(llama31_70b(), 2), 2621440);
  // Ring: 2 (tp-1)/tp of the message: TP 1 -> 0, TP 2 -> 1x, TP 4 -> 1.5x, TP 8 -> 1.75x.
  EXPECT_DOUBLE_EQ(ring_allreduce_bytes_per_gpu(2621440, 1), 0.0);
  EXPECT_DOUBLE_EQ(ring_allreduce_bytes_per_gpu(2621440, 2), 2621440.0);
  EXPECT_DOUBLE_EQ(ring_allreduce_bytes_per_gpu(2621440, 4), 3932160.0);
  EXPECT_DOUBLE_EQ(ring_allreduce_bytes_per_gpu(2621440, 8), 4587520.0);
  EXPECT_THROW(ring_allreduce_bytes_per_gpu(2621440, 0), Error);
  EXPECT_THROW(allreduce_bytes_per_token(llama31_70b(), 0), Error);
}

TEST(Speculative, Limits) {
  // a = 0: only the verify pass's own token: 1 / (1 + 4 * 0.05) = 1 / 1.2.
  EXPECT_DOUBLE_EQ(expected_tokens_per_verify(0.0, 4), 1.0);
  EXPECT_DOUBLE_EQ(expected_accepted_drafts(0.0, 4), 0.0);
  EXPECT_DOUBLE_EQ(speculative_speedup({0.0, 4, 0.05}), 1.0 / 1.2);
  // a = 1: all K drafts plus the bonus token: (4 + 1) / 1.2.
  EXPECT_DOUBLE_EQ(expected_tokens_per_verify(1.0, 4), 5.0);
  EXPECT_DOUBLE_EQ(speculative_speedup({1.0, 4, 0.05}), 5.0 / 1.2);
  // Continuous into a = 1 (the closed form is 0/0 there).
  EXPECT_NEAR(expected_tokens_per_verify(1.0 - 1e-9, 4), 5.0, 1e-6);
  // Free drafts (c = 0) at K = 1, a = 0.5: 1 + 0.5 = 1.5.
  EXPECT_DOUBLE_EQ(speculative_speedup({0.5, 1, 0.0}), 1.5);
}

TEST(Speculative, ByHand) {
  // a = 0.8, K = 4: E[accepted] = 0.8 + 0.64 + 0.512 + 0.4096 = 2.3616;
  // tokens per verify = 3.3616 = (1 - 0.8^5) / (1 - 0.8) = 0.67232 / 0.2;
  // speedup at c = 0.05 = 3.3616 / 1.2 = 2.80133...
  EXPECT_NEAR(expected_accepted_drafts(0.8, 4), 2.3616, 1e-12);
  EXPECT_NEAR(expected_tokens_per_verify(0.8, 4), 3.3616, 1e-12);
  EXPECT_NEAR(speculative_speedup({0.8, 4, 0.05}), 3.3616 / 1.2, 1e-12);
  // The seed notebook's K * a + 1 = 4.2 overstates it: later drafts need every earlier one.
  EXPECT_LT(expected_tokens_per_verify(0.8, 4), 4 * 0.8 + 1);
}

TEST(Speculative, RejectsBadParameters) {
  EXPECT_THROW(speculative_speedup({-0.1, 4, 0.05}), Error);
  EXPECT_THROW(speculative_speedup({1.1, 4, 0.05}), Error);
  EXPECT_THROW(speculative_speedup({0.8, 0, 0.05}), Error);
  EXPECT_THROW(speculative_speedup({0.8, 4, -1.0}), Error);
}

}  // namespace
}  // namespace shardserve::planner
