// BlockPool and KVCacheManager: reference counts, free lists, the prefix-cache map, LRU
// eviction, the watermark and the hash chain.
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
#include "coordinator/block_hash.h"
#include "coordinator/block_pool.h"
#include "coordinator/kv_cache_manager.h"

namespace shardserve::coordinator {
namespace {

std::vector<BlockHash> chain(const std::vector<int32_t>& tokens, int32_t bs) {
  std::vector<BlockHash> h;
  for (size_t i = 0; i + bs <= tokens.size(); i += bs)
    h.push_back(hash_block(h.empty() ? root_block_hash() : h.back(),
                           std::span<const int32_t>(tokens).subspan(i, bs)));
  return h;
}

TEST(BlockHash, ChainsOverEverythingBefore) {
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<int32_t> b = {9, 2, 3, 4, 5, 6, 7, 8};  // same second block, other first
  auto ha = chain(a, 4), hb = chain(b, 4);
  ASSERT_EQ(ha.size(), 2u);
  EXPECT_NE(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]) << "a block's identity must include its prefix";
  EXPECT_EQ(chain(a, 4)[1], ha[1]) << "deterministic";
  const std::vector<int32_t> swapped = {2, 1, 3, 4};
  EXPECT_NE(chain(swapped, 4)[0], ha[0]) << "order matters";
}

TEST(BlockPool, AllocatesReleasesAndCountsReferences) {
  BlockPool pool(4);
  auto a = pool.allocate(3);
  EXPECT_EQ(a, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_THROW(pool.allocate(2), Error);
  pool.release(a[1]);
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_THROW(pool.release(a[1]), Error) << "a double free is caught";
  pool.check_invariants();
}

TEST(BlockPool, CachedBlocksSurviveReleaseAndAreEvictedLeastRecentFirst) {
  BlockPool pool(3);
  auto b = pool.allocate(3);
  const BlockHash h0{1, 1}, h1{2, 2}, h2{3, 3};
  EXPECT_TRUE(pool.register_hash(b[0], h0));
  EXPECT_TRUE(pool.register_hash(b[1], h1));
  EXPECT_TRUE(pool.register_hash(b[2], h2));
  pool.release(b[1]);  // freed first: least recent
  pool.release(b[0]);
  pool.release(b[2]);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.num_cached(), 3) << "free cached blocks keep their KV";
  EXPECT_EQ(pool.lookup(h0), b[0]);
  // A hit takes a block out of the middle of the LRU.
  pool.retain(b[0]);
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_EQ(pool.next_eviction(), b[1]);
  auto got = pool.allocate(1);
  EXPECT_EQ(got[0], b[1]);
  EXPECT_FALSE(pool.lookup(h1)) << "evicted block leaves the map";
  EXPECT_EQ(pool.num_evictions(), 1);
  pool.check_invariants();
}

TEST(BlockPool, EmptyBlocksAreUsedBeforeEvictingCachedOnes) {
  BlockPool pool(2);
  auto b = pool.allocate(2);
  EXPECT_TRUE(pool.register_hash(b[0], BlockHash{7, 7}));
  pool.release(b[0]);  // cached, free
  pool.release(b[1]);  // empty, free
  auto got = pool.allocate(1);
  EXPECT_EQ(got[0], b[1]);
  EXPECT_TRUE(pool.lookup(BlockHash{7, 7})) << "no eviction while an empty block exists";
}

TEST(BlockPool, DuplicateContentKeepsTheFirstCopy) {
  BlockPool pool(2);
  auto b = pool.allocate(2);
  EXPECT_TRUE(pool.register_hash(b[0], BlockHash{5, 5}));
  EXPECT_FALSE(pool.register_hash(b[1], BlockHash{5, 5}));
  EXPECT_FALSE(pool.is_cached(b[1]));
  pool.release(b[1]);
  EXPECT_THROW(pool.retain(b[1]), Error) << "a free uncached block cannot be a cache hit";
}

TEST(KVCacheManager, AdmitTakesCachedPrefixAndFreshBlocks) {
  KVCacheManager kv(8, 4, true);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  auto h = chain(prompt, 4);
  ASSERT_TRUE(kv.admit(1, h, 0, 10, 0, 0));
  EXPECT_EQ(kv.block_table(1).size(), 3u);
  kv.cache_full_blocks(1, h, 6);  // only block 0 is full and computed
  EXPECT_EQ(kv.count_cached_prefix(h, 10), 1);
  kv.cache_full_blocks(1, h, 10);
  EXPECT_EQ(kv.count_cached_prefix(h, 10), 2);
  EXPECT_EQ(kv.count_cached_prefix(h, 1), 1) << "capped by max_blocks";
  // A second sequence with the same prompt shares blocks 0 and 1.
  ASSERT_TRUE(kv.admit(2, h, 2, 10, 0, 0));
  EXPECT_EQ(kv.block_table(2)[0], kv.block_table(1)[0]);
  EXPECT_EQ(kv.block_table(2)[1], kv.block_table(1)[1]);
  EXPECT_NE(kv.block_table(2)[2], kv.block_table(1)[2]);
  EXPECT_EQ(kv.pool().ref_count(kv.block_table(1)[0]), 2);
  kv.check_invariants();
  kv.free(1);
  kv.free(2);
  EXPECT_EQ(kv.num_free_blocks(), 8);
  kv.check_invariants();
}

TEST(KVCacheManager, FreeReleasesTailFirstSoTailsAreEvictedFirst) {
  KVCacheManager kv(3, 2, true);
  const std::vector<int32_t> t = {1, 2, 3, 4, 5, 6};
  auto h = chain(t, 2);
  ASSERT_TRUE(kv.admit(1, h, 0, 6, 0, 0));
  kv.cache_full_blocks(1, h, 6);
  const auto table = kv.block_table(1);
  kv.free(1);
  EXPECT_EQ(kv.pool().next_eviction(), table[2]);
}

TEST(KVCacheManager, WatermarkAndShortage) {
  KVCacheManager kv(10, 4, false);
  EXPECT_FALSE(kv.admit(1, {}, 0, 32, 0, 3)) << "8 blocks would leave 2 < watermark 3";
  EXPECT_FALSE(kv.has(1)) << "a refused admission changes nothing";
  EXPECT_TRUE(kv.admit(1, {}, 0, 28, 0, 3));
  EXPECT_TRUE(kv.allocate_slots(1, 28, 0)) << "no growth needed";
  EXPECT_TRUE(kv.allocate_slots(1, 40, 0)) << "growth ignores the watermark";
  EXPECT_FALSE(kv.allocate_slots(1, 41, 0));
  EXPECT_EQ(kv.block_table(1).size(), 10u);
  kv.check_invariants();
}

TEST(KVCacheManager, LookaheadSlotsAreReserved) {
  KVCacheManager kv(10, 4, false);
  ASSERT_TRUE(kv.admit(1, {}, 0, 4, 0, 0));
  EXPECT_EQ(kv.block_table(1).size(), 1u);
  ASSERT_TRUE(kv.allocate_slots(1, 5, 4));  // 1 token + 4 speculative slots = 9 slots
  EXPECT_EQ(kv.block_table(1).size(), 3u);
}

TEST(KVCacheManager, HitsAreNotEvictedByTheirOwnAdmission) {
  // Two free cached blocks and no empty one: admitting a sequence that hits one and needs one
  // fresh block must evict the other, not the hit.
  KVCacheManager kv(2, 2, true);
  const std::vector<int32_t> t = {1, 2, 3, 4};
  auto h = chain(t, 2);
  ASSERT_TRUE(kv.admit(1, h, 0, 4, 0, 0));
  kv.cache_full_blocks(1, h, 4);
  kv.free(1);
  ASSERT_EQ(kv.count_cached_prefix(h, 1), 1);
  ASSERT_TRUE(kv.admit(2, h, 1, 4, 0, 0));
  EXPECT_TRUE(kv.pool().lookup(h[0]));
  EXPECT_EQ(kv.block_table(2)[0], *kv.pool().lookup(h[0]));
  kv.check_invariants();
}

}  // namespace
}  // namespace shardserve::coordinator
