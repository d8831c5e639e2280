// model/memory_plan.h against hand-computed values; every expected number is worked out in the
// comment beside it.
#include "model/memory_plan.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/planner/test_models.h"

namespace shardserve::model {
namespace {

using planner::testing::llama31_70b;
using planner::testing::llama_shape;
using planner::testing::tiny;

constexpr int64_t kMiB = 1 << 20;

// Expects an Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<const char*> parts) {
  try {
    f();
    FAIL() << "expected shardserve::Error";
  } catch (const Error& e) {
    for (const char* part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
        << "message '" << e.what() << "' lacks '" << part << "'";
  }
}

TEST(KvBytes, Llama70bKeepsEightKvHeads) {
  // GQA: 2 (K, V) * 80 layers * 8 KV heads * 128 head_dim * 2 bytes = 327680 B = 0.3125 MiB.
  const KvLayout kv = kv_layout(llama31_70b(), 1, KvDtype::kBf16, 16);
  EXPECT_EQ(kv.kv_heads_per_rank, 8);
  EXPECT_EQ(kv_bytes_per_token(kv), 327680);
  EXPECT_DOUBLE_EQ(static_cast<double>(kv_bytes_per_token(kv)) / kMiB, 0.3125);
  // One block of 16 tokens: 16 * 327680 = 5242880 B = 5 MiB.
  EXPECT_EQ(kv_bytes_per_block(kv), 5 * kMiB);
}

TEST(KvBytes, SeedNotebookFormulaIsTheMhaCounterfactual) {
  // The seed notebook multiplies by all 64 query heads: 2 * 80 * 64 * 128 * 2 = 2621440 B =
  // 2.5 MiB, eight times what the model stores.
  const ModelConfig mha = llama_shape(80, 8192, 28672, 64, 64, 128256);
  const KvLayout kv = kv_layout(mha, 1, KvDtype::kBf16, 16);
  EXPECT_EQ(kv_bytes_per_token(kv), 2621440);
  EXPECT_EQ(kv_bytes_per_token(kv), 8 * kv_bytes_per_token(kv_layout(llama31_70b(), 1,
                                                                      KvDtype::kBf16, 16)));
}

TEST(KvBytes, Dtypes) {
  // 70B per token at TP 1: 163840 * dtype bytes (163840 = 2 * 80 * 8 * 128).
  EXPECT_EQ(kv_bytes_per_token(kv_layout(llama31_70b(), 1, KvDtype::kFp16, 16)), 327680);
  EXPECT_EQ(kv_bytes_per_token(kv_layout(llama31_70b(), 1, KvDtype::kFp32, 16)), 655360);
  EXPECT_EQ(kv_bytes_per_token(kv_layout(llama31_70b(), 1, KvDtype::kFp8, 16)), 163840);
  EXPECT_EQ(parse_kv_dtype("fp8"), KvDtype::kFp8);
  EXPECT_EQ(kv_dtype_name(KvDtype::kBf16), "bf16");
  expect_error([] { parse_kv_dtype("int3"); }, {"int3", "bf16"});
}

TEST(ShardHeads, SplitsKvHeadsUpToTheirCount) {
  // 64 query and 8 KV heads: TP 2 -> 32 / 4, TP 4 -> 16 / 2, TP 8 -> 8 / 1.
  const ModelConfig c = llama31_70b();
  EXPECT_EQ(shard_heads(c, 2).q_heads_per_rank, 32);
  EXPECT_EQ(shard_heads(c, 2).kv_heads_per_rank, 4);
  EXPECT_EQ(shard_heads(c, 4).kv_heads_per_rank, 2);
  EXPECT_EQ(shard_heads(c, 8).kv_heads_per_rank, 1);
  EXPECT_EQ(shard_heads(c, 8).kv_replicas, 1);
  // Per-rank KV per token at TP 8: 2 * 80 * 1 * 128 * 2 = 40960 B.
  EXPECT_EQ(kv_bytes_per_token(kv_layout(c, 8, KvDtype::kBf16, 16)), 40960);
}

TEST(ShardHeads, ReplicatesKvHeadsBeyondTheirCount) {
  // TP 16 > 8 KV heads: each rank keeps max(1, 8/16) = 1 head, each head on 16/8 = 2 ranks,
  // so per-rank KV per token stays at TP 8's 40960 B instead of halving.
  const ModelConfig c = llama31_70b();
  const HeadLayout h = shard_heads(c, 16);
  EXPECT_EQ(h.q_heads_per_rank, 4);
  EXPECT_EQ(h.kv_heads_per_rank, 1);
  EXPECT_EQ(h.kv_replicas, 2);
  EXPECT_EQ(kv_bytes_per_token(kv_layout(c, 16, KvDtype::kBf16, 16)), 40960);
}

TEST(ShardHeads, RejectsUnevenSplitsNamingTheValues) {
  expect_error([] { shard_heads(llama31_70b(), 3); }, {"3", "num_attention_heads 64"});
  expect_error([] { shard_heads(llama31_70b(), 0); }, {"at least 1", "0"});
  // 48 heads split by 6, but 8 KV heads are not: 8 % 6 != 0.
  expect_error([] { shard_heads(llama_shape(1, 6144, 6144, 48, 8, 100), 6); },
               {"6", "num_key_value_heads 8"});
  // TP 12 > 8 KV heads and not a multiple of 8.
  expect_error([] { shard_heads(llama_shape(1, 12288, 12288, 96, 8, 100), 12); },
               {"12", "num_key_value_heads 8", "multiple"});
  // 4 heads, MLP 510: 510 % 4 != 0.
  expect_error([] { shard_heads(llama_shape(1, 256, 510, 4, 4, 100), 4); },
               {"4", "intermediate_size 510"});
}

TEST(LinearBytes, Bf16AndInt8) {
  // [8192, 8192] bf16: 8192 * 8192 * 2 = 134217728.
  EXPECT_EQ(linear_weight_bytes(8192, 8192, parse_weight_format("bf16")), 134217728);
  // int8: 8192 * 8192 (int8) + 8192 * 2 (one bf16 scale per output row) = 67108864 + 16384.
  EXPECT_EQ(linear_weight_bytes(8192, 8192, parse_weight_format("int8")), 67125248);
}

TEST(LinearBytes, Int4G128CountsGptqTensors) {
  // Llama-70B down_proj, out 8192, in 28672, group 128 -> 28672 / 128 = 224 groups:
  //   qweight int32 [28672/8 = 3584, 8192]       = 3584 * 8192 * 4 = 117440512
  //   scales  fp16  [224, 8192]                  = 224 * 8192 * 2  =   3670016
  //   qzeros  int32 [224, 8192/8 = 1024]         = 224 * 1024 * 4  =    917504
  //   total                                                          = 122028032
  EXPECT_EQ(linear_weight_bytes(8192, 28672, parse_weight_format("int4")), 122028032);
  // Group 64 doubles scales and zeros: 117440512 + 2 * (3670016 + 917504) = 126615552.
  EXPECT_EQ(linear_weight_bytes(8192, 28672, parse_weight_format("int4-g64")), 126615552);
}

TEST(LinearBytes, Int8GroupwiseAndOneGroup) {
  // GPTQ int8 g128 of [8192, 8192]: pf = 4, 64 groups:
  //   qweight int32 [2048, 8192] = 67108864; scales [64, 8192] fp16 = 1048576;
  //   qzeros int32 [64, 2048] = 524288 -> 68681728.
  EXPECT_EQ(linear_weight_bytes(8192, 8192, parse_weight_format("int8-g128")), 68681728);
  // int4 with group_size -1: one group, so scales [1, 8192] = 16384 and qzeros [1, 1024] =
  // 4096 next to the 117440512-byte qweight of down_proj: 117460992.
  EXPECT_EQ(linear_weight_bytes(8192, 28672, parse_weight_format("int4-g-1")), 117460992);
}

TEST(WeightFormat, FromQuantizationConfig) {
  QuantizationConfig q;
  q.bits = 4;
  q.group_size = 128;
  EXPECT_EQ(weight_format_of(q).name(), "int4-g128");
  q.bits = 8;
  q.group_size = 64;
  EXPECT_EQ(weight_format_of(q).name(), "int8-g64");
  q.bits = 4;
  q.group_size = -1;
  EXPECT_EQ(weight_format_of(q).name(), "int4-g-1");
  q.bits = 3;
  expect_error([&] { weight_format_of(q); }, {"bits 3"});
}

TEST(LinearBytes, Int4RejectsShapesGptqCannotStore) {
  expect_error([] { linear_weight_bytes(8, 100, parse_weight_format("int4")); },
               {"128", "100"});
  expect_error([] { linear_weight_bytes(12, 128, parse_weight_format("int4")); }, {"12"});
  expect_error([] { linear_weight_bytes(-1, 128, parse_weight_format("bf16")); }, {"-1"});
}

TEST(WeightFormat, ParsesAndNames) {
  EXPECT_EQ(parse_weight_format("int4").name(), "int4-g128");
  EXPECT_EQ(parse_weight_format("int4-g32").group_size, 32);
  EXPECT_EQ(parse_weight_format("fp16").name(), "fp16");
  expect_error([] { parse_weight_format("int4-g0"); }, {"int4-g0"});
  expect_error([] { parse_weight_format("int4-gx"); }, {"int4-gx"});
  expect_error([] { parse_weight_format("q4_k_m"); }, {"q4_k_m", "int<4|8>-g<group size>"});
  EXPECT_EQ(parse_weight_format("int8").group_size, 0);  // per channel
  EXPECT_EQ(parse_weight_format("int8-g128").name(), "int8-g128");
  EXPECT_EQ(parse_weight_format("int4-g-1").group_size, -1);
}

TEST(RankWeights, TinyModelByHand) {
  // tiny() at TP 2: q_out = 2 heads * 64 = 128, kv_out = 1 * 64 = 64, MLP shard 256.
  //   q [128, 256] = 32768, k [64, 256] = 16384, v = 16384, o [256, 128] = 32768,
  //   gate [256, 256] = 65536, up = 65536, down [256, 256] = 65536   -> 294912 per layer
  //   2 layers -> 589824 params -> 1179648 bytes bf16
  //   vocab rows ceil(1000 / 2) = 500: embedding = LM head = 500 * 256 * 2 = 256000
  //   norms (2 * 2 + 1) * 256 * 2 = 2560
  //   total 1179648 + 2 * 256000 + 2560 = 1694208
  const RankWeights w = rank_weights(tiny(), 2, parse_weight_format("bf16"));
  EXPECT_EQ(w.layer_linear_params, 589824);
  EXPECT_EQ(w.layer_linear_bytes, 1179648);
  EXPECT_EQ(w.embedding_bytes, 256000);
  EXPECT_EQ(w.lm_head_bytes, 256000);
  EXPECT_EQ(w.lm_head_params, 128000);
  EXPECT_EQ(w.norm_bytes, 2560);
  EXPECT_EQ(w.total_bytes(), 1694208);
}

TEST(RankWeights, TiedEmbeddingsCountedOnce) {
  // Same as above without the LM head's 256000: 1438208. Its matmul still runs.
  const RankWeights w =
      rank_weights(llama_shape(2, 256, 512, 4, 2, 1000, true), 2, parse_weight_format("bf16"));
  EXPECT_EQ(w.lm_head_bytes, 0);
  EXPECT_EQ(w.lm_head_params, 128000);
  EXPECT_EQ(w.total_bytes(), 1438208);
}

TEST(RankWeights, VocabShardRoundsUp) {
  // vocab 1001 over TP 2: ceil = 501 rows per rank, 501 * 256 * 2 = 256512 bytes.
  const RankWeights w =
      rank_weights(llama_shape(2, 256, 512, 4, 2, 1001), 2, parse_weight_format("bf16"));
  EXPECT_EQ(w.embedding_bytes, 256512);
}

TEST(RankWeights, Llama70bBf16AndInt4) {
  // Per layer: q, o 8192 * 8192 each; k, v 1024 * 8192 each; gate, up, down 8192 * 28672 each:
  //   2 * 67108864 + 2 * 8388608 + 3 * 234881024 = 855638016 params.
  // bf16: 80 * 855638016 * 2 = 136902082560; embedding + LM head 2 * 128256 * 8192 * 2 =
  //   4202692608; norms 161 * 8192 * 2 = 2637824; total 141107412992 (131.42 GiB).
  const ModelConfig c = llama31_70b();
  EXPECT_EQ(rank_weights(c, 1, parse_weight_format("bf16")).total_bytes(), 141107412992);
  // int4 g128 is 0.5 + 2/128 + 0.5/128 = 0.51953125 bytes per weight for every 70B linear
  // (all in-features divide by 128, all out-features by 8): 855638016 * 0.51953125 =
  //   444530688 per layer, * 80 = 35562455040; + 4202692608 + 2637824 = 39767785472.
  EXPECT_EQ(rank_weights(c, 1, parse_weight_format("int4")).total_bytes(), 39767785472);
  // TP 8 splits every linear and the vocabulary by 8 (128256 / 8 = 16032 rows):
  //   35562455040 / 8 + 2 * 16032 * 8192 * 2 + 2637824 = 4445306880 + 525336576 + 2637824.
  EXPECT_EQ(rank_weights(c, 8, parse_weight_format("int4")).total_bytes(), 4973281280);
}

TEST(RankWeights, Int4GroupMustNotStraddleRanks) {
  // Llama-2-13B's MLP 13824 over TP 8 leaves down_proj 1728 input features per rank, and
  // 1728 % 128 = 64: GPTQ groups would straddle ranks.
  const ModelConfig c = llama_shape(40, 5120, 13824, 40, 40, 32000);
  EXPECT_NO_THROW(rank_weights(c, 4, parse_weight_format("int4")));  // 3456 = 27 * 128
  expect_error([&] { rank_weights(c, 8, parse_weight_format("int4")); }, {"128", "1728"});
}

TEST(KvPool, FractionOfFreeMemoryFloored) {
  EXPECT_EQ(kv_pool_bytes(1000, 0.9), 900);
  EXPECT_EQ(kv_pool_bytes(1001, 0.5), 500);  // 500.5 floors
  EXPECT_EQ(kv_pool_bytes(0, 1.0), 0);
  expect_error([] { kv_pool_bytes(-1, 0.9); }, {"-1"});
  expect_error([] { kv_pool_bytes(1000, 0.0); }, {"(0, 1]", "0"});
  expect_error([] { kv_pool_bytes(1000, 1.5); }, {"1.5"});
}

TEST(KvBlocks, WholeBlocksThatFit) {
  // 70B TP 1 bf16 blocks of 16 tokens: 5242880 B each; 10 blocks and one byte short of 11.
  const KvLayout kv = kv_layout(llama31_70b(), 1, KvDtype::kBf16, 16);
  EXPECT_EQ(kv_blocks_that_fit(11 * 5242880 - 1, kv), 10);
  EXPECT_EQ(kv_blocks_that_fit(11 * 5242880, kv), 11);
  EXPECT_EQ(kv_blocks_that_fit(0, kv), 0);
  expect_error([&] { kv_blocks_that_fit(-5, kv); }, {"-5"});
  KvLayout broken = kv;
  broken.block_size = 0;
  expect_error([&] { kv_blocks_that_fit(100, broken); }, {"block_size 0"});
}

TEST(KvBlocks, BlocksPerSequenceRoundUp) {
  const KvLayout kv = kv_layout(llama31_70b(), 1, KvDtype::kBf16, 16);
  EXPECT_EQ(kv_blocks_for_tokens(8192, kv), 512);  // 8192 / 16
  EXPECT_EQ(kv_blocks_for_tokens(8193, kv), 513);  // one token more takes a whole block
  EXPECT_EQ(kv_blocks_for_tokens(0, kv), 0);
  expect_error([&] { kv_blocks_for_tokens(-1, kv); }, {"-1"});
  expect_error([] { kv_layout(llama31_70b(), 1, KvDtype::kBf16, 0); }, {"block size", "0"});
}

}  // namespace
}  // namespace shardserve::model
