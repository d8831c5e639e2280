#pragma once
// Draws the plots by running plot_plan.py (matplotlib) on the plan's JSON: plotting stays in a
// packaged library, and the C++ side only hands over numbers it already computed.
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace shardserve::planner {

// Writes <dir>/plan.json and runs `python3 <script> <dir>/plan.json <dir> <format>`; throws
// when the script cannot be started or exits non-zero. `format` is png or svg.
void write_plots(const nlohmann::json& plan_json, const std::filesystem::path& dir,
                 const std::filesystem::path& script, const std::string& format);

}  // namespace shardserve::planner
