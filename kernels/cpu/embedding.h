#pragma once
#include <cstdint>

namespace shardserve::kernels::cpu {

// Vocabulary-parallel embedding lookup: this rank holds rows [vocab_begin, vocab_begin +
// shard_rows) of the table; tokens outside the shard give zero rows, so that summing the
// ranks' outputs (one all-reduce) yields the full lookup.
// table: [shard_rows, dim]; ids: [tokens]; out: [tokens, dim].
void embedding_lookup(const float* table, int64_t vocab_begin, int64_t shard_rows, int64_t dim,
                      const int32_t* ids, int64_t tokens, float* out);

}  // namespace shardserve::kernels::cpu
