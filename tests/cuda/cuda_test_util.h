#pragma once
// Helpers of the GPU tests: skip without a device, fresh random inputs, bf16 rounding on the
// host (the CPU reference then runs on exactly the values the GPU sees), upload / download,
// NaN poisoning of outputs, and the error metric of docs/cuda.md: ||out - ref|| / ||ref||
// (any NaN or infinity in out gives +inf).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"

namespace shardserve::kernels::cuda::testing {

// Every GPU test starts with this: CI has no GPU and must pass.
#define SHARDSERVE_REQUIRE_GPU()                                                         \
  do {                                                                                   \
    if (!::shardserve::kernels::cuda::cuda_device_available())                           \
      GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped (label gpu)";    \
  } while (0)

// Tolerances (docs/cuda.md, from the device method): bf16 operands or outputs 1e-2,
// float32 arithmetic on exact inputs 1e-5.
constexpr double kBf16Tolerance = 1e-2;
constexpr double kF32Tolerance = 1e-5;

// The seed of a test's random inputs: fresh every run, SHARDSERVE_TEST_SEED replays a failing
// one; printed and recorded as the test's "seed" property.
inline uint32_t input_seed() {
  const char* env = std::getenv("SHARDSERVE_TEST_SEED");
  const uint32_t seed = env != nullptr ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10))
                                       : static_cast<uint32_t>(std::random_device{}());
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  std::printf("input seed %u (SHARDSERVE_TEST_SEED=%u replays it)\n", seed, seed);
  return seed;
}

inline std::vector<float> random_floats(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// Rounds every value to bf16 and back, in place: the CPU reference's input.
inline void round_to_bf16(std::vector<float>& v) {
  for (auto& x : v) x = bf16_to_float(float_to_bf16(x));
}

// The host side of a paged-attention step on random data: num_blocks physical blocks given out
// in shuffled order (perm, so logical != physical), a random bf16-exact pool (the cached
// prefixes) and the new tokens' fused [q | k | v] rows as the worker holds them.
struct RandomPagedStep {
  int64_t num_blocks = 0;
  std::vector<int32_t> perm;
  std::vector<float> pool_k, pool_v;  // [num_blocks * block_size, row]
  std::vector<float> qkv;             // [tokens, width]
};
inline RandomPagedStep random_paged_step(std::mt19937& rng, int64_t num_blocks,
                                         int64_t block_size, int64_t row, int64_t tokens,
                                         int64_t width) {
  RandomPagedStep st;
  st.num_blocks = num_blocks;
  st.perm.resize(num_blocks);
  std::iota(st.perm.begin(), st.perm.end(), 0);
  std::shuffle(st.perm.begin(), st.perm.end(), rng);
  st.pool_k = random_floats(num_blocks * block_size * row, rng);
  st.pool_v = random_floats(num_blocks * block_size * row, rng);
  round_to_bf16(st.pool_k);
  round_to_bf16(st.pool_v);
  st.qkv = random_floats(tokens * width, rng);
  round_to_bf16(st.qkv);
  return st;
}

inline std::vector<uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> from_bf16_bits(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

template <typename T>
DeviceBuffer upload(const std::vector<T>& host) {
  DeviceBuffer buf(std::max<std::size_t>(host.size(), 1) * sizeof(T), "test input");
  if (!host.empty()) copy_to_device(buf.data(), host.data(), host.size() * sizeof(T));
  return buf;
}

// bf16 device copy of float values (rounded).
inline DeviceBuffer upload_bf16(const std::vector<float>& host) { return upload(to_bf16_bits(host)); }

template <typename T>
std::vector<T> download(const DeviceBuffer& buf, std::size_t count) {
  std::vector<T> host(count);
  if (count > 0) copy_to_host(host.data(), buf.data(), count * sizeof(T));
  return host;
}

inline std::vector<float> download_bf16(const DeviceBuffer& buf, std::size_t count) {
  return from_bf16_bits(download<uint16_t>(buf, count));
}

// All bytes 0xFF: NaN as float32 and as bf16, -1 as int32.
inline void poison(DeviceBuffer& buf) {
  SHARDSERVE_CUDA_CHECK(cudaMemset(buf.data(), 0xFF, buf.bytes()));
  // cudaMemset is asynchronous and on the legacy stream, which our non-blocking test streams do
  // not wait for: without this the poison could land after the kernel's output.
  SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());
}

inline double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    const double d = double(got[i]) - double(want[i]);
    diff += d * d;
    norm += double(want[i]) * double(want[i]);
  }
  if (norm == 0) return diff == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / norm);
}

}  // namespace shardserve::kernels::cuda::testing
