#include "coordinator/request.h"

#include <span>

namespace shardserve::coordinator {

Request::Request(uint64_t id, RequestSpec spec, int32_t block_size, bool hash_blocks)
    : seq_id(id),
      request_id(std::move(spec.request_id)),
      sampling(spec.sampling),
      max_tokens(spec.max_tokens),
      stop_token_ids(std::move(spec.stop_token_ids)),
      ignore_eos(spec.ignore_eos),
      priority(spec.priority),
      arrival_time(spec.arrival_time),
      text_stream(std::move(spec.text_stream)),
      stop_matcher(std::move(spec.stop_strings)),
      tokens(std::move(spec.prompt_token_ids)),
      prompt_len(static_cast<int32_t>(tokens.size())),
      block_size_(block_size),
      hash_blocks_(hash_blocks) {
  extend_hashes();
}

void Request::append_token(int32_t token) {
  tokens.push_back(token);
  extend_hashes();
}

void Request::extend_hashes() {
  if (!hash_blocks_) return;
  const size_t full = tokens.size() / block_size_;
  while (block_hashes.size() < full) {
    const size_t i = block_hashes.size();
    const BlockHash parent = i == 0 ? root_block_hash() : block_hashes[i - 1];
    block_hashes.push_back(hash_block(
        parent, std::span<const int32_t>(tokens).subspan(i * block_size_, block_size_)));
  }
}

}  // namespace shardserve::coordinator
