#include "coordinator/block_hash.h"

namespace shardserve::coordinator {
namespace {

// A bijective 64-bit finaliser (the splitmix64 output function): one flipped input bit flips
// about half of the output bits, which a plain multiply-add chain would not give.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// One 64-bit lane. The two lanes differ in their seed, so a collision in one is independent
// of a collision in the other. The length is folded in so that a block is never confused with
// a shorter one (all cached blocks are full, but the function stays honest for any span).
uint64_t lane(uint64_t seed, const BlockHash& parent, std::span<const int32_t> tokens) {
  uint64_t h = mix64(seed ^ parent.hi);
  h = mix64(h ^ parent.lo);
  for (int32_t t : tokens) h = mix64(h + seed + static_cast<uint32_t>(t));
  return mix64(h ^ (tokens.size() * 0x9e3779b97f4a7c15ULL));
}

}  // namespace

BlockHash root_block_hash() { return BlockHash{0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL}; }

BlockHash hash_block(const BlockHash& parent, std::span<const int32_t> tokens) {
  return BlockHash{lane(0x3c6ef372fe94f82bULL, parent, tokens),
                   lane(0xa54ff53a5f1d36f1ULL, parent, tokens)};
}

}  // namespace shardserve::coordinator
