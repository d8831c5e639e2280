#include "tools/plan/comparison.h"

#include <algorithm>
#include <cctype>

#include "common/error.h"

namespace shardserve::planner {
namespace {

constexpr double kTera = 1e12;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::optional<double> lookup(const std::map<int64_t, double>& values, int64_t key) {
  const auto it = values.find(key);
  if (it == values.end()) return std::nullopt;
  return it->second;
}

}  // namespace

Comparison compare_with_benchmark(const PlanRequest& request, const BenchmarkResult& result) {
  Comparison c;
  c.source = result.source;
  c.gpu = result.gpu;
  c.date = result.date;
  c.tp = result.tp;
  if (lower(request.gpu.name).find(lower(result.gpu)) == std::string::npos) {
    c.notes.push_back(fmt::format("the benchmark ran on '{}' but the plan is for {}", result.gpu,
                                  request.gpu.name));
  }
  const TpPlan p = plan_tp(request, result.tp);

  if (result.copy_tbps) {
    c.rows.push_back({"HBM bandwidth TB/s", request.gpu.source,
                      request.gpu.bandwidth_bytes_per_s / kTera, *result.copy_tbps, false, {}});
  }
  if (result.bf16_tflops) {
    c.rows.push_back({"bf16 TFLOP/s", request.gpu.source, request.gpu.flops_per_s / kTera,
                      *result.bf16_tflops, false, {}});
  }
  for (const auto& [context, ms] : result.decode_ms_per_token) {
    const double predicted = decode_step(p.cost, request.gpu, 1, context).seconds() * 1e3;
    std::optional<double> bench_roofline = lookup(result.roofline_ms_per_token, context);
    if (!bench_roofline) bench_roofline = lookup(result.roofline_ms_per_token, 0);
    c.rows.push_back({"decode ms/token, batch 1", fmt::format("context {}", context), predicted, ms,
                      true, bench_roofline});
  }
  if (!result.step_ms_by_batch.empty()) {
    const int64_t context = result.step_context.value_or(request.contexts.front());
    if (!result.step_context) {
      c.notes.push_back(fmt::format(
          "the benchmark does not record the context of step_ms_by_batch; compared at context {} "
          "(the first --context)",
          context));
    }
    for (const auto& [batch, ms] : result.step_ms_by_batch) {
      const double predicted = decode_step(p.cost, request.gpu, batch, context).seconds() * 1e3;
      c.rows.push_back({"decode step ms", fmt::format("batch {}, context {}", batch, context),
                        predicted, ms, true, {}});
    }
  }
  for (const auto& [key, tokens_per_s] : result.prefill_tokens_per_s) {
    int64_t prompt = key;
    if (prompt == 0) {
      prompt = result.prefill_prompt_tokens.value_or(request.prompts.front());
      if (!result.prefill_prompt_tokens) {
        c.notes.push_back(fmt::format(
            "the benchmark does not record its prefill prompt length; compared at {} tokens "
            "(the first --prompt)",
            prompt));
      }
    }
    const StepEstimate step = prefill(p.cost, request.gpu, prompt);
    c.rows.push_back({"prefill tokens/s", fmt::format("prompt {}", prompt),
                      static_cast<double>(prompt) / step.seconds(), tokens_per_s, false, {}});
  }
  return c;
}

}  // namespace shardserve::planner
