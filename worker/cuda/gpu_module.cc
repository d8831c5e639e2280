// The GPU runner module (libshardserve_worker_gpu.so, worker/gpu_backend.h): the worker dlopen()s
// it for device = "cuda", so that the CUDA libraries (and cuBLASLt's 92 KiB thread-local block)
// are never part of the worker's start-up libraries.
#include <cuda_runtime_api.h>

#include "common/error.h"
#include "worker/cuda/cuda_model_runner.h"
#include "worker/gpu_backend.h"
#if SHARDSERVE_HAVE_NCCL
#include "comm/nccl_collective.h"
#endif

namespace shardserve::worker::cuda {
namespace {

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
                        const model::Checkpoint& checkpoint, const GpuRunnerOptions& options,
                        comm::Collective& group) override {
    CudaRunnerOptions o;
    o.device = options.device;
    o.block_size = options.block_size;
    o.num_kv_blocks = options.num_kv_blocks;
    o.kv_memory_fraction = options.kv_memory_fraction;
    o.max_tokens_per_step = options.max_tokens_per_step;
    o.max_logits_per_step = options.max_logits_per_step;
    auto runner = std::make_unique<CudaModelRunner>(config, shard, checkpoint, o, group);
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
