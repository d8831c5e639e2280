// MpiCollective under mpirun -np 4: sums, gathers, broadcasts and barriers against values
// computed by hand, on the whole world and on communicators split by replica (the layout the
// runtime uses), including groups that run different collectives at the same time.
#include <gtest/gtest.h>
#include <mpi.h>

#include <numeric>
#include <vector>

#include "comm/mpi_collective.h"
#include "common/error.h"

namespace shardserve::comm {
namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

TEST(MpiCollective, NeedsFourRanks) { ASSERT_EQ(world_size(), 4) << "run under mpirun -np 4"; }

TEST(MpiCollective, AllReduceSumsOverTheWorld) {
  MpiCollective all(MPI_COMM_WORLD, 0, world_rank());
  EXPECT_EQ(all.rank(), world_rank());
  EXPECT_EQ(all.size(), 4);
  // Rank r contributes x_i = r * 10 + i (exact in float): sum = 10 * (0+1+2+3) + 4 i = 60 + 4 i.
  std::vector<float> x(1000);
  for (int i = 0; i < 1000; ++i) x[i] = static_cast<float>(all.rank() * 10 + i);
  all.all_reduce_sum(x.data(), static_cast<int64_t>(x.size()));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(x[i], 60.0f + 4.0f * i) << i;
  // Zero elements is allowed and does nothing.
  all.all_reduce_sum(nullptr, 0);
}

TEST(MpiCollective, AllGatherPlacesEachRankAtItsOffset) {
  MpiCollective all(MPI_COMM_WORLD, 0, world_rank());
  const int64_t count = 5;
  std::vector<float> send(count), recv(4 * count, -1.0f);
  for (int64_t i = 0; i < count; ++i) send[i] = static_cast<float>(100 * all.rank() + i);
  all.all_gather(send.data(), recv.data(), count);
  for (int r = 0; r < 4; ++r)
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(recv[r * count + i], 100.0f * r + i);
}

TEST(MpiCollective, BroadcastCopiesTheRootsValues) {
  MpiCollective all(MPI_COMM_WORLD, 0, world_rank());
  for (int root = 0; root < 4; ++root) {
    std::vector<float> x(7, static_cast<float>(all.rank()));
    if (all.rank() == root) std::iota(x.begin(), x.end(), 1000.0f * root);
    all.broadcast(x.data(), 7, root);
    for (int i = 0; i < 7; ++i) ASSERT_EQ(x[i], 1000.0f * root + i) << "root " << root;
  }
  std::vector<float> x(1);
  EXPECT_THROW(all.broadcast(x.data(), 1, 4), Error);
  all.barrier();
}

TEST(MpiCollective, SplitGroupsAreIndependent) {
  // Two groups of two ranks (world ranks 0,1 and 2,3), as two replicas with tp = 2; the key
  // orders the ranks in a group: reversed here, so group rank = 1 - (world rank % 2).
  const int w = world_rank();
  MpiCollective group(MPI_COMM_WORLD, w / 2, 1 - w % 2);
  EXPECT_EQ(group.size(), 2);
  EXPECT_EQ(group.rank(), 1 - w % 2);
  EXPECT_EQ(group.color(), w / 2);
  // Group 0 sums, group 1 gathers, at the same time.
  if (group.color() == 0) {
    std::vector<float> x(3, static_cast<float>(w + 1));  // 1 and 2
    group.all_reduce_sum(x.data(), 3);
    for (float v : x) EXPECT_EQ(v, 3.0f);
  } else {
    const float mine = static_cast<float>(w);  // 2 or 3
    std::vector<float> got(2);
    group.all_gather(&mine, got.data(), 1);
    // Group rank 0 is world rank 3 (key 0), group rank 1 is world rank 2.
    EXPECT_EQ(got[0], 3.0f);
    EXPECT_EQ(got[1], 2.0f);
  }
  group.barrier();
}

TEST(MpiCollective, SkipSplitLeavesARankOutOfEveryGroup) {
  // World rank 0 plays the coordinator: it joins no group; ranks 1..3 form one group of 3.
  const int w = world_rank();
  if (w == 0) {
    MpiCollective::skip_split(MPI_COMM_WORLD);
    return;
  }
  MpiCollective workers(MPI_COMM_WORLD, 0, w);
  EXPECT_EQ(workers.size(), 3);
  EXPECT_EQ(workers.rank(), w - 1);
  float x = static_cast<float>(w);
  workers.all_reduce_sum(&x, 1);
  EXPECT_EQ(x, 6.0f);
}

TEST(MpiCollective, LargeReductionsAreExactAcrossRanks) {
  // Every rank ends with bit-identical sums (the TP ranks' residual streams must not drift).
  MpiCollective all(MPI_COMM_WORLD, 0, world_rank());
  std::vector<float> x(1 << 18);
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = 0.1f * static_cast<float>((i * 7919 + all.rank() * 104729) % 1000) - 50.0f;
  all.all_reduce_sum(x.data(), static_cast<int64_t>(x.size()));
  std::vector<float> mine = x, rank0 = x;
  all.broadcast(rank0.data(), static_cast<int64_t>(rank0.size()), 0);
  EXPECT_EQ(mine, rank0);
}

}  // namespace
}  // namespace shardserve::comm
