#pragma once
// What the worker needs of a forward-pass backend, so that it can hold the CPU reference
// (worker::ModelRunner) or the GPU runner (worker::cuda::CudaModelRunner) behind one pointer.
// Proposed to the lead: ModelRunner could derive from this directly; until then CpuStepRunner
// adapts it.
#include <cstdint>

#include "messages/step_plan.h"
#include "worker/model_runner.h"

namespace shardserve::worker {

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Validates the plan, writes its tokens' K/V and returns the requested logits
  // (worker/model_runner.h: StepLogits, rows in plan order, full vocabulary).
  virtual StepLogits forward(const messages::StepPlan& plan) = 0;
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
