#pragma once
// The quantizer's heavy arithmetic on a CUDA device (docs/quantization.md, "GPU"), giving the
// CPU reference's results within floating-point rounding:
//   Hessian   H += w X^T X: cublasDsyrk in double over slabs of X (converted on the device);
//   GPTQ      damping, Cholesky / inverse / Cholesky of the permuted H with cuSOLVER (double),
//             the column loop as one kernel per lazy-batch block (a thread per output row)
//             and the batched update of the later columns as a cublasDgemm;
//   AWQ       each candidate's quantize-dequantize as a kernel and its outputs x W^T as a
//             float32 cublasSgemm (no TF32), the squared error summed in double.
// The small host-side decisions (dead inputs, act-order, damping values, AWQ scales) are
// model/quant's own functions on the same numbers. Not thread-safe: one per thread.
// No CUDA header here: the tool includes this in a CUDA build only, through plain C++.
#include <cstdint>
#include <memory>
#include <vector>

#include "tools/quantize/numerics.h"

namespace shardserve::quantize {

// True when a CUDA device is usable (false, not an error, without driver or device).
bool cuda_numerics_available();

class CudaNumerics final : public Numerics {
 public:
  CudaNumerics();  // the current device; throws when there is none
  ~CudaNumerics() override;
  CudaNumerics(const CudaNumerics&) = delete;
  CudaNumerics& operator=(const CudaNumerics&) = delete;

  const char* name() const override { return "cuda"; }

  // quant::accumulate_hessian's contract: hessian [in, in] += weight * X^T X for x [rows, in].
  void accumulate_hessian(const float* x, int64_t rows, int64_t in, double weight,
                          std::vector<double>& hessian);
  // quant::quantize_gptq's contract, from a host Hessian.
  quant::QuantizedLinear quantize_gptq(const std::vector<float>& w, int64_t out, int64_t in,
                                       const std::vector<double>& hessian,
                                       const quant::QuantGrid& grid,
                                       const quant::GptqOptions& options,
                                       quant::GptqStats* stats = nullptr);

  // Numerics: the Hessian stays on the device between the two steps.
  quant::QuantizedLinear gptq(const std::vector<float>& w, int64_t out, int64_t in, const float* x,
                              int64_t rows, const quant::QuantGrid& grid,
                              const quant::GptqOptions& options, quant::GptqStats* stats) override;
  quant::AwqSearch awq_search_scales(const float* x, int64_t n, int64_t in,
                                     const std::vector<const std::vector<float>*>& weights,
                                     const std::vector<int64_t>& outs, const quant::QuantGrid& grid,
                                     int grid_points, const std::vector<float>* abs_mean) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shardserve::quantize
