// HostStagedCollective under mpirun -np 2: both ranks on GPU 0, their collectives over MPI
// through pinned host memory (NCCL refuses two ranks on one GPU). Skips itself where there is
// no GPU (CI compiles it and skips).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>
#include <vector>

#include "comm/mpi_collective.h"
#include "tests/comm/device_collective_checks.h"
#include "worker/cuda/host_staged_collective.h"

namespace shardserve::worker::cuda {
namespace {

TEST(HostStagedCollective, RanksSharingOneGpuSumGatherAndBroadcast) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess) gpus = 0;
  int have = gpus > 0 ? 1 : 0, all = 0;
  MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all) GTEST_SKIP() << "no CUDA device on some rank";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  HostStagedCollective staged(std::make_unique<comm::MpiCollective>(MPI_COMM_WORLD, /*color=*/0, rank),
                              /*device=*/0);
  comm::testing::expect_device_collectives(staged, rank, size);
  // A larger operation than the first grows the staging buffer; the results stay right.
  comm::testing::DeviceFloats big(1 << 20);
  std::vector<float> ones(1 << 20, 1.0f);
  big.put(ones);
  staged.all_reduce_sum(big.data(), 1 << 20);
  const auto sum = big.get();
  for (std::size_t i = 0; i < sum.size(); i += 4099) ASSERT_EQ(sum[i], float(size)) << i;
}

}  // namespace
}  // namespace shardserve::worker::cuda
