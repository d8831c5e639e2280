#include "coordinator/preemption_policy.h"

#include "common/error.h"

namespace shardserve::coordinator {

Request* choose_victim(std::span<Request* const> running) {
  require(!running.empty(), "preemption: no running request to choose a victim from");
  Request* victim = running.front();
  for (Request* r : running)
    if (victim->key() < r->key()) victim = r;
  return victim;
}

void preempt_by_recompute(Request& victim, KVCacheManager& kv) {
  kv.free(victim.seq_id);
  victim.num_computed_tokens = 0;
  victim.status = RequestStatus::kWaiting;
  ++victim.num_preemptions;
}

}  // namespace shardserve::coordinator
