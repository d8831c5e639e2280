#pragma once
// Which slice of the model one rank of a tensor-parallel group holds (Megatron layout):
// attention heads and FFN columns split evenly; KV heads split when there are at least as
// many as ranks, else replicated so that each rank holds the one KV head its query heads use
// (vLLM's rule); the vocabulary split in contiguous ranges for the embedding and LM head.
#include <cstdint>

#include "model/model_config.h"

namespace shardserve::worker {

struct TensorParallelShard {
  int rank = 0;
  int size = 1;

  int64_t heads = 0;          // query heads on this rank
  int64_t head_begin = 0;     // first global query head
  int64_t kv_heads = 0;       // KV heads on this rank
  int64_t kv_head_begin = 0;  // first global KV head
  int64_t ffn = 0;            // intermediate columns on this rank
  int64_t ffn_begin = 0;
  int64_t vocab = 0;          // vocabulary rows on this rank (the last rank may hold fewer)
  int64_t vocab_begin = 0;
  int64_t vocab_per_rank = 0;  // ceil(vocab / size): every rank's stride in a gathered row
};

// Throws an Error naming the sizes when `size` cannot split the model evenly.
TensorParallelShard make_shard(const model::ModelConfig& config, int rank, int size);

}  // namespace shardserve::worker
