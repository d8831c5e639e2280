#pragma once
// How much of a prompt runs in this step, and how much of it the prefix cache may supply.
//
// Chunked prefill: with chunking on, a prompt takes whatever budget the decodes left, and the
// rest of it continues in later steps (num_logits = 0 until the chunk that ends it). With
// chunking off a prompt runs whole or waits. Admission keeps queue order strictly: when the
// head of the queue cannot start (no budget, no sequence slot, too few blocks), nothing behind
// it starts either, so under FCFS no request is overtaken and none starves.
//
// Prefix-cache rule for the last block: logits need at least one computed position, so a cache
// hit covers at most floor((num_tokens - 1) / block_size) blocks. When the whole prompt is
// cached and ends on a block boundary, its last block is therefore recomputed into a new,
// private block rather than shared and written again (no copy-on-write is needed: a cached
// block is never written). The cost is at most block_size tokens of recomputation.
#include <cstdint>

namespace shardserve::coordinator {

// Tokens of a prefill to run now: all `remaining` when they fit `budget`; with chunking, else
// `budget`; without chunking, else 0 (wait for a step with room).
int32_t prefill_chunk(int32_t remaining, int32_t budget, bool chunked);

// The most leading blocks of a sequence of num_tokens that the prefix cache may supply.
int32_t max_cached_blocks(int32_t num_tokens, int32_t block_size);

}  // namespace shardserve::coordinator
