#include "model/quant/quantizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/error.h"
#include "common/half.h"
#include "kernels/cpu/matmul.h"

namespace shardserve::quant {
namespace {

constexpr float kMinScale = 6.0e-8f;  // the smallest fp16 subnormal: a scale is never 0

// The scale stored (fp16), rounded up rather than to nearest: the grid then still spans the
// group's range, so no weight is clipped by more than half a step.
float fp16_scale(float s) {
  uint16_t h = fp16_bits(std::max(s, kMinScale));
  if (fp16_to_float(h) < s) ++h;  // positive: the next fp16 up
  return fp16_to_float(h);
}

// Lower Cholesky factor of the symmetric positive-definite a [n, n] (in place, upper zeroed).
// Returns false when a pivot is not positive.
bool cholesky_lower(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) return false;
    const double ljj = std::sqrt(d);
    a[j * n + j] = ljj;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      const double* ri = &a[i * n];
      const double* rj = &a[j * n];
      for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
      a[i * n + j] = s / ljj;
    }
    for (int64_t k = j + 1; k < n; ++k) a[j * n + k] = 0;
  }
  return true;
}

// The upper Cholesky factor U of H^-1 (H^-1 = U^T U), as AutoGPTQ computes it with
// cholesky -> cholesky_inverse -> cholesky(upper=True). False when H is not positive definite.
bool upper_cholesky_of_inverse(std::vector<double> h, int64_t n, std::vector<double>& u) {
  if (!cholesky_lower(h, n)) return false;
  // Linv = L^-1 (lower triangular), by forward substitution column by column.
  std::vector<double> linv(n * n, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    linv[j * n + j] = 1.0 / h[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) {
      double s = 0;
      for (int64_t k = j; k < i; ++k) s += h[i * n + k] * linv[k * n + j];
      linv[i * n + j] = -s / h[i * n + i];
    }
  }
  // H^-1 = Linv^T Linv.
  std::vector<double> inv(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t k = i; k < n; ++k) s += linv[k * n + i] * linv[k * n + j];
      inv[i * n + j] = inv[j * n + i] = s;
    }
  if (!cholesky_lower(inv, n)) return false;
  u.assign(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) u[j * n + i] = inv[i * n + j];
  return true;
}

}  // namespace

void check_grid(const QuantGrid& g, int64_t in) {
  require(g.bits == 4 || g.bits == 8, "quantizer: bits {} is not supported (supported: 4, 8)",
          g.bits);
  require(g.group_size == -1 || (g.group_size > 0 && in % g.group_size == 0),
          "quantizer: group_size {} does not divide in_features {}", g.group_size, in);
  require(g.style == QuantGrid::Style::kGptq || g.bits == 4,
          "quantizer: the awq grid is 4-bit only, not {}", g.bits);
}

AwqProblem awq_problem(const float* x, int64_t n, int64_t in,
                       const std::vector<const std::vector<float>*>& weights,
                       const std::vector<int64_t>& outs, const QuantGrid& grid, int grid_points,
                       const std::vector<float>* abs_mean) {
  check_grid(grid, in);
  require(!weights.empty() && weights.size() == outs.size() && grid_points > 0 && n > 0,
          "awq_search_scales: {} weights, {} shapes, {} grid points, {} tokens", weights.size(),
          outs.size(), grid_points, n);
  AwqProblem p;
  for (std::size_t k = 0; k < weights.size(); ++k) {
    require(static_cast<int64_t>(weights[k]->size()) == outs[k] * in,
            "awq_search_scales: weight {} is not [{}, {}]", k, outs[k], in);
    p.total_out += outs[k];
  }
  p.mean.assign(in, 0.0f);
  if (abs_mean) {
    require(static_cast<int64_t>(abs_mean->size()) == in, "awq_search_scales: abs_mean size");
    p.mean = *abs_mean;
  } else {
    std::vector<double> acc(in, 0.0);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < in; ++i) acc[i] += std::fabs(x[r * in + i]);
    for (int64_t i = 0; i < in; ++i) p.mean[i] = static_cast<float>(acc[i] / n);
  }
  p.wcat.reserve(p.total_out * in);
  for (const auto* w : weights) p.wcat.insert(p.wcat.end(), w->begin(), w->end());
  return p;
}

