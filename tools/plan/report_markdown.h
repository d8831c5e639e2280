#pragma once
// The human report: markdown tables, one per question an operator asks (what fits, how many
// users, how fast, what TP costs, what precision buys, what speculation buys).
#include <optional>
#include <string>

#include "tools/plan/comparison.h"
#include "tools/plan/plan.h"

namespace shardserve::planner {

std::string render_markdown(const Plan& plan, const std::optional<Comparison>& comparison);

}  // namespace shardserve::planner
