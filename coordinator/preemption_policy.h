#pragma once
// Who gives up its KV blocks when a running sequence needs a block and the pool has none.
//
// Victim policy: the running request that sorts last in queue order -- the least urgent
// priority, and within it the latest arrival (then the highest seq id). Reasons:
//  * the request that needs the block is never younger than its victim, so the oldest running
//    request is never preempted while another runs: under FCFS it always progresses, and as a
//    request alone always fits the pool (validated), every request finishes -- no starvation,
//    no livelock;
//  * the latest arrival has usually computed the least, so recomputing it wastes the least;
//  * with priorities, urgent requests keep their blocks and background ones yield first.
// If the requester itself sorts last, it preempts itself (it waits; nobody older is hurt).
//
// Preemption by recompute: the victim's blocks are released (its full blocks stay in the
// prefix cache until evicted, so a quick readmission often recomputes little), its computed
// count drops to zero and it returns to the waiting queue under its original key.
#include <span>

#include "coordinator/kv_cache_manager.h"
#include "coordinator/request.h"

namespace shardserve::coordinator {

// The victim among `running` (non-empty).
Request* choose_victim(std::span<Request* const> running);

// Frees the victim's blocks and resets it to waiting; the caller requeues it.
void preempt_by_recompute(Request& victim, KVCacheManager& kv);

}  // namespace shardserve::coordinator
