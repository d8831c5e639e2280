// The planner's sharding and KV arithmetic against the worker's own objects: the heads and
// vocabulary rows memory_plan counts are the ones worker::make_shard assigns, and a KvCache
// built with kv_blocks_that_fit blocks takes exactly the bytes memory_plan predicts. A separate
// binary so the planner's own tests do not wait on the worker's build.
#include <gtest/gtest.h>

#include "model/memory_plan.h"
#include "tests/planner/test_models.h"
#include "worker/kv_cache.h"
#include "worker/tensor_parallel.h"

namespace shardserve {
namespace {

using planner::testing::llama31_70b;
using planner::testing::llama_shape;

TEST(WorkerAgreement, HeadsAndVocabPerRank) {
  const model::ModelConfig configs[] = {llama31_70b(), llama_shape(2, 256, 512, 4, 2, 1001),
                                        llama_shape(2, 512, 512, 8, 1, 999)};
  for (const model::ModelConfig& c : configs) {
    for (int tp : {1, 2, 4, 8}) {
      if (c.num_attention_heads % tp != 0) continue;
      const model::HeadLayout heads = model::shard_heads(c, tp);
      const model::RankWeights w = model::rank_weights(c, tp, model::parse_weight_format("bf16"));
      for (int rank = 0; rank < tp; ++rank) {
        const worker::TensorParallelShard s = worker::make_shard(c, rank, tp);
        EXPECT_EQ(heads.q_heads_per_rank, s.heads) << "tp " << tp << " rank " << rank;
        EXPECT_EQ(heads.kv_heads_per_rank, s.kv_heads) << "tp " << tp << " rank " << rank;
        // memory_plan counts the widest vocabulary shard, the one every rank is sized for.
        EXPECT_GE(w.embedding_bytes, s.vocab * c.hidden_size * 2);
        EXPECT_EQ(w.embedding_bytes, s.vocab_per_rank * c.hidden_size * 2);
      }
    }
  }
}

TEST(WorkerAgreement, KvCacheTakesThePredictedBytes) {
  // The CPU worker stores K and V in fp32.
  const model::ModelConfig c = llama_shape(2, 256, 512, 4, 2, 1000);
  for (int tp : {1, 2, 4}) {
    const model::KvLayout layout = model::kv_layout(c, tp, model::KvDtype::kFp32, 16);
    const int64_t free_bytes = 10'000'000;
    const int64_t pool = model::kv_pool_bytes(free_bytes, 0.9);
    const int64_t blocks = model::kv_blocks_that_fit(pool, layout);
    ASSERT_GT(blocks, 0);
    const worker::TensorParallelShard s = worker::make_shard(c, 0, tp);
    const worker::KvCache cache(c.num_hidden_layers, blocks, layout.block_size, s.kv_heads,
                                c.head_dim);
    EXPECT_EQ(cache.bytes(), blocks * model::kv_bytes_per_block(layout)) << "tp " << tp;
    EXPECT_LE(cache.bytes(), pool);
    EXPECT_GT(cache.bytes() + model::kv_bytes_per_block(layout), pool);  // no whole block left
  }
}

}  // namespace
}  // namespace shardserve
