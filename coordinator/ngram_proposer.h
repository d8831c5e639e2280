#pragma once
// Prompt-lookup drafting (n-gram speculation; Saxena 2023, vLLM's "ngram" method): no draft
// model. If the sequence's last n tokens occurred earlier in the sequence (prompt or output), the
// tokens that followed that occurrence are proposed as the next ones. It pays on inputs that the
// output repeats or quotes (code edits, summaries, retrieval answers, repetitive text), costs
// almost nothing to compute and needs no KV of its own. The drafts are point masses, verified by
// the exact rule (kernels/cpu/sampling.h: verify_draft_token): the output distribution is the
// target's whatever they are.
#include <cstdint>
#include <span>
#include <vector>

namespace shardserve::coordinator {

// Up to k draft tokens for `tokens`. Tries the longest suffix first (n = n_max down to n_min,
// n < tokens.size()); for a suffix, the most recent earlier occurrence followed by k tokens wins,
// else the one followed by the most tokens (the earliest). Empty when nothing matches or k <= 0.
std::vector<int32_t> propose_ngram(std::span<const int32_t> tokens, int32_t k, int32_t n_min,
                                   int32_t n_max);

}  // namespace shardserve::coordinator
