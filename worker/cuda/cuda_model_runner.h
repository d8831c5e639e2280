#pragma once
// The forward pass of one tensor-parallel rank on the GPU, with the contract of the CPU
// reference (worker/model_runner.h): a step plan in, the requested positions' logits out.
//
// Device memory, in the order it is taken at construction:
//   1. the weights (worker/cuda/device_weights.h), one allocation, bf16 or 4-bit matrices;
//   2. the activations of the largest step (options.max_tokens_per_step tokens,
//      options.max_logits_per_step logit rows), the attention split workspace, the cuBLASLt
//      workspace and (tp 1) the device sampler's inputs and workspace (sample_rows for
//      options.sampling_rows_per_launch rows: ~24 bytes x rows x vocab, about 380 MiB for
//      128 rows of a 128k vocabulary);
//   3. the paged KV pool: options.num_kv_blocks blocks if set, else as many as fit in
//      options.kv_memory_fraction of the memory still free. memory() reports every figure for
//      the coordinator (the number of KV blocks is what it plans with).
// Any of these that does not fit throws an Error saying what needed how much and how much was
// free.
//
// One step: the plan's int32 inputs (tokens, positions, KV slots, block tables, logit rows)
// are packed into pinned memory and sent in one copy; then, on the runner's stream:
// embedding -> per layer [qkv GEMM, RoPE, KV write, paged attention (decode kernel for the
// single-token sequences, tensor-core prefill kernel for the chunks), o GEMM, (all-reduce),
// add+RMSNorm, gate_up GEMM, SwiGLU, down GEMM, (all-reduce), add+RMSNorm] -> gather of the
// sampled rows -> LM head GEMM (float32 logits) -> (all-gather) -> one copy to the host. At
// tp 1 the logits can instead be sampled where they are (forward_greedy, forward_sampled): one
// token and logprob per row come back.
// Residual stream and projection outputs are float32, GEMM inputs bf16 (kernels/cuda/ops.h).
// 4-bit projections go through kernels/cuda/quant_gemm.h (decode kernel up to
// kW4DecodeMaxRows tokens, the tiled tensor-core kernels up to w4_matmul_max_tiled_rows of the
// group size, dequantize + cuBLASLt above).
//
// CUDA graphs (options.cuda_graphs, TP = 1): a decode step is padded to its power-of-two bucket
// (padding tokens write no KV, their logit rows are dropped), so every launch of the step has
// the same device addresses and shapes; the bucket's first step runs eagerly and is then
// captured, later steps of the bucket (and attention split) replay the graph. The copies in
// and out stay outside the graph.
//
// Tensor parallelism: with a group of more than one rank the collective must work on device
// float32 buffers (comm::NcclCollective); the runner synchronises its stream before each
// collective. With one rank no collective is called.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <tuple>
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
  // Decode steps (every sequence 1 token, 1 logit row) of up to kMaxGraphBatch sequences at
  // TP = 1: padded to the next power of two and replayed from a CUDA graph captured once per
  // (bucket, attention split).
  bool cuda_graphs = false;
  // forward_sampled: rows per sample_rows launch (its workspace grows with rows x vocab) and the
  // int32 penalty-history entries one launch uploads (raised to what one row can need,
  // 3 x min(vocab, max positions)). A step beyond either is sampled in several launches.
  int64_t sampling_rows_per_launch = 128;
  int64_t sampling_history_ints = int64_t{1} << 22;
};

