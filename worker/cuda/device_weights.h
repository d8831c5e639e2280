#pragma once
// One rank's LLaMA weights on the GPU: the same slices and fusions as worker/llama_weights.h
// (q/k/v fused into one matrix, gate/up into another, the rank's heads / FFN columns /
// vocabulary rows), read straight from the memory-mapped checkpoint.
//
// Each projection is either
//   * dense bf16 [out, in]: bf16 checkpoints are copied bit for bit, fp16 / float32 ones rounded
//     to bf16 (round to nearest even); or
//   * 4-bit (GPTQ / AWQ checkpoints): the rank's slice of each quantized linear is read through
//     model/quant (the CPU path's QuantizedLinearView: the same rows / columns and g_idx as the
//     CPU engine), converted to the CPU kernel's QuantMatrix (act-order columns sorted by group)
//     and from it to the GPU's W4 layout (kernels/cuda/quant_gemm.h). Fused parts (q/k/v,
//     gate/up) stay 4-bit when they share one column order and group layout. A quantized linear
//     that the W4 kernels cannot take (8 bits, uneven groups after act-order slicing, k not a
//     multiple of 64) or whose fused parts differ is dequantized to dense bf16 instead, and
//     listed in dense_fallbacks().
// Norm weights are float32.
//
// All weights live in one device allocation, sized before it is made: a model that does not fit
// fails at once with an Error saying how much it needs and how much is free.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/quant_gemm.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "worker/tensor_parallel.h"

namespace shardserve::worker::cuda {

using kernels::cuda::bf16;

// A projection y = x · Wᵀ, W [out, in]: dense bf16, or 4-bit (w4.codes != null).
struct DeviceLinear {
  const bf16* dense = nullptr;     // [out, in] (null when 4-bit)
  kernels::cuda::W4Weights w4;     // n = out, k = in
  bool quantized() const { return w4.codes != nullptr; }
};

struct DeviceLayerWeights {
  const float* input_norm = nullptr;  // [hidden]
  const float* post_norm = nullptr;   // [hidden]
  DeviceLinear qkv;                   // [(heads + 2 * kv_heads) * head_dim, hidden]
  DeviceLinear o;                     // [hidden, heads * head_dim]
  DeviceLinear gate_up;               // [2 * ffn, hidden]
  DeviceLinear down;                  // [hidden, ffn]
};

// Where a projection / a layer sits in the weights' one allocation (before it exists).
struct LinearOffsets {
  bool w4 = false;
  std::size_t dense = 0, codes = 0, meta = 0, perm = 0;
  bool has_perm = false;
  int64_t n = 0, k = 0, group_size = 0;
};
struct LayerOffsets {
  std::size_t in = 0, post = 0;
  LinearOffsets qkv, o, gate_up, down;
};

// Random weights of the model's shape (benchmarks: no checkpoint needed). Matrices are 4-bit
// with group_size (> 0) or dense bf16 (0); embedding and LM head bf16, norms 1 ± 0.05.
struct RandomWeightsSpec {
  int64_t group_size = 128;
  uint64_t seed = 1;
};

class DeviceWeights {
 public:
  DeviceWeights(const model::Checkpoint& checkpoint, const model::ModelConfig& config,
                const TensorParallelShard& shard);
  DeviceWeights(const model::ModelConfig& config, const TensorParallelShard& shard,
                const RandomWeightsSpec& spec);

  const bf16* embedding() const { return embedding_; }  // [shard.vocab, hidden]
  const bf16* lm_head() const { return lm_head_; }      // [shard.vocab, hidden] (= embedding if tied)
  const float* final_norm() const { return final_norm_; }
  const DeviceLayerWeights& layer(int64_t l) const { return layers_[l]; }
  std::size_t bytes() const { return storage_.bytes(); }
  // Bytes of the largest 4-bit projection dequantized to bf16 (the dense path's scratch), and
  // the largest workspace of the other 4-bit paths for steps of up to max_rows tokens
  // (kernels/cuda/quant_gemm.h); 0 when none is 4-bit.
  std::size_t max_w4_dense_bytes() const { return max_w4_dense_bytes_; }
  std::size_t max_w4_workspace_bytes(int64_t max_rows) const;
  // Whether a step of `rows` tokens takes some 4-bit projection down the dense path (and so
  // needs max_w4_dense_bytes of scratch): beyond the tiled kernels' rows for its group size.
  bool w4_uses_dense(int64_t rows) const { return num_w4_ > 0 && rows > w4_dense_above_rows_; }
  int64_t num_w4_linears() const { return num_w4_; }
  // "model.layers.3.mlp.gate_proj+up_proj: uneven groups ...": quantized linears kept dense.
  const std::vector<std::string>& dense_fallbacks() const { return fallbacks_; }

 private:
  // Makes the pointers once storage_ holds the weights.
  void resolve(std::size_t embed_off, std::size_t head_off, std::size_t norm_off,
               const std::vector<LayerOffsets>& offs);

  kernels::cuda::DeviceBuffer storage_;
  const bf16* embedding_ = nullptr;
  const bf16* lm_head_ = nullptr;
  const float* final_norm_ = nullptr;
  std::vector<DeviceLayerWeights> layers_;
  std::size_t max_w4_dense_bytes_ = 0;
  std::vector<std::pair<int64_t, int64_t>> w4_shapes_;  // distinct [n, k] of the 4-bit linears
  int64_t w4_dense_above_rows_ = std::numeric_limits<int64_t>::max();
  int64_t num_w4_ = 0;
  std::vector<std::string> fallbacks_;
};

}  // namespace shardserve::worker::cuda
