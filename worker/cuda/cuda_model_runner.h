#pragma once
// The forward pass of one tensor-parallel rank on the GPU, with the contract of the CPU
// reference (worker/model_runner.h): a step plan in, the requested positions' logits out.
//
// Device memory, in the order it is taken at construction:
//   1. the weights (worker/cuda/device_weights.h), one allocation, bf16 matrices;
//   2. the activations of the largest step (options.max_tokens_per_step tokens,
//      options.max_logits_per_step logit rows), the attention split workspace and the
//      cuBLASLt workspace;
//   3. the paged KV pool: options.num_kv_blocks blocks if set, else as many as fit in
//      options.kv_memory_fraction of the memory still free. memory() reports every figure for
//      the coordinator (the number of KV blocks is what it plans with).
// Any of these that does not fit throws an Error saying what needed how much and how much was
// free.
//
// One step: the plan's int32 inputs (tokens, positions, KV slots, block tables, logit rows)
// are packed into pinned memory and sent in one copy; then, on the runner's stream:
// embedding -> per layer [qkv GEMM, RoPE, KV write, paged attention, o GEMM, (all-reduce),
// add+RMSNorm, gate_up GEMM, SwiGLU, down GEMM, (all-reduce), add+RMSNorm] -> gather of the
// sampled rows -> LM head GEMM (float32 logits) -> (all-gather) -> one copy to the host.
// Residual stream and projection outputs are float32, GEMM inputs bf16 (kernels/cuda/ops.h).
//
// Tensor parallelism: with a group of more than one rank the collective must work on device
// float32 buffers (comm::NcclCollective); the runner synchronises its stream before each
// collective. With one rank no collective is called.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/collective.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "messages/step_plan.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "worker/cuda/device_weights.h"
#include "worker/cuda/step_runner.h"
#include "worker/model_runner.h"
#include "worker/tensor_parallel.h"

namespace shardserve::worker::cuda {

struct CudaRunnerOptions {
  int device = 0;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;          // > 0: exactly this many; 0: from kv_memory_fraction
  double kv_memory_fraction = 0.9;    // of the device memory free after weights + activations
  int64_t max_tokens_per_step = 8192;
  int64_t max_logits_per_step = 1024;
  std::size_t attention_workspace_bytes = std::size_t{64} << 20;
};

// Reported to the coordinator at start-up.
struct CudaMemoryReport {
  std::size_t total_bytes = 0;            // the device's memory
  std::size_t free_at_start_bytes = 0;    // free before the runner took anything
  std::size_t weights_bytes = 0;
  std::size_t activation_bytes = 0;       // activations + workspaces
  std::size_t kv_bytes = 0;
  std::size_t kv_bytes_per_block = 0;     // all layers, K and V
  int64_t num_kv_blocks = 0;
  int64_t block_size = 0;
};

class CudaModelRunner final : public StepRunner {
 public:
  CudaModelRunner(model::ModelConfig config, TensorParallelShard shard,
                  const model::Checkpoint& checkpoint, CudaRunnerOptions options,
                  comm::Collective& group);
  ~CudaModelRunner() override;

  StepLogits forward(const messages::StepPlan& plan) override;
  int64_t num_kv_blocks() const override { return memory_.num_kv_blocks; }
  int64_t block_size() const override { return options_.block_size; }

  const CudaMemoryReport& memory() const { return memory_; }
  const model::ModelConfig& config() const { return config_; }
  cudaStream_t stream() const { return stream_.get(); }

  // Bytes of one KV block (all layers, K and V) for this rank.
  static std::size_t kv_bytes_per_block(const model::ModelConfig& config,
                                        const TensorParallelShard& shard, int64_t block_size);

 private:
  void validate(const messages::StepPlan& plan) const;
  void all_reduce(float* data, int64_t count);
  kernels::cuda::PagedKvPool pool(int64_t layer) const;

  model::ModelConfig config_;
  TensorParallelShard shard_;
  CudaRunnerOptions options_;
  comm::Collective& group_;
  CudaMemoryReport memory_;
  int sm_count_ = 0;
  int64_t block_table_capacity_ = 0;

  kernels::cuda::Stream stream_;
  std::unique_ptr<DeviceWeights> weights_;
  std::unique_ptr<kernels::cuda::GemmBf16> gemm_;
  kernels::cuda::DeviceBuffer inv_freq_;  // float [head_dim / 2]
  // Activations, sized for max_tokens_per_step (T) and max_logits_per_step (R).
  kernels::cuda::DeviceBuffer residual_;  // float [T, hidden]
  kernels::cuda::DeviceBuffer normed_;    // bf16 [T, hidden]
  kernels::cuda::DeviceBuffer qkv_;       // bf16 [T, (heads + 2 kv_heads) * head_dim]
  kernels::cuda::DeviceBuffer attn_;      // bf16 [T, heads * head_dim]
  kernels::cuda::DeviceBuffer proj_;      // float [T, hidden]
  kernels::cuda::DeviceBuffer gate_up_;   // bf16 [T, 2 * ffn]
  kernels::cuda::DeviceBuffer act_;       // bf16 [T, ffn]
  kernels::cuda::DeviceBuffer head_in_;   // bf16 [R, hidden]
  kernels::cuda::DeviceBuffer logits_;    // float [R, vocab_per_rank]
  kernels::cuda::DeviceBuffer gathered_;  // float [group, R, vocab_per_rank] (TP > 1)
  kernels::cuda::DeviceBuffer attn_workspace_;
  // int32 step inputs: device copy and pinned host staging, same layout (see forward()).
  kernels::cuda::DeviceBuffer inputs_;
  kernels::cuda::PinnedBuffer inputs_host_;
  kernels::cuda::PinnedBuffer logits_host_;  // float [group, R, vocab_per_rank]
  kernels::cuda::DeviceBuffer kv_;           // [layers, 2, blocks, block_size, kv_heads, head_dim]
};

}  // namespace shardserve::worker::cuda
