#pragma once
// Measured next to predicted: a benchmark's numbers beside the planner's roofline for the same
// model, GPU and TP size, as the share of the prediction the implementation achieves.
#include <optional>
#include <string>
#include <vector>

#include "tools/plan/benchmark_result.h"
#include "tools/plan/plan.h"

namespace shardserve::planner {

struct ComparisonRow {
  std::string quantity;  // e.g. "decode ms/token, batch 1"
  std::string at;        // e.g. "context 8192"
  double predicted = 0;
  double measured = 0;
  bool lower_is_better = false;  // times: predicted / measured is the achieved share
  std::optional<double> benchmark_roofline;  // the benchmark's own roofline, when it has one

  // Share of the predicted (roofline) performance achieved: <= 1 for a correct roofline.
  double achieved() const { return lower_is_better ? predicted / measured : measured / predicted; }
};

struct Comparison {
  std::string source;
  std::string gpu;
  std::string date;
  int64_t tp = 1;
  std::vector<ComparisonRow> rows;
  std::vector<std::string> notes;
};

// Predictions come from plan_tp(request, result.tp), whether or not that TP was asked for.
Comparison compare_with_benchmark(const PlanRequest& request, const BenchmarkResult& result);

}  // namespace shardserve::planner
