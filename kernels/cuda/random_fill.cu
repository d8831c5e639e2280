// Random weights generated on the device, for benchmarks of full-size models without a
// checkpoint (LLaMA-70B in 4 bits is 35 GB: generating it on the host and copying would take
// minutes; here it takes well under a second). Values come from a counter hash (splitmix64 of
// seed + index), so a buffer is the same on every run and every GPU.
//
// Layout: each kernel is a grid-stride loop over the elements of a flat buffer; one 64-bit hash
// per element (per 8 bytes for raw bytes).
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/launchers.h"

namespace shardserve::kernels::cuda {
namespace {

__device__ __forceinline__ uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1).
__device__ __forceinline__ float unit(uint64_t h) {
  return static_cast<float>(h >> 40) * 0x1.0p-23f - 1.0f;
}

unsigned grid_for(int64_t items) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((items + 255) / 256, 132 * 32)));
}

// out: uint64 [words]
__global__ void fill_bytes_kernel(uint64_t* out, int64_t words, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < words;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = splitmix(seed + static_cast<uint64_t>(i));
  }
}

// out: bf16 [count], uniform in [-scale, scale) (+ offset).
__global__ void fill_bf16_kernel(bf16* out, int64_t count, float scale, float offset,
                                 uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = __float2bfloat16_rn(offset + scale * unit(splitmix(seed + static_cast<uint64_t>(i))));
  }
}

// out: float [count], uniform in [-scale, scale) + offset.
__global__ void fill_f32_kernel(float* out, int64_t count, float scale, float offset,
                                uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = offset + scale * unit(splitmix(seed + static_cast<uint64_t>(i)));
  }
}

// out: W4 meta uint32 [count] = {fp16 scale in [0.5, 1.5) * scale, bf16 128 + zero, zero an
// integer in [0, 16)} (kernels/cuda/w4_common.cuh).
__global__ void fill_w4_meta_kernel(uint32_t* out, int64_t count, float scale, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t h = splitmix(seed + static_cast<uint64_t>(i));
    const __half s = __float2half_rn(scale * (1.0f + 0.5f * unit(h)));
    out[i] = static_cast<uint32_t>(__half_as_ushort(s)) | ((0x4300u | (h & 0xF)) << 16);
  }
}

}  // namespace

namespace launch {

cudaError_t fill_random_bytes(void* out, std::size_t bytes, uint64_t seed, cudaStream_t stream) {
  const int64_t words = static_cast<int64_t>(bytes / 8);
  if (words == 0) return cudaSuccess;
  fill_bytes_kernel<<<grid_for(words), 256, 0, stream>>>(static_cast<uint64_t*>(out), words, seed);
  return cudaGetLastError();
}

cudaError_t fill_random_bf16(bf16* out, int64_t count, float scale, float offset, uint64_t seed,
                             cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_bf16_kernel<<<grid_for(count), 256, 0, stream>>>(out, count, scale, offset, seed);
  return cudaGetLastError();
}

cudaError_t fill_random_f32(float* out, int64_t count, float scale, float offset, uint64_t seed,
                            cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_f32_kernel<<<grid_for(count), 256, 0, stream>>>(out, count, scale, offset, seed);
  return cudaGetLastError();
}

cudaError_t fill_random_w4_meta(uint32_t* out, int64_t count, float scale, uint64_t seed,
                                cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_w4_meta_kernel<<<grid_for(count), 256, 0, stream>>>(out, count, scale, seed);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
