#pragma once
// The curves behind the plots, computed here so that plot_plan.py only draws: KV memory per GPU
// against context and against batch (with the GPU's KV capacity), speculative speedup against
// acceptance rate, and weight memory by precision.
#include <nlohmann/json.hpp>

#include "tools/plan/plan.h"

namespace shardserve::planner {

nlohmann::json plot_series(const Plan& plan);

}  // namespace shardserve::planner