GroupParams find_group_params(const float* w, int64_t n, int64_t stride, const QuantGrid& grid) {
  const int32_t maxq = (1 << grid.bits) - 1;
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (int64_t k = 0; k < n; ++k) {
    lo = std::min(lo, w[k * stride]);
    hi = std::max(hi, w[k * stride]);
  }
  GroupParams p;
  if (grid.style == QuantGrid::Style::kAwq) {
    p.scale = fp16_scale(std::max(hi - lo, 1e-5f) / static_cast<float>(maxq));
    p.zero = std::clamp(static_cast<int32_t>(-std::nearbyint(lo / p.scale)), 0, maxq);
    return p;
  }
  // AutoGPTQ: the range always contains 0.
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  if (grid.sym) {
    hi = std::max(-lo, hi);
    lo = -hi;
  }
  if (lo == 0 && hi == 0) {
    lo = -1;
    hi = 1;
  }
  if (grid.sym) {
    p.scale = fp16_scale((hi - lo) / static_cast<float>(maxq));
    p.zero = (maxq + 1) / 2;
    return p;
  }
  float scale = (hi - lo) / static_cast<float>(maxq);
  int32_t zero = static_cast<int32_t>(std::nearbyint(-lo / scale));
  if (zero < grid.min_zero) {  // stretch the grid so that hi still fits above the raised zero
    zero = grid.min_zero;
    scale = std::max(hi / static_cast<float>(maxq - zero), -lo / static_cast<float>(zero));
  }
  p.scale = fp16_scale(scale);
  p.zero = std::clamp(zero, 0, maxq);
  return p;
}

QuantizedLinear quantize_rtn(const std::vector<float>& w, int64_t out, int64_t in,
                             const QuantGrid& grid) {
  check_grid(grid, in);
  require(static_cast<int64_t>(w.size()) == out * in, "quantize_rtn: {} weights for [{}, {}]",
          w.size(), out, in);
  QuantizedLinear l = QuantizedLinear::empty(grid.bits, out, in, grid.group_size);
  const int64_t gs = l.group_size;
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t g = 0; g < l.num_groups; ++g) {
      const float* row = w.data() + o * in + g * gs;
      const GroupParams p = find_group_params(row, gs, 1, grid);
      l.scales[g * out + o] = p.scale;
      l.zeros[g * out + o] = p.zero;
      for (int64_t k = 0; k < gs; ++k)
        l.q[o * in + g * gs + k] = static_cast<uint8_t>(quantize_value(row[k], p, grid.bits));
    }
  }
  return l;
}

std::vector<int64_t> gptq_column_order(const std::vector<double>& diagonal, bool act_order) {
  std::vector<int64_t> perm(diagonal.size());
  std::iota(perm.begin(), perm.end(), 0);
  if (act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return diagonal[a] > diagonal[b]; });
  }
  return perm;
}

std::vector<float> awq_candidate_scales(const std::vector<float>& abs_mean, double alpha) {
  std::vector<float> s(abs_mean.size());
  float smax = 0, smin = std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = std::max(static_cast<float>(std::pow(static_cast<double>(abs_mean[i]), alpha)), 1e-4f);
    smax = std::max(smax, s[i]);
    smin = std::min(smin, s[i]);
  }
  const float norm = std::sqrt(smax * smin);
  for (auto& v : s) v /= norm;
  return s;
}

void accumulate_hessian(const float* x, int64_t rows, int64_t in, double weight,
                        std::vector<double>& hessian) {
  require(static_cast<int64_t>(hessian.size()) == in * in, "accumulate_hessian: H is not [{}, {}]",
          in, in);
  constexpr int64_t kChunk = 256;  // float partial sums over at most 256 tokens
  std::vector<float> xt, partial(in * in);
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t n = std::min(kChunk, rows - r0);
    xt.assign(in * n, 0.0f);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < in; ++i) xt[i * n + r] = x[(r0 + r) * in + i];
    kernels::cpu::matmul_nt(xt.data(), xt.data(), partial.data(), in, in, n);
    for (int64_t k = 0; k < in * in; ++k) hessian[k] += weight * partial[k];
  }
}

