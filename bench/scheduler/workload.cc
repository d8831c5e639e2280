#include "bench/scheduler/workload.h"

#include <cmath>

namespace shardserve::bench {
namespace {

// Uniform in (0, 1) from a 64-bit mix of (seed, stream, counter).
double uniform01(uint64_t seed, uint64_t stream, uint64_t counter) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + stream * 0xc2b2ae3d27d4eb4fULL + counter;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return (static_cast<double>(x >> 11) + 0.5) / 9007199254740992.0;  // 2^53
}

int32_t log_uniform(double u, int32_t lo, int32_t hi) {
  const double v = std::exp(std::log(lo) + u * (std::log(hi + 1.0) - std::log(lo)));
  return std::min(hi, std::max(lo, static_cast<int32_t>(v)));
}

}  // namespace

std::vector<SimRequest> make_workload(const WorkloadSpec& spec) {
  std::vector<SimRequest> out;
  out.reserve(spec.num_requests);
  double t = 0;
  for (int32_t i = 0; i < spec.num_requests; ++i) {
    SimRequest r;
    r.index = i;
    if (spec.rate_per_s > 0) t += -std::log(uniform01(spec.seed, 0, i)) / spec.rate_per_s;
    r.arrival_s = t;
    r.prompt_len = log_uniform(uniform01(spec.seed, 1, i), spec.prompt_min, spec.prompt_max);
    r.output_len = log_uniform(uniform01(spec.seed, 2, i), spec.output_min, spec.output_max);
    out.push_back(r);
  }
  return out;
}

}  // namespace shardserve::bench
