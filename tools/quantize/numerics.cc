#include "tools/quantize/numerics.h"

namespace shardserve::quantize {

quant::QuantizedLinear CpuNumerics::gptq(const std::vector<float>& w, int64_t out, int64_t in,
                                         const float* x, int64_t rows,
                                         const quant::QuantGrid& grid,
                                         const quant::GptqOptions& options,
                                         quant::GptqStats* stats) {
  std::vector<double> h(in * in, 0.0);
  quant::accumulate_hessian(x, rows, in, 2.0 / static_cast<double>(rows), h);
  return quant::quantize_gptq(w, out, in, std::move(h), grid, options, stats);
}

quant::AwqSearch CpuNumerics::awq_search_scales(
    const float* x, int64_t n, int64_t in, const std::vector<const std::vector<float>*>& weights,
    const std::vector<int64_t>& outs, const quant::QuantGrid& grid, int grid_points,
    const std::vector<float>* abs_mean) {
  return quant::awq_search_scales(x, n, in, weights, outs, grid, grid_points, abs_mean);
}

}  // namespace shardserve::quantize
