#pragma once
// A comm::Collective that forwards to another and adds up the time spent in all_reduce_sum, so a
// worker can export its all-reduce time per step without touching the forward pass:
//
//   monitoring::TimedCollective timed(*group_);          // group_: the rank's MpiCollective
//   ModelRunner runner(..., timed);                        // the runner calls through it
//   ... runner.forward(plan); metrics.on_forward(forward_s, timed.take_allreduce_seconds(), n);
//
// Two steady_clock reads per call (tens of ns) against a collective of microseconds or more.
// Not thread-safe: the collectives of a group are called from one thread.
#include <chrono>
#include <cstdint>

#include "comm/collective.h"

namespace shardserve::monitoring {

class TimedCollective final : public comm::Collective {
 public:
  explicit TimedCollective(comm::Collective& inner) : inner_(inner) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void all_reduce_sum(float* data, int64_t count) override {
    const auto t0 = Clock::now();
    inner_.all_reduce_sum(data, count);
    allreduce_ += Clock::now() - t0;
  }
  void all_gather(const float* send, float* recv, int64_t count) override {
    inner_.all_gather(send, recv, count);
  }
  void broadcast(float* data, int64_t count, int root) override {
    inner_.broadcast(data, count, root);
  }
  void barrier() override { inner_.barrier(); }

  // Seconds spent in all_reduce_sum since the previous call (0 at first use).
  double take_allreduce_seconds() {
    const double s = std::chrono::duration<double>(allreduce_).count();
    allreduce_ = Clock::duration::zero();
    return s;
  }

 private:
  using Clock = std::chrono::steady_clock;
  comm::Collective& inner_;
  Clock::duration allreduce_{0};
};

}  // namespace shardserve::monitoring
