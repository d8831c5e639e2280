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

// A greedy sample of one logit row: the argmax (lowest id on ties) and its log-softmax.
struct GreedyRow {
  int32_t token = 0;
  float logprob = 0.0f;
};

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Validates the plan, writes its tokens' K/V and returns the requested logits
  // (worker/model_runner.h: StepLogits, rows in plan order, full vocabulary).
  virtual StepLogits forward(const messages::StepPlan& plan) = 0;
  // Whether forward_greedy() is available: a runner whose logits live on a device samples a
  // step whose every row is plain greedy (Sampler::plain_greedy) there, and copies back one
  // token and logprob per row instead of vocabulary-wide rows.
  virtual bool samples_greedy_on_device() const { return false; }
  // forward() followed by the argmax of each logit row, rows in plan order.
  virtual std::vector<GreedyRow> forward_greedy(const messages::StepPlan& plan) {
    fail("forward_greedy (step {}): this runner samples on the host (use forward())",
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
