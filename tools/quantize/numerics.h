#pragma once
// Where the quantizer's heavy arithmetic runs: the pipeline (pipeline.cc) hands every GPTQ and
// AWQ stage to a Numerics, so that the CPU and the GPU (tools/quantize/cuda/cuda_numerics.h)
// run the same stages from the same inputs and return the same kind of result. CpuNumerics is
// model/quant's reference code; everything else in the pipeline (calibration forward, RTN,
// scale folding) stays on the CPU for both.
#include <cstdint>
#include <vector>

#include "model/quant/formats.h"
#include "model/quant/quantizer.h"

namespace shardserve::quantize {

class Numerics {
 public:
  virtual ~Numerics() = default;
  virtual const char* name() const = 0;  // "cpu", "cuda": recorded in the report

  // GPTQ of W [out, in] from the calibration inputs x [rows, in] of its linear(s):
  // H = 2/rows X^T X (quant::accumulate_hessian), then quant::quantize_gptq.
  virtual quant::QuantizedLinear gptq(const std::vector<float>& w, int64_t out, int64_t in,
                                      const float* x, int64_t rows, const quant::QuantGrid& grid,
                                      const quant::GptqOptions& options,
                                      quant::GptqStats* stats) = 0;

  // quant::awq_search_scales, same arguments and result.
  virtual quant::AwqSearch awq_search_scales(const float* x, int64_t n, int64_t in,
                                             const std::vector<const std::vector<float>*>& weights,
                                             const std::vector<int64_t>& outs,
                                             const quant::QuantGrid& grid, int grid_points,
                                             const std::vector<float>* abs_mean) = 0;
};

// model/quant's functions, unchanged.
class CpuNumerics final : public Numerics {
 public:
  const char* name() const override { return "cpu"; }
  quant::QuantizedLinear gptq(const std::vector<float>& w, int64_t out, int64_t in, const float* x,
                              int64_t rows, const quant::QuantGrid& grid,
                              const quant::GptqOptions& options, quant::GptqStats* stats) override;
  quant::AwqSearch awq_search_scales(const float* x, int64_t n, int64_t in,
                                     const std::vector<const std::vector<float>*>& weights,
                                     const std::vector<int64_t>& outs, const quant::QuantGrid& grid,
                                     int grid_points, const std::vector<float>* abs_mean) override;
};

}  // namespace shardserve::quantize
