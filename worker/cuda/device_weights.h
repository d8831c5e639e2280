#pragma once
// One rank's LLaMA weights on the GPU: the same slices and fusions as worker/llama_weights.h
// (q/k/v fused into one matrix, gate/up into another, the rank's heads / FFN columns /
// vocabulary rows), read straight from the memory-mapped checkpoint and stored as bf16
// (matrices) or float32 (norm weights). bf16 checkpoints are copied bit for bit; fp16 and
// float32 ones are rounded to bf16 (round to nearest even).
//
// All weights live in one device allocation, sized before anything is copied: a model that
// does not fit fails at once with an Error saying how much it needs and how much is free.
#include <cstddef>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/cuda/ops.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "worker/tensor_parallel.h"

namespace shardserve::worker::cuda {

using kernels::cuda::bf16;

struct DeviceLayerWeights {
  const float* input_norm = nullptr;  // [hidden]
  const float* post_norm = nullptr;   // [hidden]
  const bf16* qkv = nullptr;          // [(heads + 2 * kv_heads) * head_dim, hidden]
  const bf16* o = nullptr;            // [hidden, heads * head_dim]
  const bf16* gate_up = nullptr;      // [2 * ffn, hidden]
  const bf16* down = nullptr;         // [hidden, ffn]
};

class DeviceWeights {
 public:
  DeviceWeights(const model::Checkpoint& checkpoint, const model::ModelConfig& config,
                const TensorParallelShard& shard);

  const bf16* embedding() const { return embedding_; }  // [shard.vocab, hidden]
  const bf16* lm_head() const { return lm_head_; }      // [shard.vocab, hidden] (= embedding if tied)
  const float* final_norm() const { return final_norm_; }
  const DeviceLayerWeights& layer(int64_t l) const { return layers_[l]; }
  std::size_t bytes() const { return storage_.bytes(); }

  // Bytes the weights of `shard` take on the device (what the constructor will allocate).
  static std::size_t required_bytes(const model::ModelConfig& config,
                                    const TensorParallelShard& shard);

 private:
  kernels::cuda::DeviceBuffer storage_;
  const bf16* embedding_ = nullptr;
  const bf16* lm_head_ = nullptr;
  const float* final_norm_ = nullptr;
  std::vector<DeviceLayerWeights> layers_;
};

}  // namespace shardserve::worker::cuda
