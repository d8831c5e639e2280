#include "coordinator/request_queue.h"

#include "common/error.h"

namespace shardserve::coordinator {

void RequestQueue::push(Request* request) {
  const bool inserted = queue_.emplace(request->key(), request).second;
  require(inserted, "request queue: sequence {} queued twice", request->seq_id);
}

Request* RequestQueue::front() const { return queue_.empty() ? nullptr : queue_.begin()->second; }

void RequestQueue::pop_front() {
  require(!queue_.empty(), "request queue: pop_front on an empty queue");
  queue_.erase(queue_.begin());
}

bool RequestQueue::remove(const Request* request) { return queue_.erase(request->key()) != 0; }

}  // namespace shardserve::coordinator
