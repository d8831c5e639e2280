#pragma once
// Weight quantizers: round-to-nearest, GPTQ (Frantar et al. 2022, as AutoGPTQ runs it) and the
// AWQ activation-aware scale search (Lin et al. 2023, as AutoAWQ runs it). Pure arithmetic on
// float matrices in nn.Linear orientation (W: [out, in], row-major); the calibration activations
// come from the caller (tools/quantize runs the model to get them).
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/quant/formats.h"

namespace shardserve::quant {

// The integer grid of one quantized linear.
struct QuantGrid {
  enum class Style {
    kGptq,  // AutoGPTQ's Quantizer: range includes 0; sym puts the zero at 2^(bits-1)
    kAwq,   // AutoAWQ's pseudo_quantize_tensor(zero_point=True): [min, max] of the group
  };
  Style style = Style::kGptq;
  int bits = 4;
  int64_t group_size = 128;  // -1: one group over all input features
  bool sym = true;           // kGptq only (kAwq is always asymmetric)
  // Smallest zero point allowed. GPTQ v1 files store zero - 1, so a zero of 0 is not storable:
  // writers of checkpoint_format "gptq" quantize asym groups with min_zero = 1 (the scale then
  // grows so the group's maximum still fits).
  int min_zero = 0;
};

struct GroupParams {
  float scale = 1;  // fp16-representable
  int32_t zero = 0;
};

// Parameters for the `n` values w[0], w[stride], ... of one group of one output row.
GroupParams find_group_params(const float* w, int64_t n, int64_t stride, const QuantGrid& grid);
inline int32_t quantize_value(float w, const GroupParams& p, int bits) {
  const float v = std::nearbyint(w / p.scale) + static_cast<float>(p.zero);
  const float maxq = static_cast<float>((1 << bits) - 1);
  return static_cast<int32_t>(v < 0 ? 0 : (v > maxq ? maxq : v));
}

// Round-to-nearest: every group's parameters from its own min/max, every weight rounded.
QuantizedLinear quantize_rtn(const std::vector<float>& w, int64_t out, int64_t in,
                             const QuantGrid& grid);

struct GptqOptions {
  bool act_order = false;   // desc_act: columns in order of decreasing Hessian diagonal
  double damp = 0.01;       // added to H's diagonal, as a fraction of its mean
  int64_t block = 128;      // lazy-batch block width (a multiple of the group size)
};
struct GptqStats {
  double loss = 0;          // sum over rows and columns of (w - q)^2 / [H^-1]_jj / 2
  int64_t dead_columns = 0; // inputs never active in the calibration data (weights zeroed)
};

// GPTQ on W with the Hessian H = 2/N sum_n x_n x_n^T ([in, in], double). Column by column
// (in act-order if asked): quantize, then spread the error over the columns not yet quantized
// through the upper Cholesky factor of H^-1, in blocks of `block` columns. Group parameters are
// taken when a group's first column is reached, from the weights as updated so far; g_idx
// records each input's group (a permuted grouping under act-order).
QuantizedLinear quantize_gptq(const std::vector<float>& w, int64_t out, int64_t in,
                              std::vector<double> hessian, const QuantGrid& grid,
                              const GptqOptions& options, GptqStats* stats = nullptr);

// The order in which quantize_gptq visits the columns, from H's diagonal (dead inputs already
// set to 1): 0, 1, ..., in - 1, or under act-order by decreasing diagonal (stable: ties keep
// their index order). Shared with the GPU quantizer so that both permute identically.
std::vector<int64_t> gptq_column_order(const std::vector<double>& diagonal, bool act_order);

// What both GPTQ paths (quantize_gptq and the GPU's, tools/quantize/cuda) do on the host before
// the factorisation: check the operands, zero the weights of dead inputs (diagonal 0, set to 1),
// pick the column order and permute W by it. h_diagonal: [in] H's diagonal.
struct GptqColumns {
  int64_t group_size = 0;       // in for per-row grids
  int64_t block = 0;            // the lazy-batch width (>= 1)
  std::vector<double> diagonal; // [in] H's diagonal, dead inputs 1
  std::vector<int64_t> perm;    // [in] gptq_column_order
  std::vector<double> wp;       // [out, in] wp[o][p] = w[o][perm[p]], dead inputs 0
  double mean_diag = 0;         // mean of the diagonal, summed in column order (damping unit)
  int64_t dead_columns = 0;
};
GptqColumns gptq_columns(const std::vector<float>& w, int64_t out, int64_t in,
                         std::vector<double> h_diagonal, const QuantGrid& grid,
                         const GptqOptions& options);

// Accumulates H += 2/N_total * X^T X for a chunk X [rows, in] (N_total: the final token count).
void accumulate_hessian(const float* x, int64_t rows, int64_t in, double weight,
                        std::vector<double>& hessian);

// Refuses what the quantizers cannot write (bits other than 4 / 8, a group size not dividing
// in, the AWQ grid at 8 bits), naming the value.
void check_grid(const QuantGrid& g, int64_t in);

// What awq_search_scales (this file's and the GPU's, tools/quantize/cuda) starts from, after
// checking its operands: the linears concatenated [total_out, in] and the per-channel mean |x|
// (abs_mean when given, else from x in double).
struct AwqProblem {
  int64_t total_out = 0;
  std::vector<float> wcat;
  std::vector<float> mean;
};
AwqProblem awq_problem(const float* x, int64_t n, int64_t in,
                       const std::vector<const std::vector<float>*>& weights,
                       const std::vector<int64_t>& outs, const QuantGrid& grid, int grid_points,
                       const std::vector<float>* abs_mean);

struct AwqSearch {
  std::vector<float> scales;  // [in] s: the linears use W * s (columns), their input x / s
  double alpha = 0;           // the chosen exponent of s = mean|x|^alpha (normalised)
  double loss = 0;            // output MSE with the chosen s
  double loss_unscaled = 0;   // output MSE with s = 1 (plain round-to-nearest)

  // The search's step over candidates (start from loss = infinity): step 0 (alpha 0, s = 1)
  // also records loss_unscaled; a strictly lower mse replaces the best.
  void consider(int step, double alpha, double mse, const std::vector<float>& s);
};

// One AWQ candidate: s_i = max(mean_i^alpha, 1e-4), normalised by sqrt(max s * min s).
// Shared with the GPU search so that both try exactly the same scales.
std::vector<float> awq_candidate_scales(const std::vector<float>& abs_mean, double alpha);

// AWQ's search for one group of linears sharing the input x [n, in] (e.g. q/k/v): for alpha in
// {0, 1/grid_points, ..., (grid_points-1)/grid_points}, s = mean_n|x|^alpha normalised by
// sqrt(max s * min s), each W quantized as RTN(W * s) / s on `grid`, and the alpha whose
// concatenated outputs x W^T have the lowest mean squared error against full precision wins.
// `abs_mean` ([in], optional): mean|x| per input channel over all calibration tokens (x may be
// a subsample); computed from x when null.
AwqSearch awq_search_scales(const float* x, int64_t n, int64_t in,
                            const std::vector<const std::vector<float>*>& weights,
                            const std::vector<int64_t>& outs, const QuantGrid& grid,
                            int grid_points = 20, const std::vector<float>* abs_mean = nullptr);

}  // namespace shardserve::quant
