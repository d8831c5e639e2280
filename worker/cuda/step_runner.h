#pragma once
// What the worker needs of a forward-pass backend, so that it can hold the CPU reference
// (worker::ModelRunner) or the GPU runner (worker::cuda::CudaModelRunner) behind one pointer.
// Proposed to the lead: ModelRunner could derive from this directly; until then CpuStepRunner
// adapts it.
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "messages/step_plan.h"
#include "worker/model_runner.h"

namespace shardserve::worker {

// One logit row sampled on the device: the token and its log-softmax of the raw logits.
struct DeviceSample {
  int32_t token = 0;
  float logprob = 0.0f;
};

// What sampling on the device needs besides the logits, built on the host by
// Sampler::device_inputs from the sampler's own state so that the device draws what
// Sampler::sample would: one entry per logit row of the step, rows in plan order.
struct DeviceSamplingInputs {
  std::vector<messages::SamplingParams> params;  // [rows]: the row's sequence's settings
  std::vector<double> uniforms;                  // [rows]: counter_uniform at the row's position
  // Penalty histories in CSR form (kernels/cuda/ops.h: SamplingHistory): row r's seen tokens
  // are seen_tokens[seen_offsets[r] .. seen_offsets[r + 1]) and its output counts the pairs
  // (count_tokens[i], counts[i]) for i in [count_offsets[r], count_offsets[r + 1]); each token at
  // most once per row; empty for a row without penalties.
  std::vector<int32_t> seen_offsets;   // [rows + 1]
  std::vector<int32_t> seen_tokens;
  std::vector<int32_t> count_offsets;  // [rows + 1]
  std::vector<int32_t> count_tokens;
  std::vector<int32_t> counts;         // [count_tokens.size()]

  int64_t rows() const { return static_cast<int64_t>(params.size()); }
};

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Validates the plan, writes its tokens' K/V and returns the requested logits
  // (worker/model_runner.h: StepLogits, rows in plan order, full vocabulary).
  virtual StepLogits forward(const messages::StepPlan& plan) = 0;
  // Whether forward_greedy() and forward_sampled() are available: a runner whose logits live on
  // a device samples there and copies back one token and logprob per row instead of
  // vocabulary-wide rows (which steps qualify: Sampler::sampling_site).
  virtual bool samples_on_device() const { return false; }
  // forward() followed by the argmax of each logit row, rows in plan order (plain-greedy steps:
  // cheaper than forward_sampled's sort).
  virtual std::vector<DeviceSample> forward_greedy(const messages::StepPlan& plan) {
    fail("forward_greedy (step {}): this runner samples on the host (use forward())",
         plan.step_id);
  }
  // forward() followed by cpu::sample_token's choice for each logit row with the row's
  // parameters, penalty history and uniform from `inputs`, rows in plan order.
  virtual std::vector<DeviceSample> forward_sampled(const messages::StepPlan& plan,
                                                    const DeviceSamplingInputs& /*inputs*/) {
    fail("forward_sampled (step {}): this runner samples on the host (use forward())",
         plan.step_id);
  }
  virtual int64_t num_kv_blocks() const = 0;
  virtual int64_t block_size() const = 0;
};

class CpuStepRunner final : public StepRunner {
 public:
  explicit CpuStepRunner(ModelRunner& runner) : runner_(runner) {}
  StepLogits forward(const messages::StepPlan& plan) override { return runner_.forward(plan); }
  int64_t num_kv_blocks() const override { return runner_.kv_cache().num_blocks(); }
  int64_t block_size() const override { return runner_.kv_cache().block_size(); }

 private:
  ModelRunner& runner_;
};

}  // namespace shardserve::worker
