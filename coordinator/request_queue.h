#pragma once
// The waiting queue, kept in QueueKey order: priority (lower first), then arrival, then seq id.
// A preempted request re-enters with its original key, so it goes back in front of every
// request that arrived after it -- at the front of the queue under plain FCFS.
#include <cstddef>
#include <map>

#include "coordinator/request.h"

namespace shardserve::coordinator {

class RequestQueue {
 public:
  void push(Request* request);
  Request* front() const;  // nullptr when empty
  void pop_front();
  bool remove(const Request* request);  // false when it is not queued
  size_t size() const { return queue_.size(); }
  bool empty() const { return queue_.empty(); }

  auto begin() const { return queue_.begin(); }
  auto end() const { return queue_.end(); }

 private:
  std::map<QueueKey, Request*> queue_;
};

}  // namespace shardserve::coordinator
