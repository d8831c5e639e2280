#pragma once
// The `plan` command line: flags to a PlanRequest, then the reports. A function rather than
// main() so tests drive it with argument lists and read what it prints.
#include <iosfwd>

namespace shardserve::planner {

// Returns the process exit status: 0 on success, non-zero after printing the error to `err`.
int run_plan_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace shardserve::planner
