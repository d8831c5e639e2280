#pragma once
// The order in which running requests claim this step's token budget and KV blocks.
//
// Decodes first: every running request whose next step is a single token (its last sampled one)
// is served before any prefill chunk, so a long prompt never delays the streams already running
// (chunked prefill then fills the leftover budget). Within each group, queue order: the most
// urgent and oldest requests claim blocks first, matching the victim policy so that a request
// never preempts one that is older than itself.
#include <vector>
#include <span>

#include "coordinator/request.h"

namespace shardserve::coordinator {

// `running` reordered: decodes in queue order, then requests still prefilling in queue order.
std::vector<Request*> order_running(std::span<Request* const> running);

}  // namespace shardserve::coordinator
