#pragma once
// One rank's float32 copy of a LLaMA checkpoint's weights, read slice by slice from the
// memory-mapped safetensors (a rank reads only its own rows and columns). Projections that
// the forward pass runs back to back are fused at load: q/k/v into one matrix, gate/up into
// another, so each is one matmul.
#include <vector>

#include "model/model_config.h"
#include "model/safetensors.h"
#include "worker/tensor_parallel.h"

namespace shardserve::worker {

struct LayerWeights {
  std::vector<float> input_norm;   // [hidden]
  std::vector<float> qkv;          // [(heads + 2 * kv_heads) * head_dim, hidden] (local heads)
  std::vector<float> o;            // [hidden, heads * head_dim] (local input columns)
  std::vector<float> post_norm;    // [hidden]
  std::vector<float> gate_up;      // [2 * ffn, hidden]: local gate rows, then local up rows
  std::vector<float> down;         // [hidden, ffn] (local input columns)
};

struct LlamaWeights {
  std::vector<float> embedding;    // [shard.vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;   // [hidden]
  std::vector<float> lm_head;      // [shard.vocab, hidden]; empty when tied (the embedding serves)
  const std::vector<float>& head() const { return lm_head.empty() ? embedding : lm_head; }
};

// Throws an Error naming the tensor and file for a missing tensor, a wrong shape or an
// unsupported dtype.
LlamaWeights load_llama_weights(const model::Checkpoint& checkpoint,
                                const model::ModelConfig& config,
                                const TensorParallelShard& shard);

}  // namespace shardserve::worker
