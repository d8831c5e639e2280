#pragma once
// The paged KV pool of one rank on the CPU: for every layer a K pool and a V pool of
// num_blocks blocks (layout in kernels/cpu/paged_attention.h). Physical block ids are the
// coordinator's; every rank of a replica has the same number of blocks, each holding that
// rank's KV heads.
#include <cstdint>
#include <vector>

#include "kernels/cpu/paged_attention.h"

namespace shardserve::worker {

class KvCache {
 public:
  KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t kv_heads,
          int64_t head_dim);

  kernels::cpu::PagedKvView layer(int64_t l);
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t bytes() const;

 private:
  int64_t num_layers_, num_blocks_, block_size_, kv_heads_, head_dim_;
  std::vector<float> k_, v_;  // [layers, blocks, block_size, kv_heads, head_dim]
};

}  // namespace shardserve::worker
