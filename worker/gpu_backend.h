#pragma once
// device = "cuda" without CUDA in the worker binary. The GPU runner (worker/cuda/) is built as a
// module, libshardserve_worker_gpu.so beside the worker executable (worker/cuda/gpu_module.cc),
// that the worker dlopen()s only when its configuration says device = "cuda"; the worker itself
// links no CUDA library, so one binary serves device = "cpu" (also on hosts without the CUDA
// libraries) and device = "cuda".
//
// Why not link the runner in: cuBLASLt (libcublasLt.so.13) has a 92 KiB thread-local block. A
// library the executable links is loaded at start-up, and glibc places the thread-local blocks of
// every start-up library ("static TLS") at the top of each new thread's stack. civetweb, the HTTP
// server of prometheus-cpp's Exposer (monitoring/endpoint.cc), creates its threads with a fixed
// 100 KiB stack (Debian's build, USE_STACK_SIZE=102400); 92 KiB of TLS + glibc's 16 KiB minimum
// does not fit, pthread_create returns EINVAL (no system call is made), mg_start returns no context
// ("Cannot create first worker thread") and the metrics endpoint fails, on any host, GPU or not.
// A dlopen()ed library's thread-local blocks are allocated on first use instead, outside the
// stacks. docs/cuda.md "The CUDA runner in the served worker" has the measurements.
//
// The module resolves the shardserve code it uses (worker/, model/, kernels/cpu/, common/) against
// the worker executable (linked with ENABLE_EXPORTS); it contains only worker/cuda, kernels/cuda
// and comm/nccl, plus the CUDA libraries as its own dependencies.
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "comm/collective.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "worker/cuda/step_runner.h"
#include "worker/tensor_parallel.h"

namespace shardserve::worker {

struct GpuDevices {
  int count = 0;
  std::string why_none;  // when count is 0: the CUDA runtime's answer (no driver, no device)
};

// The step capacities and KV sizing of one GPU runner (worker/cuda/cuda_model_runner.h's
// CudaRunnerOptions, without CUDA types).
struct GpuRunnerOptions {
  int device = 0;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;  // > 0: exactly this many; 0: from kv_memory_fraction
  double kv_memory_fraction = 0.9;
  int64_t max_tokens_per_step = 8192;
  int64_t max_logits_per_step = 1024;
  // Decode steps replayed from CUDA graphs (the runner captures them at tp = 1 only).
  bool cuda_graphs = true;
  // Random weights of the config's shape instead of a checkpoint (config `weights`): 4-bit with
  // this group size, or bf16 when 0. Unset: the checkpoint.
  std::optional<int64_t> random_group_size;
};

struct GpuRunner {
  std::unique_ptr<StepRunner> runner;
  std::size_t weights_bytes = 0;
  std::size_t kv_bytes = 0;
  int64_t num_kv_blocks = 0;
};

class GpuBackend {
 public:
  virtual ~GpuBackend() = default;
  virtual GpuDevices devices() = 0;
  virtual std::size_t kv_bytes_per_block(const model::ModelConfig& config,
                                         const TensorParallelShard& shard, int64_t block_size) = 0;
  // NCCL over `group` (device buffers) for tp > 1; throws Error when the module has no NCCL.
  virtual std::unique_ptr<comm::Collective> device_collective(MPI_Comm group, int device) = 0;
  // checkpoint: null exactly when options.random_group_size is set.
  virtual GpuRunner make_runner(const model::ModelConfig& config, const TensorParallelShard& shard,
                                const model::Checkpoint* checkpoint,
                                const GpuRunnerOptions& options, comm::Collective& group) = 0;
};

// The module's entry point: `extern "C" GpuBackend* shardserve_gpu_backend_v1()`, a new backend
// owned by the caller.
inline constexpr const char* kGpuBackendEntry = "shardserve_gpu_backend_v1";
inline constexpr const char* kGpuModuleFile = "libshardserve_worker_gpu.so";

// The loaded module and its backend. Objects the backend made (runners, collectives) run the
// module's code: destroy them before this.
class GpuModule {
 public:
  using Handle = std::unique_ptr<void, int (*)(void*)>;  // dlopen()'s, closed by dlclose
  // Loads `path` (default: kGpuModuleFile in the directory of the running executable). Throws
  // Error naming the file and the loader's message when it cannot be loaded.
  static std::unique_ptr<GpuModule> load(const std::string& path = "");
  ~GpuModule();
  GpuModule(const GpuModule&) = delete;
  GpuModule& operator=(const GpuModule&) = delete;
  GpuBackend& backend() { return *backend_; }
  const std::string& path() const { return path_; }

 private:
  GpuModule(Handle handle, std::string path, std::unique_ptr<GpuBackend> backend);
  Handle handle_;
  std::string path_;
  std::unique_ptr<GpuBackend> backend_;
};

}  // namespace shardserve::worker
