#pragma once
// A tensor-parallel group of threads in one process, for tests: every rank runs on its own
// thread and the collectives meet at a barrier over shared pointers. Same contract as
// comm::Collective (every rank calls the same operations in the same order).
#include <barrier>
#include <cstdint>
#include <vector>

#include "comm/collective.h"

namespace shardserve::testing_support {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), sync_(size), ptrs_(size) {}
  int size() const { return size_; }

 private:
  friend class ThreadCollective;
  int size_;
  std::barrier<> sync_;
  std::vector<float*> ptrs_;
};

class ThreadCollective final : public comm::Collective {
 public:
  ThreadCollective(ThreadGroup& group, int rank) : g_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size(); }

  void all_reduce_sum(float* data, int64_t count) override {
    g_.ptrs_[rank_] = data;
    g_.sync_.arrive_and_wait();
    // Every rank sums in rank order into its own scratch: identical results on every rank.
    scratch_.assign(data, data + count);
    for (int64_t i = 0; i < count; ++i) {
      float s = 0;
      for (int r = 0; r < size(); ++r) s += g_.ptrs_[r][i];
      scratch_[i] = s;
    }
    g_.sync_.arrive_and_wait();
    std::copy(scratch_.begin(), scratch_.end(), data);
    g_.sync_.arrive_and_wait();
  }
  void all_gather(const float* send, float* recv, int64_t count) override {
    g_.ptrs_[rank_] = const_cast<float*>(send);
    g_.sync_.arrive_and_wait();
    for (int r = 0; r < size(); ++r) std::copy(g_.ptrs_[r], g_.ptrs_[r] + count, recv + r * count);
    g_.sync_.arrive_and_wait();
  }
  void broadcast(float* data, int64_t count, int root) override {
    g_.ptrs_[rank_] = data;
    g_.sync_.arrive_and_wait();
    if (rank_ != root) std::copy(g_.ptrs_[root], g_.ptrs_[root] + count, data);
    g_.sync_.arrive_and_wait();
  }
  void barrier() override { g_.sync_.arrive_and_wait(); }

 private:
  ThreadGroup& g_;
  int rank_;
  std::vector<float> scratch_;
};

}  // namespace shardserve::testing_support
