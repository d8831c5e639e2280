#pragma once
// The machine-readable report: every number of the markdown report, in bytes, seconds and
// FLOP/s (no display units), plus the series plot_plan.py draws, so scripts and plots never
// redo the arithmetic.
#include <optional>

#include <nlohmann/json.hpp>

#include "tools/plan/comparison.h"
#include "tools/plan/plan.h"

namespace shardserve::planner {

nlohmann::json plan_to_json(const Plan& plan, const std::optional<Comparison>& comparison);

}  // namespace shardserve::planner
