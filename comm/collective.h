#pragma once
// The collectives a tensor-parallel group needs, on float32 host buffers (the CPU path) or
// device buffers (the GPU path; that implementation states which). Every rank of the group
// calls the same operations in the same order.
#include <cstdint>

namespace shardserve::comm {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data: [count], summed element-wise over the group, result on every rank.
  virtual void all_reduce_sum(float* data, int64_t count) = 0;
  // send: [count] from each rank; recv: [size() * count], rank r's part at r * count.
  virtual void all_gather(const float* send, float* recv, int64_t count) = 0;
  // data: [count], root's values copied to every rank.
  virtual void broadcast(float* data, int64_t count, int root) = 0;
  virtual void barrier() = 0;
};

// A group of one: every collective is the identity. TP=1 runs through the same code path.
class SingleRankCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, int64_t) override {}
  void all_gather(const float* send, float* recv, int64_t count) override {
    for (int64_t i = 0; i < count; ++i) recv[i] = send[i];
  }
  void broadcast(float*, int64_t, int) override {}
  void barrier() override {}
};

}  // namespace shardserve::comm