inline constexpr int64_t kMaxGraphBatch = 256;

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
  // Random weights of the config's shape (benchmarks of full-size models without a checkpoint).
  CudaModelRunner(model::ModelConfig config, TensorParallelShard shard,
                  const RandomWeightsSpec& random, CudaRunnerOptions options,
                  comm::Collective& group);
  ~CudaModelRunner() override;

  StepLogits forward(const messages::StepPlan& plan) override;
  // At tp = 1 the logits stay on the GPU and are sampled there: R x 8 (sampled) or 12 (greedy)
  // bytes back instead of R x vocab x 4 (at tp > 1 each rank holds a slice of the vocabulary).
  bool samples_on_device() const override { return group_.size() == 1; }
  // Argmax and log-softmax (kernels/cuda/sampling.cu, log_softmax.cu).
  std::vector<DeviceSample> forward_greedy(const messages::StepPlan& plan) override;
  // kernels::cuda::sample_rows after the forward pass (after the graph replay of a decode
  // step), in launches of at most sampling_rows_per_launch rows and sampling_history_ints
  // history entries.
  std::vector<DeviceSample> forward_sampled(const messages::StepPlan& plan,
                                            const DeviceSamplingInputs& inputs) override;
  int64_t num_kv_blocks() const override { return memory_.num_kv_blocks; }
  int64_t block_size() const override { return options_.block_size; }

  const CudaMemoryReport& memory() const { return memory_; }
  const DeviceWeights& weights() const { return *weights_; }
  // Turns decode graphs on or off (benchmarks compare both on one set of weights).
  void set_cuda_graphs(bool on) { options_.cuda_graphs = on; }
  const model::ModelConfig& config() const { return config_; }
  cudaStream_t stream() const { return stream_.get(); }

  // Bytes of one KV block (all layers, K and V) for this rank.
  static std::size_t kv_bytes_per_block(const model::ModelConfig& config,
                                        const TensorParallelShard& shard, int64_t block_size);

 private:
  using WeightsFactory = std::function<std::unique_ptr<DeviceWeights>()>;
  CudaModelRunner(model::ModelConfig config, TensorParallelShard shard, const WeightsFactory& load,
                  CudaRunnerOptions options, comm::Collective& group);
  void validate(const messages::StepPlan& plan) const;
  // The forward pass up to this rank's logits in logits_ (rows in plan order); returns the
  // number of logit rows. The stream is not synchronised.
  int64_t run_to_logits(const messages::StepPlan& plan);
  // The graph bucket of a decode step (0: run eagerly).
  int64_t graph_bucket(const messages::StepPlan& plan) const;
  // Which attention kernel takes which tokens of a step (device pointers into inputs_).
  struct StepAttention {
    kernels::cuda::AttentionBatch decode;     // to paged_attention: single tokens (all tokens
                                              // in a step without prefill chunks)
    kernels::cuda::PrefillSequences prefill;  // to paged_prefill_attention (seqs 0: none)
    kernels::cuda::AttentionSplit split;      // of the decode kernel's tokens
  };
  // Embedding to LM head for T packed tokens and R logit rows (inputs_ already holds them).
  void enqueue_step(int64_t T, int64_t R, const StepAttention& attention);
  // y = x · Wᵀ for a dense or 4-bit projection W [n, k] (x bf16 [m, k]; y [m, n] bf16 or
  // float).
  void project(const bf16* x, int64_t m, int64_t n, int64_t k, const DeviceLinear& w, void* y,
               kernels::cuda::GemmOut out, cudaStream_t stream);
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
  // 4-bit projections: the dense path's bf16 copy of the largest one (only when a step can
  // exceed the tiled kernels' rows: DeviceWeights::w4_uses_dense) and the other paths'
  // workspace (split-K partial sums, act-order x).
  kernels::cuda::DeviceBuffer w4_dense_;
  kernels::cuda::DeviceBuffer w4_partial_;
  // int32 step inputs: device copy and pinned host staging, same layout (see forward()).
  kernels::cuda::DeviceBuffer inputs_;
  kernels::cuda::PinnedBuffer inputs_host_;
  kernels::cuda::PinnedBuffer logits_host_;  // float [group, R, vocab_per_rank]
  // The device samplers' results, packed for the step's row count R (capacity
  // max_logits_per_step): int32 tokens [R], float logprobs [R] (forward_sampled) or float max
  // logits [R] and float lse [R] (forward_greedy).
  kernels::cuda::DeviceBuffer samples_;
  kernels::cuda::PinnedBuffer samples_host_;
  // forward_sampled's inputs for one launch of C = sampling_rows_per_launch rows (pinned
  // staging and device copy, same layout): double uniforms [C] | SamplingRowParams [C] |
  // int32 seen offsets [C + 1] | int32 count offsets [C + 1] | int32 history
  // [sampling_history_ints]: the launch's seen tokens, then its count tokens, then its counts.
  kernels::cuda::DeviceBuffer sampling_inputs_;
  kernels::cuda::PinnedBuffer sampling_inputs_host_;
  kernels::cuda::DeviceBuffer sampling_workspace_;  // sampling_workspace_bytes(C, vocab)
  int64_t sampling_rows_ = 0;     // C
  int64_t sampling_history_ = 0;  // int32 history entries per launch
  kernels::cuda::DeviceBuffer kv_;           // [layers, 2, blocks, block_size, kv_heads, head_dim]
  // Decode graphs by (bucket, attention partition length, splits).
  using GraphKey = std::tuple<int64_t, int32_t, int32_t>;
  std::map<GraphKey, kernels::cuda::CudaGraph> graphs_;

 public:
  std::size_t num_graphs() const { return graphs_.size(); }
};

}  // namespace shardserve::worker::cuda
