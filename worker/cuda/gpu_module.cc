// The GPU runner module (libshardserve_worker_gpu.so, worker/gpu_backend.h): the worker dlopen()s
// it for device = "cuda", so that the CUDA libraries (and cuBLASLt's 92 KiB thread-local block)
// are never part of the worker's start-up libraries.
#include <cuda_runtime_api.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "comm/mpi_collective.h"
#include "comm/mpi_util.h"
#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "worker/cuda/cuda_model_runner.h"
#include "worker/cuda/host_staged_collective.h"
#include "worker/gpu_backend.h"
#if SHARDSERVE_HAVE_NCCL
#include "comm/nccl_collective.h"
#endif

namespace shardserve::worker::cuda {
namespace {

// Whether two ranks of `group` use the same GPU (by the device's UUID, so across hosts too).
bool group_shares_a_gpu(MPI_Comm group, int device) {
  cudaDeviceProp prop{};
  SHARDSERVE_CUDA_CHECK_CTX(cudaGetDeviceProperties(&prop, device),
                            fmt::format("device {}", device));
  int size = 0;
  comm::check_mpi(MPI_Comm_size(group, &size), "MPI_Comm_size (tp group)");
  using Uuid = std::array<char, sizeof(prop.uuid.bytes)>;
  Uuid mine{};
  std::memcpy(mine.data(), prop.uuid.bytes, mine.size());
  std::vector<Uuid> all(static_cast<std::size_t>(size));
  comm::check_mpi(MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, all.data(),
                                static_cast<int>(mine.size()), MPI_BYTE, group),
                  "MPI_Allgather (GPU UUIDs of the tp group)");
  std::sort(all.begin(), all.end());
  return std::adjacent_find(all.begin(), all.end()) != all.end();
}

class CudaBackend final : public GpuBackend {
 public:
  GpuDevices devices() override {
    GpuDevices d;
    const cudaError_t e = cudaGetDeviceCount(&d.count);
    if (e != cudaSuccess) {
      d.count = 0;
      d.why_none = fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorName(e),
                               cudaGetErrorString(e));
      (void)cudaGetLastError();  // clear the sticky "no driver" error
    } else if (d.count == 0) {
      d.why_none = "cudaGetDeviceCount: 0 devices";
    }
    return d;
  }

  std::size_t kv_bytes_per_block(const model::ModelConfig& config,
                                 const TensorParallelShard& shard, int64_t block_size) override {
    return CudaModelRunner::kv_bytes_per_block(config, shard, block_size);
  }

  std::unique_ptr<comm::Collective> device_collective(MPI_Comm group, int device) override {
    // NCCL refuses a communicator two of whose ranks share a GPU (the one-GPU machines running
    // tp > 1): those groups stage their collectives through host memory over MPI.
    if (group_shares_a_gpu(group, device)) {
      int rank = 0;
      comm::check_mpi(MPI_Comm_rank(group, &rank), "MPI_Comm_rank (tp group)");
      spdlog::info("tp group shares a GPU: collectives over MPI through pinned host memory (NCCL "
                   "needs a GPU per rank)");
      return std::make_unique<HostStagedCollective>(
          std::make_unique<comm::MpiCollective>(group, /*color=*/0, rank), device);
    }
#if SHARDSERVE_HAVE_NCCL
    return std::make_unique<comm::NcclCollective>(group, device);
#else
    (void)group;
    (void)device;
    fail("device = \"cuda\" with tp > 1: this worker's GPU module was built without NCCL (the "
         "GPU path's collective); use tp = 1 or device = \"cpu\"");
#endif
  }

  GpuRunner make_runner(const model::ModelConfig& config, const TensorParallelShard& shard,
                        const model::Checkpoint* checkpoint, const GpuRunnerOptions& options,
                        comm::Collective& group) override {
    CudaRunnerOptions o;
    o.device = options.device;
    o.block_size = options.block_size;
    o.num_kv_blocks = options.num_kv_blocks;
    o.kv_memory_fraction = options.kv_memory_fraction;
    o.max_tokens_per_step = options.max_tokens_per_step;
    o.max_logits_per_step = options.max_logits_per_step;
    o.cuda_graphs = options.cuda_graphs;
    std::unique_ptr<CudaModelRunner> runner;
    if (options.random_group_size) {
      RandomWeightsSpec random;
      random.group_size = *options.random_group_size;
      runner = std::make_unique<CudaModelRunner>(config, shard, random, o, group);
    } else {
      require(checkpoint != nullptr, "GPU runner: no checkpoint and no random weights asked for");
      runner = std::make_unique<CudaModelRunner>(config, shard, *checkpoint, o, group);
    }
    GpuRunner out;
    out.weights_bytes = runner->memory().weights_bytes;
    out.kv_bytes = runner->memory().kv_bytes;
    out.num_kv_blocks = runner->memory().num_kv_blocks;
    out.runner = std::move(runner);
    return out;
  }
};

}  // namespace
}  // namespace shardserve::worker::cuda

extern "C" __attribute__((visibility("default"))) shardserve::worker::GpuBackend*
shardserve_gpu_backend_v1() {
  return new shardserve::worker::cuda::CudaBackend();
}
