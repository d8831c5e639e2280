#pragma once
// The kernel benchmarks' clock: the median device time of an operation, measured with CUDA
// events around the operation alone, after 3 warm-up runs, with the L2 cache flushed (a 512 MiB
// memset, larger than any Hopper L2) before each timed run so that weights are read from HBM as
// in a real decode step.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"

namespace shardserve::bench {

class MedianTimer {
 public:
  MedianTimer() : flush_(std::size_t{512} << 20, "L2 flush") {}

  // Microseconds: the median of `runs` timed runs of op on the timer's stream.
  double median_us(const std::function<void(cudaStream_t)>& op, int runs) {
    const cudaStream_t s = stream_.get();
    for (int i = 0; i < 3; ++i) op(s);
    std::vector<float> ms(runs);
    for (int i = 0; i < runs; ++i) {
      SHARDSERVE_CUDA_CHECK(cudaMemsetAsync(flush_.data(), i & 0xff, flush_.bytes(), s));
      start_.record(s);
      op(s);
      end_.record(s);
      end_.synchronize();
      ms[i] = kernels::cuda::Event::elapsed_ms(start_, end_);
    }
    SHARDSERVE_CUDA_CHECK(cudaGetLastError());
    std::nth_element(ms.begin(), ms.begin() + runs / 2, ms.end());
    return ms[runs / 2] * 1000.0;
  }

 private:
  kernels::cuda::Stream stream_;
  kernels::cuda::Event start_, end_;
  kernels::cuda::DeviceBuffer flush_;
};

}  // namespace shardserve::bench
