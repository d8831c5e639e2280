#pragma once
// The physical KV blocks of one replica: ids 0..num_blocks-1, valid on every rank of the
// replica (each rank holds its own heads' slice of block b), with a reference count per block
// and the prefix cache's hash -> block map.
//
// A block is in exactly one of three states:
//   referenced    ref_count > 0: in the block table of ref_count sequences
//   free, cached  ref_count == 0 but still registered under its hash: its KV is kept and a new
//                 request with that prefix can take it back; kept in LRU order
//   free, empty   ref_count == 0 and no hash
// allocate() takes empty blocks first and evicts cached ones (least recently freed first) only
// when no empty block is left: cached KV is dropped only when memory is actually needed.
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "coordinator/block_hash.h"

namespace shardserve::coordinator {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_count_.size()); }
  // Unreferenced blocks, cached or not: what allocate() can hand out.
  int32_t num_free() const { return static_cast<int32_t>(empty_.size()) + lru_size_; }
  int32_t num_cached() const { return static_cast<int32_t>(cached_.size()); }
  int64_t num_evictions() const { return evictions_; }

  // n blocks with ref_count 1 each; requires n <= num_free().
  std::vector<int32_t> allocate(int32_t n);
  // One more owner of a cached block (a prefix-cache hit); takes it off the LRU when it was free.
  void retain(int32_t block);
  // One owner fewer. At zero the block becomes free; a cached block keeps its KV and hash.
  void release(int32_t block);

  // The block registered under `hash`, if any.
  std::optional<int32_t> lookup(const BlockHash& hash) const;
  // Registers a referenced block whose KV is complete. False, and nothing changes, when the
  // hash already names another block (two requests computed the same block concurrently; the
  // first copy stays the cached one and this one is freed as empty later).
  bool register_hash(int32_t block, const BlockHash& hash);

  int32_t ref_count(int32_t block) const { return ref_count_.at(block); }
  bool is_cached(int32_t block) const { return hash_of_.at(block).has_value(); }
  // Whether an unreferenced cached block would be the next eviction (for tests of LRU order).
  std::optional<int32_t> next_eviction() const;

  // Throws shardserve::Error when the three states above are inconsistent.
  void check_invariants() const;

 private:
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);
  int32_t evict_lru_head();

  std::vector<int32_t> ref_count_;
  std::vector<std::optional<BlockHash>> hash_of_;
  std::unordered_map<BlockHash, int32_t, BlockHashHasher> cached_;
  std::vector<int32_t> empty_;  // a stack: the most recently emptied block is reused first
  // Intrusive doubly linked list over block ids of free cached blocks, head = least recent.
  // O(1) removal matters: every prefix hit on a free cached block takes it out of the middle.
  std::vector<int32_t> lru_prev_, lru_next_;
  std::vector<bool> in_lru_;
  int32_t lru_head_ = -1, lru_tail_ = -1, lru_size_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace shardserve::coordinator
