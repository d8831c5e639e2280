#pragma once
// The forward pass of one tensor-parallel rank on the CPU: takes a step plan (several
// sequences, each a prefill chunk or decode tokens at its own positions, with its block table)
// and returns the logits of the positions the plan asks to sample. float32 arithmetic
// throughout; this is the reference every other backend is compared with.
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/collective.h"
#include "messages/step_plan.h"
#include "model/model_config.h"
#include "worker/kv_cache.h"
#include "worker/llama_weights.h"
#include "worker/tensor_parallel.h"

namespace shardserve::worker {

// Logits of the sampled positions, in plan order: for each sequence with num_logits > 0, its
// last num_logits positions. Full vocabulary (gathered over the group) on every rank.
struct StepLogits {
  int64_t rows = 0;
  int64_t vocab = 0;
  std::vector<float> data;  // [rows, vocab]
  const float* row(int64_t r) const { return data.data() + r * vocab; }
};

class ModelRunner {
 public:
  ModelRunner(model::ModelConfig config, TensorParallelShard shard, LlamaWeights weights,
              int64_t num_kv_blocks, int64_t block_size, comm::Collective& group);

  // Validates the plan against the pool and the context length (Error naming the sequence),
  // writes the new tokens' K/V into their blocks and computes the requested logits.
  StepLogits forward(const messages::StepPlan& plan);

  const model::ModelConfig& config() const { return config_; }
  const KvCache& kv_cache() const { return kv_; }

 private:
  void validate(const messages::StepPlan& plan) const;
  void attention_layer(int64_t layer, const messages::StepPlan& plan,
                       const std::vector<int32_t>& positions);
  void mlp_layer(int64_t layer);
  StepLogits lm_head(const messages::StepPlan& plan);

  model::ModelConfig config_;
  TensorParallelShard shard_;
  LlamaWeights weights_;
  KvCache kv_;
  comm::Collective& group_;
  std::vector<float> inv_freq_;
  // Activations of the step, reused across steps to avoid reallocating per layer.
  std::vector<float> residual_, normed_, qkv_, q_, k_, v_, attn_, proj_, gate_up_, act_;
};

}  // namespace shardserve::worker