GptqColumns gptq_columns(const std::vector<float>& w_in, int64_t out, int64_t in,
                         std::vector<double> h_diagonal, const QuantGrid& grid,
                         const GptqOptions& opt) {
  check_grid(grid, in);
  require(static_cast<int64_t>(w_in.size()) == out * in &&
              static_cast<int64_t>(h_diagonal.size()) == in,
          "quantize_gptq: W has {} values for [{}, {}] and H's diagonal {} for {}", w_in.size(),
          out, in, h_diagonal.size(), in);
  GptqColumns c;
  c.group_size = grid.group_size == -1 ? in : grid.group_size;
  c.block = std::max<int64_t>(opt.block, 1);
  require(grid.group_size == -1 || c.block % c.group_size == 0,
          "quantize_gptq: block {} is not a multiple of group_size {}", c.block, c.group_size);
  std::vector<double> w(w_in.begin(), w_in.end());
  for (int64_t i = 0; i < in; ++i) {
    if (h_diagonal[i] == 0) {  // never active: its weights cannot matter, AutoGPTQ zeroes them
      h_diagonal[i] = 1;
      for (int64_t o = 0; o < out; ++o) w[o * in + i] = 0;
      ++c.dead_columns;
    }
  }
  c.diagonal = std::move(h_diagonal);
  c.perm = gptq_column_order(c.diagonal, opt.act_order);
  c.wp.resize(out * in);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t p = 0; p < in; ++p) c.wp[o * in + p] = w[o * in + c.perm[p]];
  for (int64_t p = 0; p < in; ++p) c.mean_diag += c.diagonal[c.perm[p]];
  c.mean_diag /= static_cast<double>(in);
  return c;
}

void AwqSearch::consider(int step, double a, double mse, const std::vector<float>& s) {
  if (step == 0) loss_unscaled = mse;
  if (mse < loss) {
    loss = mse;
    alpha = a;
    scales = s;
  }
}

QuantizedLinear quantize_gptq(const std::vector<float>& w_in, int64_t out, int64_t in,
                              std::vector<double> h, const QuantGrid& grid,
                              const GptqOptions& opt, GptqStats* stats) {
  require(static_cast<int64_t>(h.size()) == in * in, "quantize_gptq: H has {} values for [{}, {}]",
          h.size(), in, in);
  std::vector<double> h_diagonal(in);
  for (int64_t i = 0; i < in; ++i) h_diagonal[i] = h[i * in + i];
  GptqColumns cols = gptq_columns(w_in, out, in, std::move(h_diagonal), grid, opt);
  const int64_t gs = cols.group_size, block = cols.block;
  const std::vector<int64_t>& perm = cols.perm;
  std::vector<double>& wp = cols.wp;
  QuantizedLinear l = QuantizedLinear::empty(grid.bits, out, in, grid.group_size);
  GptqStats st;
  st.dead_columns = cols.dead_columns;
  for (int64_t i = 0; i < in; ++i) h[i * in + i] = cols.diagonal[i];
  // Permuted copy: hp[p][q] = h[perm[p]][perm[q]].
  std::vector<double> hp(in * in);
  for (int64_t p = 0; p < in; ++p)
    for (int64_t q = 0; q < in; ++q) hp[p * in + q] = h[perm[p] * in + perm[q]];
  const double mean_diag = cols.mean_diag;
  std::vector<double> u;
  double damp = opt.damp;
  for (int attempt = 0;; ++attempt) {
    std::vector<double> damped = hp;
    for (int64_t p = 0; p < in; ++p) damped[p * in + p] += damp * mean_diag;
    if (upper_cholesky_of_inverse(std::move(damped), in, u)) break;
    require(attempt < 6, "quantize_gptq: the Hessian is not positive definite even with damping {}",
            damp);
    damp *= 10;  // AutoGPTQ would stop here; a stronger damping still gives a valid result
  }

  std::vector<float> wrow(gs);
  std::vector<GroupParams> params(out);
  auto take_params = [&](int64_t p0, int64_t width) {
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t k = 0; k < width; ++k) wrow[k] = static_cast<float>(wp[o * in + p0 + k]);
      params[o] = find_group_params(wrow.data(), width, 1, grid);
    }
  };
  if (grid.group_size == -1) {
    wrow.resize(in);
    take_params(0, in);
  }
  std::vector<double> err(out * block);
  for (int64_t i1 = 0; i1 < in; i1 += block) {
    const int64_t i2 = std::min(i1 + block, in);
    for (int64_t j = i1; j < i2; ++j) {
      if (grid.group_size != -1 && j % gs == 0) {
        take_params(j, gs);
        for (int64_t o = 0; o < out; ++o) {
          l.scales[(j / gs) * out + o] = params[o].scale;
          l.zeros[(j / gs) * out + o] = params[o].zero;
        }
      }
      const double d = u[j * in + j];
      for (int64_t o = 0; o < out; ++o) {
        double* row = &wp[o * in];
        const double wj = row[j];
        const int32_t q = quantize_value(static_cast<float>(wj), params[o], grid.bits);
        l.q[o * in + perm[j]] = static_cast<uint8_t>(q);
        const double deq = static_cast<double>(params[o].scale) * (q - params[o].zero);
        const double e = (wj - deq) / d;
        st.loss += (wj - deq) * (wj - deq) / (d * d) / 2;
        const double* uj = &u[j * in];
        for (int64_t k = j + 1; k < i2; ++k) row[k] -= e * uj[k];
        err[o * block + (j - i1)] = e;
      }
    }
    // Lazy batch update of the columns after the block.
    for (int64_t o = 0; o < out; ++o) {
      double* row = &wp[o * in];
      for (int64_t j = i1; j < i2; ++j) {
        const double e = err[o * block + (j - i1)];
        if (e == 0) continue;
        const double* uj = &u[j * in];
        for (int64_t k = i2; k < in; ++k) row[k] -= e * uj[k];
      }
    }
  }
  if (grid.group_size == -1) {
    for (int64_t o = 0; o < out; ++o) {
      l.scales[o] = params[o].scale;
      l.zeros[o] = params[o].zero;
    }
  }
  for (int64_t p = 0; p < in; ++p) l.g_idx[perm[p]] = static_cast<int32_t>(p / gs);
  if (stats) *stats = st;
  return l;
}

