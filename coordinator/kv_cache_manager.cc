#include "coordinator/kv_cache_manager.h"

#include <algorithm>

#include "common/error.h"

namespace shardserve::coordinator {

KVCacheManager::KVCacheManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching)
    : block_size_(block_size), prefix_caching_(enable_prefix_caching), pool_(num_blocks) {
  require(block_size >= 1, "kv cache: block_size={} must be at least 1", block_size);
}

int32_t KVCacheManager::count_cached_prefix(std::span<const BlockHash> hashes,
                                            int32_t max_blocks) const {
  if (!prefix_caching_) return 0;
  const int32_t limit = std::min<int32_t>(max_blocks, static_cast<int32_t>(hashes.size()));
  int32_t n = 0;
  // The chain makes a miss final: block i+1's hash covers block i's tokens, so the first
  // uncached block ends the usable prefix even if later ones are cached.
  while (n < limit && pool_.lookup(hashes[n])) ++n;
  return n;
}

bool KVCacheManager::admit(uint64_t seq, std::span<const BlockHash> hashes,
                           int32_t num_cached_blocks, int32_t num_tokens, int32_t num_lookahead,
                           int32_t keep_free) {
  require(!has(seq), "kv cache: admit of sequence {} that already holds blocks", seq);
  require(num_cached_blocks >= 0 && num_cached_blocks <= static_cast<int32_t>(hashes.size()),
          "kv cache: admit of sequence {} with {} cached blocks out of {} hashes", seq,
          num_cached_blocks, hashes.size());
  const int32_t needed = blocks_for_tokens(num_tokens + num_lookahead);
  require(needed >= num_cached_blocks,
          "kv cache: sequence {} admits {} cached blocks but needs only {}", seq,
          num_cached_blocks, needed);
  std::vector<int32_t> hits;
  hits.reserve(num_cached_blocks);
  int32_t hits_now_free = 0;  // cached blocks that taking them removes from the free count
  for (int32_t i = 0; i < num_cached_blocks; ++i) {
    auto b = pool_.lookup(hashes[i]);
    require(b.has_value(), "kv cache: sequence {} admits block {} that is not cached", seq, i);
    hits.push_back(*b);
    if (pool_.ref_count(*b) == 0) ++hits_now_free;
  }
  const int32_t fresh = needed - num_cached_blocks;
  if (pool_.num_free() - hits_now_free - fresh < keep_free) return false;
  // Retain hits before allocating: allocate() may evict free cached blocks, and the hits must
  // not be among them.
  for (int32_t b : hits) pool_.retain(b);
  SeqBlocks& s = tables_[seq];
  s.table = std::move(hits);
  s.num_registered = num_cached_blocks;
  auto more = pool_.allocate(fresh);
  s.table.insert(s.table.end(), more.begin(), more.end());
  return true;
}

bool KVCacheManager::allocate_slots(uint64_t seq, int32_t num_tokens, int32_t num_lookahead) {
  auto it = tables_.find(seq);
  require(it != tables_.end(), "kv cache: allocate_slots for unknown sequence {}", seq);
  auto& table = it->second.table;
  const int32_t needed = blocks_for_tokens(num_tokens + num_lookahead);
  const int32_t fresh = needed - static_cast<int32_t>(table.size());
  if (fresh <= 0) return true;
  if (fresh > pool_.num_free()) return false;
  auto more = pool_.allocate(fresh);
  table.insert(table.end(), more.begin(), more.end());
  return true;
}

int32_t KVCacheManager::trim(uint64_t seq, int32_t num_tokens) {
  auto it = tables_.find(seq);
  require(it != tables_.end(), "kv cache: trim of unknown sequence {}", seq);
  SeqBlocks& s = it->second;
  const int32_t keep = blocks_for_tokens(num_tokens);
  require(keep >= s.num_registered,
          "kv cache: trim of sequence {} to {} blocks would drop {} registered blocks", seq, keep,
          s.num_registered);
  int32_t freed = 0;
  while (static_cast<int32_t>(s.table.size()) > keep) {
    pool_.release(s.table.back());
    s.table.pop_back();
    ++freed;
  }
  return freed;
}

void KVCacheManager::cache_full_blocks(uint64_t seq, std::span<const BlockHash> hashes,
                                       int32_t num_computed) {
  if (!prefix_caching_) return;
  auto it = tables_.find(seq);
  require(it != tables_.end(), "kv cache: cache_full_blocks for unknown sequence {}", seq);
  SeqBlocks& s = it->second;
  const int32_t full = std::min<int32_t>(
      {num_computed / block_size_, static_cast<int32_t>(hashes.size()),
       static_cast<int32_t>(s.table.size())});
  for (int32_t i = s.num_registered; i < full; ++i) {
    // A false return means another sequence registered the same content first; this copy
    // stays uncached and returns to the empty list when freed.
    pool_.register_hash(s.table[i], hashes[i]);
  }
  s.num_registered = std::max(s.num_registered, full);
}

void KVCacheManager::free(uint64_t seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  const auto& table = it->second.table;
  for (auto b = table.rbegin(); b != table.rend(); ++b) pool_.release(*b);
  tables_.erase(it);
}

const std::vector<int32_t>& KVCacheManager::block_table(uint64_t seq) const {
  auto it = tables_.find(seq);
  require(it != tables_.end(), "kv cache: no block table for sequence {}", seq);
  return it->second.table;
}

void KVCacheManager::check_invariants() const {
  pool_.check_invariants();
  std::vector<int32_t> owners(pool_.num_blocks(), 0);
  for (const auto& [seq, s] : tables_) {
    std::vector<int32_t> sorted = s.table;
    std::sort(sorted.begin(), sorted.end());
    require(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(),
            "kv cache: sequence {} holds a block twice", seq);
    for (int32_t b : s.table) {
      require(b >= 0 && b < pool_.num_blocks(), "kv cache: sequence {} holds block {}", seq, b);
      ++owners[b];
    }
    require(s.num_registered <= static_cast<int32_t>(s.table.size()),
            "kv cache: sequence {} registered {} of {} blocks", seq, s.num_registered,
            s.table.size());
  }
  for (int32_t b = 0; b < pool_.num_blocks(); ++b)
    require(owners[b] == pool_.ref_count(b), "kv cache: block {} has ref_count {} but {} owners",
            b, pool_.ref_count(b), owners[b]);
}

}  // namespace shardserve::coordinator
