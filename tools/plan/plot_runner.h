#pragma once
// Draws the plots by running plot_plan.py (matplotlib) on the plan's JSON: plotting stays in a
// packaged library, and the C++ side only hands over numbers it already computed.
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace shardserve::planner {

// Writes <dir>/plan.json and runs `<python> <script> <dir>/plan.json <dir> <format>`; throws
// when the script cannot be started or exits non-zero. `python` is looked up in PATH when it
// has no slash (Debian's python3-matplotlib is for /usr/bin/python3, which a pyenv or venv
// python3 earlier in PATH does not see). `format` is png or svg.
void write_plots(const nlohmann::json& plan_json, const std::filesystem::path& dir,
                 const std::filesystem::path& script, const std::string& python,
                 const std::string& format);

}  // namespace shardserve::planner
