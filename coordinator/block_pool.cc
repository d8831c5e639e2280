#include "coordinator/block_pool.h"

#include "common/error.h"

namespace shardserve::coordinator {

BlockPool::BlockPool(int32_t num_blocks)
    : ref_count_(num_blocks, 0),
      hash_of_(num_blocks),
      lru_prev_(num_blocks, -1),
      lru_next_(num_blocks, -1),
      in_lru_(num_blocks, false) {
  require(num_blocks >= 1, "block pool: num_blocks={} must be at least 1", num_blocks);
  // Descending so that a fresh pool hands out 0, 1, 2, ...: plans are easy to read in tests.
  empty_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) empty_.push_back(b);
}

std::vector<int32_t> BlockPool::allocate(int32_t n) {
  require(n >= 0 && n <= num_free(), "block pool: allocate({}) with {} free blocks", n,
          num_free());
  std::vector<int32_t> out;
  out.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    int32_t b;
    if (!empty_.empty()) {
      b = empty_.back();
      empty_.pop_back();
    } else {
      b = evict_lru_head();
    }
    ref_count_[b] = 1;
    out.push_back(b);
  }
  return out;
}

void BlockPool::retain(int32_t block) {
  require(block >= 0 && block < num_blocks(), "block pool: retain of block {} out of range",
          block);
  if (ref_count_[block] == 0) {
    // Only cached blocks are reachable while free (through lookup); an empty one is not.
    require(in_lru_[block], "block pool: retain of free block {} that is not cached", block);
    lru_remove(block);
  }
  ++ref_count_[block];
}

void BlockPool::release(int32_t block) {
  require(block >= 0 && block < num_blocks(), "block pool: release of block {} out of range",
          block);
  require(ref_count_[block] > 0, "block pool: block {} released while already free", block);
  if (--ref_count_[block] > 0) return;
  if (hash_of_[block])
    lru_push_back(block);
  else
    empty_.push_back(block);
}

std::optional<int32_t> BlockPool::lookup(const BlockHash& hash) const {
  auto it = cached_.find(hash);
  if (it == cached_.end()) return std::nullopt;
  return it->second;
}

bool BlockPool::register_hash(int32_t block, const BlockHash& hash) {
  require(block >= 0 && block < num_blocks() && ref_count_[block] > 0,
          "block pool: register_hash on block {} that is not referenced", block);
  if (hash_of_[block]) return *hash_of_[block] == hash;
  if (!cached_.emplace(hash, block).second) return false;
  hash_of_[block] = hash;
  return true;
}

std::optional<int32_t> BlockPool::next_eviction() const {
  if (!empty_.empty() || lru_head_ < 0) return std::nullopt;
  return lru_head_;
}

void BlockPool::lru_push_back(int32_t b) {
  lru_prev_[b] = lru_tail_;
  lru_next_[b] = -1;
  if (lru_tail_ >= 0)
    lru_next_[lru_tail_] = b;
  else
    lru_head_ = b;
  lru_tail_ = b;
  in_lru_[b] = true;
  ++lru_size_;
}

void BlockPool::lru_remove(int32_t b) {
  const int32_t p = lru_prev_[b], n = lru_next_[b];
  if (p >= 0)
    lru_next_[p] = n;
  else
    lru_head_ = n;
  if (n >= 0)
    lru_prev_[n] = p;
  else
    lru_tail_ = p;
  lru_prev_[b] = lru_next_[b] = -1;
  in_lru_[b] = false;
  --lru_size_;
}

int32_t BlockPool::evict_lru_head() {
  const int32_t b = lru_head_;
  lru_remove(b);
  cached_.erase(*hash_of_[b]);
  hash_of_[b].reset();
  ++evictions_;
  return b;
}

void BlockPool::check_invariants() const {
  const int32_t n = num_blocks();
  std::vector<int> seen_empty(n, 0);
  for (int32_t b : empty_) {
    require(b >= 0 && b < n, "block pool: empty list holds out-of-range block {}", b);
    require(++seen_empty[b] == 1, "block pool: block {} is on the empty list twice", b);
    require(ref_count_[b] == 0, "block pool: block {} is on the empty list with ref_count {}", b,
            ref_count_[b]);
    require(!hash_of_[b], "block pool: block {} is on the empty list but cached", b);
  }
  int32_t walked = 0;
  for (int32_t b = lru_head_, prev = -1; b >= 0; prev = b, b = lru_next_[b]) {
    require(++walked <= n, "block pool: LRU list has a cycle");
    require(lru_prev_[b] == prev, "block pool: LRU links broken at block {}", b);
    require(in_lru_[b] && ref_count_[b] == 0 && hash_of_[b],
            "block pool: LRU holds block {} that is not free and cached", b);
  }
  require(walked == lru_size_, "block pool: LRU size {} but {} linked", lru_size_, walked);
  int32_t free_blocks = 0;
  for (int32_t b = 0; b < n; ++b) {
    require(ref_count_[b] >= 0, "block pool: block {} has ref_count {}", b, ref_count_[b]);
    if (ref_count_[b] == 0) {
      ++free_blocks;
      require(seen_empty[b] + (in_lru_[b] ? 1 : 0) == 1,
              "block pool: free block {} is on {} free lists, not exactly one", b,
              seen_empty[b] + (in_lru_[b] ? 1 : 0));
    } else {
      require(!seen_empty[b] && !in_lru_[b], "block pool: referenced block {} is on a free list",
              b);
    }
    if (hash_of_[b]) {
      auto it = cached_.find(*hash_of_[b]);
      require(it != cached_.end() && it->second == b,
              "block pool: block {} has a hash the cache map does not point back from", b);
    }
  }
  require(free_blocks == num_free(), "block pool: {} blocks have ref_count 0, free count says {}",
          free_blocks, num_free());
  for (const auto& [hash, b] : cached_)
    require(hash_of_[b] && *hash_of_[b] == hash,
            "block pool: cache map names block {} whose own hash differs", b);
}

}  // namespace shardserve::coordinator
