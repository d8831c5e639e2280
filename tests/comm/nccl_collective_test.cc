// NcclCollective on device buffers, under mpirun (one GPU per rank). Skips itself on a machine
// with fewer GPUs than ranks (CI compiles it and skips). Values checked by hand, as for MPI.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include "comm/nccl_collective.h"
#include "tests/comm/device_collective_checks.h"

namespace shardserve::comm {
namespace {

int world(int* rank) {
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

TEST(NcclCollective, SumsGathersAndBroadcastsOnDeviceBuffers) {
  int rank = 0;
  const int size = world(&rank);
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess) gpus = 0;
  int enough = gpus >= size ? 1 : 0, all = 0;
  MPI_Allreduce(&enough, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all) GTEST_SKIP() << size << " ranks need " << size << " GPUs; this machine has " << gpus;
  NcclCollective nccl(MPI_COMM_WORLD, rank, std::chrono::seconds(60));
  testing::expect_device_collectives(nccl, rank, size);
}

}  // namespace
}  // namespace shardserve::comm
