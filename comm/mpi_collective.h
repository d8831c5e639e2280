#pragma once
// The Collective interface over an MPI communicator, on float32 host buffers (the CPU path).
// Each tensor-parallel group (one replica) owns one: it is split off a parent communicator with
// MPI_Comm_split (color = replica, key = tensor-parallel rank), so that the groups' collectives
// never see one another and rank() is the tensor-parallel rank. Every MPI call is checked; a
// failure is a shardserve::Error naming the call, the group and the count.
#include <mpi.h>

#include <cstdint>
#include <string>

#include "comm/collective.h"

namespace shardserve::comm {

class MpiCollective final : public Collective {
 public:
  // Collective over `parent`: every rank of it calls this (or skip_split) in the same order.
  // The new group holds the parent's ranks of the same color, ordered by key.
  MpiCollective(MPI_Comm parent, int color, int key);
  // A parent rank that joins no group (the coordinator): MPI_Comm_split with MPI_UNDEFINED.
  static void skip_split(MPI_Comm parent);

  ~MpiCollective() override;
  MpiCollective(const MpiCollective&) = delete;
  MpiCollective& operator=(const MpiCollective&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, int64_t count) override;
  void all_gather(const float* send, float* recv, int64_t count) override;
  void broadcast(float* data, int64_t count, int root) override;
  void barrier() override;

  MPI_Comm communicator() const { return comm_; }
  int color() const { return color_; }

 private:
  std::string describe() const;  // "group 1 (rank 0 of 2)" for messages

  MPI_Comm comm_ = MPI_COMM_NULL;
  int color_ = 0;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace shardserve::comm
