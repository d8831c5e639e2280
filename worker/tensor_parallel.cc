#include "worker/tensor_parallel.h"

#include <algorithm>

#include "common/error.h"

namespace shardserve::worker {

TensorParallelShard make_shard(const model::ModelConfig& c, int rank, int size) {
  require(size >= 1 && rank >= 0 && rank < size, "tensor parallel rank {} of {} is invalid", rank,
          size);
  require(c.num_attention_heads % size == 0,
          "tensor parallel size {} does not divide num_attention_heads {}", size,
          c.num_attention_heads);
  require(c.intermediate_size % size == 0,
          "tensor parallel size {} does not divide intermediate_size {}", size,
          c.intermediate_size);
  TensorParallelShard s;
  s.rank = rank;
  s.size = size;
  s.heads = c.num_attention_heads / size;
  s.head_begin = rank * s.heads;
  if (c.num_key_value_heads >= size) {
    require(c.num_key_value_heads % size == 0,
            "tensor parallel size {} does not divide num_key_value_heads {}", size,
            c.num_key_value_heads);
    s.kv_heads = c.num_key_value_heads / size;
    s.kv_head_begin = rank * s.kv_heads;
  } else {
    require(size % c.num_key_value_heads == 0,
            "tensor parallel size {} is not a multiple of num_key_value_heads {}", size,
            c.num_key_value_heads);
    s.kv_heads = 1;
    s.kv_head_begin = rank / (size / c.num_key_value_heads);
  }
  s.ffn = c.intermediate_size / size;
  s.ffn_begin = rank * s.ffn;
  s.vocab_per_rank = (c.vocab_size + size - 1) / size;
  s.vocab_begin = std::min<int64_t>(rank * s.vocab_per_rank, c.vocab_size);
  s.vocab = std::min<int64_t>(s.vocab_per_rank, c.vocab_size - s.vocab_begin);
  return s;
}

}  // namespace shardserve::worker
