// `plan`: the capacity planner's executable; everything is in run_plan_cli.
#include <iostream>

#include "tools/plan/cli.h"

int main(int argc, char** argv) {
  return shardserve::planner::run_plan_cli(argc, argv, std::cout, std::cerr);
}
