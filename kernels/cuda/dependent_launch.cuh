#pragma once
// Programmatic dependent launch (PDL, sm_90): the kernels of a decode step are short (a few µs),
// so the gap between one kernel's end and the next one's start is a large share of the step.
// A kernel launched with launch_dependent may be scheduled before the kernel ahead of it in the
// stream has ended: its blocks are resident and waiting, not yet being launched, when that
// kernel's last block exits.
//
// The contract, for every kernel launched this way:
//   - it calls begin_dependent() (or cudaGridDependencySynchronize) before it reads anything
//     an earlier kernel wrote and before it writes global memory (the kernel ahead may still
//     be reading what it would overwrite);
//   - before that call it may only read what no kernel of the current forward pass writes
//     (the weights: w4_decode_kernel starts its weight copies there).
// The wait covers every earlier kernel, not only the one ahead: that one waited in turn.
// Launched without the attribute (or after a copy or a library kernel) the calls are no-ops and
// the usual stream order holds.
#include <cuda_runtime.h>

#include <cstddef>

namespace shardserve::kernels::cuda {

// Wait for the kernel ahead (and so for everything before it), then allow the kernel behind to
// be scheduled: it waits for this one in turn, so at most one kernel sits waiting.
__device__ __forceinline__ void begin_dependent() {
  cudaGridDependencySynchronize();
  cudaTriggerProgrammaticLaunchCompletion();
}

// kernel<<<grid, block, smem_bytes, stream>>>(args...) as a programmatic dependent launch.
template <typename... Params, typename... Args>
cudaError_t launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block,
                             std::size_t smem_bytes, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

}  // namespace shardserve::kernels::cuda
