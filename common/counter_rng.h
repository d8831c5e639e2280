#pragma once
// A counter-based random stream: the n-th draw of a request is a pure function of
// (seed, position, stream). Sampling therefore reproduces a seeded request exactly no matter
// how it was batched, preempted and recomputed, or which rank drew it.
#include <cstdint>

namespace shardserve {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 53 random bits. `stream` separates independent draws at one position
// (speculative decoding needs several).
inline double counter_uniform(uint64_t seed, int64_t position, uint32_t stream = 0) {
  const uint64_t h = splitmix64(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(position))) +
                                stream);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

}  // namespace shardserve
