#pragma once
// The checks every Collective on device buffers must pass under mpirun (values by hand, as for
// MPI): a sum, a gather and a broadcast from the last rank, each read back from the device. Used
// by the NCCL test (one GPU per rank) and the host-staged test (ranks sharing one GPU).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <vector>

#include "comm/collective.h"

namespace shardserve::comm::testing {

struct DeviceFloats {
  explicit DeviceFloats(std::size_t n) : n(n) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess);
  }
  ~DeviceFloats() { cudaFree(p); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  void put(const std::vector<float>& v) {
    ASSERT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<float> get() const {
    std::vector<float> v(n, -12345.0f);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  float* data() { return static_cast<float*>(p); }
  void* p = nullptr;
  std::size_t n;
};

inline void expect_device_collectives(Collective& c, int rank, int size) {
  ASSERT_EQ(c.rank(), rank);
  ASSERT_EQ(c.size(), size);

  DeviceFloats x(1000);
  std::vector<float> h(1000);
  for (int i = 0; i < 1000; ++i) h[i] = static_cast<float>(rank * 10 + i);
  x.put(h);
  c.all_reduce_sum(x.data(), 1000);
  const auto sum = x.get();
  const float ranks_sum = 10.0f * size * (size - 1) / 2;
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sum[i], ranks_sum + size * i) << i;

  DeviceFloats send(5), recv(5 * size);
  std::vector<float> s(5);
  for (int i = 0; i < 5; ++i) s[i] = static_cast<float>(100 * rank + i);
  send.put(s);
  c.all_gather(send.data(), recv.data(), 5);
  const auto g = recv.get();
  for (int r = 0; r < size; ++r)
    for (int i = 0; i < 5; ++i) ASSERT_EQ(g[r * 5 + i], 100.0f * r + i);

  DeviceFloats b(7);
  std::vector<float> bv(7, -1.0f);
  if (rank == size - 1)
    for (int i = 0; i < 7; ++i) bv[i] = 1000.0f + i;
  b.put(bv);
  c.broadcast(b.data(), 7, size - 1);
  const auto got = b.get();
  for (int i = 0; i < 7; ++i) ASSERT_EQ(got[i], 1000.0f + i);
  c.barrier();
}

}  // namespace shardserve::comm::testing
