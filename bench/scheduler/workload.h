#pragma once
// The simulated traffic: seeded, so every run of the benchmark sees the same requests. Lengths
// are log-uniform (as many short requests as long ones per doubling, the skew that makes a
// static batch wait for its longest member); arrivals are Poisson or all at time zero.
// The random numbers come from a counter-based generator written here rather than from
// <random>'s distributions, whose output differs between standard libraries.
#include <cstdint>
#include <vector>

namespace shardserve::bench {

struct SimRequest {
  int32_t index = 0;
  double arrival_s = 0;
  int32_t prompt_len = 0;
  int32_t output_len = 0;  // max_tokens, generated in full (ignore_eos)
};

struct WorkloadSpec {
  int32_t num_requests = 2000;
  int32_t prompt_min = 16, prompt_max = 2048;
  int32_t output_min = 8, output_max = 1024;
  double rate_per_s = 0;  // Poisson arrivals; 0: all at time zero (offline)
  uint64_t seed = 1;
};

std::vector<SimRequest> make_workload(const WorkloadSpec& spec);

}  // namespace shardserve::bench
