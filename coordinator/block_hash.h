#pragma once
// The identity of a full KV block for automatic prefix caching. A block's keys and values
// depend on every token before it, not only on its own tokens, so the identity chains:
// hash(block i) = H(hash(block i-1), tokens of block i). Equal hashes at index i mean equal
// token prefixes through block i, hence interchangeable KV.
// 128 bits because a collision would silently hand one request another's KV: with n distinct
// blocks ever hashed the chance is about n^2 / 2^129. The hash is not cryptographic; isolating
// tenants from crafted collisions would need a per-tenant salt mixed into the root.
#include <cstddef>
#include <cstdint>
#include <span>

namespace shardserve::coordinator {

struct BlockHash {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator==(const BlockHash&, const BlockHash&) = default;
};

// The parent of every request's first block.
BlockHash root_block_hash();

// The hash of a full block holding `tokens` whose predecessor has hash `parent`.
BlockHash hash_block(const BlockHash& parent, std::span<const int32_t> tokens);

struct BlockHashHasher {
  size_t operator()(const BlockHash& h) const { return static_cast<size_t>(h.lo ^ (h.hi >> 1)); }
};

}  // namespace shardserve::coordinator
