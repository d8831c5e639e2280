// NcclCollective on device buffers, under mpirun (one GPU per rank). Skips itself on a machine
// with fewer GPUs than ranks (CI compiles it and skips). Values checked by hand, as for MPI.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "comm/nccl_collective.h"

namespace shardserve::comm {
namespace {

int world(int* rank) {
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

struct DeviceBuffer {
  explicit DeviceBuffer(std::size_t n) : n(n) { EXPECT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  void put(const std::vector<float>& v) { cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice); }
  std::vector<float> get() const {
    std::vector<float> v(n);
    cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost);
    return v;
  }
  float* data() { return static_cast<float*>(p); }
  void* p = nullptr;
  std::size_t n;
};

TEST(NcclCollective, SumsGathersAndBroadcastsOnDeviceBuffers) {
  int rank = 0;
  const int size = world(&rank);
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess) gpus = 0;
  int enough = gpus >= size ? 1 : 0, all = 0;
  MPI_Allreduce(&enough, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all) GTEST_SKIP() << size << " ranks need " << size << " GPUs; this machine has " << gpus;
  NcclCollective nccl(MPI_COMM_WORLD, rank, std::chrono::seconds(60));
  ASSERT_EQ(nccl.rank(), rank);
  ASSERT_EQ(nccl.size(), size);

  DeviceBuffer x(1000);
  std::vector<float> h(1000);
  for (int i = 0; i < 1000; ++i) h[i] = static_cast<float>(rank * 10 + i);
  x.put(h);
  nccl.all_reduce_sum(x.data(), 1000);
  const auto sum = x.get();
  const float ranks_sum = 10.0f * size * (size - 1) / 2;
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sum[i], ranks_sum + size * i) << i;

  DeviceBuffer send(5), recv(5 * size);
  std::vector<float> s(5);
  for (int i = 0; i < 5; ++i) s[i] = static_cast<float>(100 * rank + i);
  send.put(s);
  nccl.all_gather(send.data(), recv.data(), 5);
  const auto g = recv.get();
  for (int r = 0; r < size; ++r)
    for (int i = 0; i < 5; ++i) ASSERT_EQ(g[r * 5 + i], 100.0f * r + i);

  DeviceBuffer b(7);
  std::vector<float> bv(7, -1.0f);
  if (rank == size - 1)
    for (int i = 0; i < 7; ++i) bv[i] = 1000.0f + i;
  b.put(bv);
  nccl.broadcast(b.data(), 7, size - 1);
  const auto got = b.get();
  for (int i = 0; i < 7; ++i) ASSERT_EQ(got[i], 1000.0f + i);
  nccl.barrier();
}

}  // namespace
}  // namespace shardserve::comm
