#pragma once
// Block tables per sequence over one BlockPool: how many blocks a sequence needs, giving a new
// sequence its cached prefix, growing a running one, registering its full blocks in the prefix
// cache, and freeing it. Decides nothing about who runs: the scheduler's policies do.
//
// Prefix-caching rule: a block is registered under its chain hash once it is full *and* its KV
// has been computed (after the step that wrote its last slot), never at planning time, so no
// request is ever handed a block whose KV another sequence is still writing in the same step.
// A registered block is never written again: only the slots past a sequence's computed tokens
// are written, and those lie in blocks that are not full yet, which are owned by one sequence.
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "coordinator/block_hash.h"
#include "coordinator/block_pool.h"

namespace shardserve::coordinator {

class KVCacheManager {
 public:
  KVCacheManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching);

  int32_t block_size() const { return block_size_; }
  int32_t num_total_blocks() const { return pool_.num_blocks(); }
  int32_t num_free_blocks() const { return pool_.num_free(); }
  int32_t num_used_blocks() const { return pool_.num_blocks() - pool_.num_free(); }
  bool prefix_caching() const { return prefix_caching_; }
  int32_t blocks_for_tokens(int32_t num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }

  // How many leading blocks of `hashes` the cache holds, at most max_blocks.
  int32_t count_cached_prefix(std::span<const BlockHash> hashes, int32_t max_blocks) const;

  // Admits a sequence that holds no blocks: its table gets the cached blocks for
  // hashes[0..num_cached_blocks) (which count_cached_prefix must have found) and new blocks up
  // to num_tokens + num_lookahead slots. Returns false, changing nothing, when that would leave
  // fewer than keep_free free blocks.
  bool admit(uint64_t seq, std::span<const BlockHash> hashes, int32_t num_cached_blocks,
             int32_t num_tokens, int32_t num_lookahead, int32_t keep_free);

  // Grows a sequence's table to cover num_tokens + num_lookahead slots (lookahead: slots that
  // speculative decoding will write past the tokens scheduled now). False, changing nothing,
  // when the pool has too few free blocks.
  bool allocate_slots(uint64_t seq, int32_t num_tokens, int32_t num_lookahead);

  // Speculative rollback: shrinks the sequence's table to the blocks that num_tokens slots need,
  // releasing the rest last block first (they held only rejected draft tokens' KV: private,
  // never registered). Returns how many were freed.
  int32_t trim(uint64_t seq, int32_t num_tokens);

  // Registers the sequence's blocks that are full and computed (its first num_computed tokens)
  // under hashes[i]; blocks already registered or taken from the cache are skipped.
  void cache_full_blocks(uint64_t seq, std::span<const BlockHash> hashes, int32_t num_computed);

  // Drops the sequence's table. Blocks are released last block first, so that among the
  // prefix-cached ones the tail of a sequence (least likely to be shared) is evicted first.
  void free(uint64_t seq);

  bool has(uint64_t seq) const { return tables_.count(seq) != 0; }
  const std::vector<int32_t>& block_table(uint64_t seq) const;
  const BlockPool& pool() const { return pool_; }

  // Throws shardserve::Error unless every block's ref_count equals the number of tables holding
  // it, no table holds a block twice, and the pool's own invariants hold.
  void check_invariants() const;

 private:
  struct SeqBlocks {
    std::vector<int32_t> table;
    int32_t num_registered = 0;  // leading blocks already in (or taken from) the prefix cache
  };

  int32_t block_size_;
  bool prefix_caching_;
  BlockPool pool_;
  std::unordered_map<uint64_t, SeqBlocks> tables_;
};

}  // namespace shardserve::coordinator
