#pragma once
// Where each process of the job sits: world rank 0 is the coordinator; world ranks
// 1 .. replicas * tp are the workers, replica r holding world ranks 1 + r*tp .. (r+1)*tp, in
// tensor-parallel order. `mpirun -np 1 coordinator : -np R*N worker` lays the job out so.
#include <vector>

#include "common/error.h"

namespace shardserve::comm {

struct WorldLayout {
  static constexpr int kCoordinator = 0;
  int tp = 1;
  int replicas = 1;

  int world_size() const { return 1 + tp * replicas; }
  int rank_of(int replica, int tp_rank) const { return 1 + replica * tp + tp_rank; }
  int replica_of(int world_rank) const { return (world_rank - 1) / tp; }
  int tp_rank_of(int world_rank) const { return (world_rank - 1) % tp; }
  std::vector<int> ranks_of(int replica) const {
    std::vector<int> r;
    for (int t = 0; t < tp; ++t) r.push_back(rank_of(replica, t));
    return r;
  }
  std::vector<int> worker_ranks() const {
    std::vector<int> r;
    for (int w = 1; w < world_size(); ++w) r.push_back(w);
    return r;
  }
};

}  // namespace shardserve::comm