AwqSearch awq_search_scales(const float* x, int64_t n, int64_t in,
                            const std::vector<const std::vector<float>*>& weights,
                            const std::vector<int64_t>& outs, const QuantGrid& grid,
                            int grid_points, const std::vector<float>* abs_mean) {
  AwqProblem prob = awq_problem(x, n, in, weights, outs, grid, grid_points, abs_mean);
  const int64_t total_out = prob.total_out;
  const std::vector<float>& mean = prob.mean;
  const std::vector<float>& wcat = prob.wcat;
  std::vector<float> ref(n * total_out), y(n * total_out), wq(total_out * in), ws;
  kernels::cpu::matmul_nt(x, wcat.data(), ref.data(), n, total_out, in);

  AwqSearch best;
  best.loss = std::numeric_limits<double>::infinity();
  std::vector<float> s;
  for (int step = 0; step < grid_points; ++step) {
    const double alpha = static_cast<double>(step) / grid_points;
    s = awq_candidate_scales(mean, alpha);
    int64_t row0 = 0;
    for (std::size_t k = 0; k < weights.size(); ++k) {
      ws = *weights[k];
      for (int64_t o = 0; o < outs[k]; ++o)
        for (int64_t i = 0; i < in; ++i) ws[o * in + i] *= s[i];
      const std::vector<float> deq = quantize_rtn(ws, outs[k], in, grid).dequantize();
      for (int64_t o = 0; o < outs[k]; ++o)
        for (int64_t i = 0; i < in; ++i) wq[(row0 + o) * in + i] = deq[o * in + i] / s[i];
      row0 += outs[k];
    }
    kernels::cpu::matmul_nt(x, wq.data(), y.data(), n, total_out, in);
    double mse = 0;
    for (int64_t k = 0; k < n * total_out; ++k) mse += double(y[k] - ref[k]) * (y[k] - ref[k]);
    mse /= static_cast<double>(n * total_out);
    best.consider(step, alpha, mse, s);
  }
  return best;
}

}  // namespace shardserve::quant
