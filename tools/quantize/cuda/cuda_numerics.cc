#include "tools/quantize/cuda/cuda_numerics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "tools/quantize/cuda/quant_kernels.h"
#include "tools/quantize/cuda/solver_handles.h"

namespace shardserve::quantize {

using kernels::cuda::DeviceBuffer;
using quant::QuantizedLinear;

namespace {

// X^T X is accumulated over slabs of this many bytes of double activations (bounded device
// memory for any token count; each slab is one cublasDsyrk with k = its rows).
constexpr std::size_t kSlabBytes = std::size_t{256} << 20;

cuda::KernelGrid kernel_grid(const quant::QuantGrid& g, int64_t in) {
  cuda::KernelGrid k;
  k.bits = g.bits;
  k.awq = g.style == quant::QuantGrid::Style::kAwq;
  k.sym = g.sym;
  k.min_zero = g.min_zero;
  k.group_size = g.group_size == -1 ? in : g.group_size;
  return k;
}

}  // namespace

bool cuda_numerics_available() { return kernels::cuda::cuda_device_available(); }

struct CudaNumerics::Impl {
  kernels::cuda::Stream stream;
  cuda::CublasHandle blas{stream.get()};
  cuda::CusolverHandle solver{stream.get()};

  cudaStream_t s() const { return stream.get(); }
  // Host <-> device copies ordered on the stream; a download waits for its data.
  void upload(void* dst, const void* src, std::size_t bytes) const {
    SHARDSERVE_CUDA_CHECK_CTX(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s()),
                              fmt::format("{} bytes", bytes));
  }
  void download(void* dst, const void* src, std::size_t bytes) const {
    SHARDSERVE_CUDA_CHECK_CTX(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s()),
                              fmt::format("{} bytes", bytes));
    stream.synchronize();
  }

  DeviceBuffer hessian(const float* x, int64_t rows, int64_t in, double weight,
                       const std::vector<double>* initial);
  QuantizedLinear gptq(const std::vector<float>& w, int64_t out, int64_t in, const DeviceBuffer& h,
                       const quant::QuantGrid& grid, const quant::GptqOptions& opt,
                       quant::GptqStats* stats);
  bool upper_cholesky_of_inverse(double* a, int64_t n, DeviceBuffer& work, int lwork,
                                 int* info);
};

// H [in, in] (whole, symmetric, double) = initial + weight * X^T X.
DeviceBuffer CudaNumerics::Impl::hessian(const float* x, int64_t rows, int64_t in, double weight,
                                         const std::vector<double>* initial) {
  const std::size_t h_bytes = static_cast<std::size_t>(in) * in * sizeof(double);
  DeviceBuffer h(h_bytes, fmt::format("GPTQ Hessian [{}, {}]", in, in));
  if (initial != nullptr) {
    upload(h.data(), initial->data(), h_bytes);
  } else {
    SHARDSERVE_CUDA_CHECK(cudaMemsetAsync(h.data(), 0, h_bytes, s()));
  }
  const int64_t slab = std::clamp<int64_t>(
      static_cast<int64_t>(kSlabBytes / (static_cast<std::size_t>(in) * sizeof(double))), 1,
      std::max<int64_t>(rows, 1));
  DeviceBuffer xf(static_cast<std::size_t>(slab) * in * sizeof(float), "Hessian input slab");
  DeviceBuffer xd(static_cast<std::size_t>(slab) * in * sizeof(double), "Hessian input slab");
  const double beta = 1.0;
  for (int64_t r0 = 0; r0 < rows; r0 += slab) {
    const int64_t n = std::min(slab, rows - r0);
    upload(xf.data(), x + r0 * in, static_cast<std::size_t>(n) * in * sizeof(float));
    cuda::convert_to_double(xf.as<float>(), xd.as<double>(), n * in, s());
    // Row-major X [n, in] is column-major X^T [in, n]: syrk(N) gives X^T X, lower triangle.
    SHARDSERVE_CUBLAS_CHECK_CTX(
        cublasDsyrk(blas.get(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(in),
                    static_cast<int>(n), &weight, xd.as<double>(), static_cast<int>(in), &beta,
                    h.as<double>(), static_cast<int>(in)),
        fmt::format("in={} rows={}", in, n));
  }
  cuda::mirror_lower(h.as<double>(), in, s());
  return h;
}

// In place: a (symmetric positive definite, [n, n]) -> the row-major view of U with
// H^-1 = U^T U, as quantizer.cc's upper_cholesky_of_inverse. Column-major, a symmetric matrix
// is itself; potrf (lower) gives L with H = L L^T, potri the lower triangle of H^-1, potrf
// again L2 with H^-1 = L2 L2^T; the lower column-major triangle of L2, read row-major, is
// U = L2^T (the only entries the column loop reads: j <= k). False when a factorisation
// meets a non-positive pivot.
bool CudaNumerics::Impl::upper_cholesky_of_inverse(double* a, int64_t n, DeviceBuffer& work,
                                                   int lwork, int* info) {
  const int ni = static_cast<int>(n);
  int host_info = 0;
  auto pivots_ok = [&](const char* step) {
    download(&host_info, info, sizeof(int));
    require(host_info >= 0, "cuSOLVER {}: argument {} is invalid (n = {})", step, -host_info, n);
    return host_info == 0;
  };
  SHARDSERVE_CUSOLVER_CHECK(cusolverDnDpotrf(solver.get(), CUBLAS_FILL_MODE_LOWER, ni, a, ni,
                                             work.as<double>(), lwork, info));
  if (!pivots_ok("potrf(H)")) return false;
  SHARDSERVE_CUSOLVER_CHECK(cusolverDnDpotri(solver.get(), CUBLAS_FILL_MODE_LOWER, ni, a, ni,
                                             work.as<double>(), lwork, info));
  if (!pivots_ok("potri")) return false;
  SHARDSERVE_CUSOLVER_CHECK(cusolverDnDpotrf(solver.get(), CUBLAS_FILL_MODE_LOWER, ni, a, ni,
                                             work.as<double>(), lwork, info));
  return pivots_ok("potrf(H^-1)");
}

QuantizedLinear CudaNumerics::Impl::gptq(const std::vector<float>& w_in, int64_t out, int64_t in,
                                         const DeviceBuffer& h, const quant::QuantGrid& grid,
                                         const quant::GptqOptions& opt, quant::GptqStats* stats) {
  require(h.bytes() == static_cast<std::size_t>(in) * in * sizeof(double),
          "quantize_gptq: H has {} bytes for [{}, {}]", h.bytes(), in, in);
  // Host side, shared with quantizer.cc: dead inputs, the column order, the mean diagonal.
  std::vector<double> h_diagonal(in);
  SHARDSERVE_CUDA_CHECK(cudaMemcpy2DAsync(h_diagonal.data(), sizeof(double), h.data(),
                                          (in + 1) * sizeof(double), sizeof(double), in,
                                          cudaMemcpyDeviceToHost, s()));
  stream.synchronize();
  quant::GptqColumns cols = quant::gptq_columns(w_in, out, in, std::move(h_diagonal), grid, opt);
  const int64_t gs = cols.group_size, block = cols.block;
  const int64_t width_max = std::min(block, in);
  require(width_max <= cuda::kGptqMaxBlockWidth,
          "quantize_gptq on the GPU: block {} is wider than the column kernel's {} (use a "
          "smaller --block or --device cpu)",
          block, cuda::kGptqMaxBlockWidth);
  QuantizedLinear l = QuantizedLinear::empty(grid.bits, out, in, grid.group_size);
  quant::GptqStats st;
  st.dead_columns = cols.dead_columns;
  const std::vector<int64_t>& perm = cols.perm;
  const std::vector<double>& wp = cols.wp;
  const double mean_diag = cols.mean_diag;
  std::vector<double> hp_diag(in);
  for (int64_t p = 0; p < in; ++p) hp_diag[p] = cols.diagonal[perm[p]];
  std::vector<int32_t> perm32(perm.begin(), perm.end());
  const bool identity = !opt.act_order;

  // U: the permuted, damped H, then Cholesky / inverse / Cholesky (damping x10 on failure).
  const std::size_t h_bytes = h.bytes();
  DeviceBuffer u(h_bytes, fmt::format("GPTQ H^-1 factor [{}, {}]", in, in));
  DeviceBuffer perm_d(perm32.size() * sizeof(int32_t), "GPTQ column order");
  upload(perm_d.data(), perm32.data(), perm32.size() * sizeof(int32_t));
  int lwork_potrf = 0, lwork_potri = 0;
  SHARDSERVE_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(solver.get(), CUBLAS_FILL_MODE_LOWER,
                                                        static_cast<int>(in), u.as<double>(),
                                                        static_cast<int>(in), &lwork_potrf));
  SHARDSERVE_CUSOLVER_CHECK(cusolverDnDpotri_bufferSize(solver.get(), CUBLAS_FILL_MODE_LOWER,
                                                        static_cast<int>(in), u.as<double>(),
                                                        static_cast<int>(in), &lwork_potri));
  const int lwork = std::max({lwork_potrf, lwork_potri, 1});
  DeviceBuffer work(static_cast<std::size_t>(lwork) * sizeof(double), "cuSOLVER workspace");
  DeviceBuffer info(sizeof(int), "cuSOLVER info");
  std::vector<double> damped(in);
  double damp = opt.damp;
  for (int attempt = 0;; ++attempt) {
    if (identity) {
      SHARDSERVE_CUDA_CHECK(
          cudaMemcpyAsync(u.data(), h.data(), h_bytes, cudaMemcpyDeviceToDevice, s()));
    } else {
      cuda::gather_symmetric(h.as<double>(), perm_d.as<int32_t>(), u.as<double>(), in, s());
    }
    for (int64_t p = 0; p < in; ++p) {
      damped[p] = hp_diag[p];
      damped[p] += damp * mean_diag;
    }
    SHARDSERVE_CUDA_CHECK(cudaMemcpy2DAsync(u.data(), (in + 1) * sizeof(double), damped.data(),
                                            sizeof(double), sizeof(double), in,
                                            cudaMemcpyHostToDevice, s()));
    if (upper_cholesky_of_inverse(u.as<double>(), in, work, lwork, info.as<int>())) break;
    require(attempt < 6, "quantize_gptq: the Hessian is not positive definite even with damping {}",
            damp);
    damp *= 10;
  }

  // The column loop: a kernel per block, then the later columns' batched update (DGEMM).
  const bool per_row = grid.group_size == -1;
  const cuda::KernelGrid kg = kernel_grid(grid, in);
  if (per_row) {  // quantizer.cc's take_params(0, in), on the host from the same values
    std::vector<float> row(in);
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t k = 0; k < in; ++k) row[k] = static_cast<float>(wp[o * in + k]);
      const quant::GroupParams p = quant::find_group_params(row.data(), in, 1, grid);
      l.scales[o] = p.scale;
      l.zeros[o] = p.zero;
    }
  }
  DeviceBuffer w_d(wp.size() * sizeof(double), fmt::format("GPTQ weights [{}, {}]", out, in));
  upload(w_d.data(), wp.data(), wp.size() * sizeof(double));
  DeviceBuffer scales_d(l.scales.size() * sizeof(float), "GPTQ scales");
  DeviceBuffer zeros_d(l.zeros.size() * sizeof(int32_t), "GPTQ zeros");
  if (per_row) {
    upload(scales_d.data(), l.scales.data(), l.scales.size() * sizeof(float));
    upload(zeros_d.data(), l.zeros.data(), l.zeros.size() * sizeof(int32_t));
  }
  DeviceBuffer q_d(static_cast<std::size_t>(out) * in, "GPTQ codes");
  DeviceBuffer err_d(static_cast<std::size_t>(out) * width_max * sizeof(double), "GPTQ errors");
  DeviceBuffer loss_d(static_cast<std::size_t>(out) * sizeof(double), "GPTQ loss");
  SHARDSERVE_CUDA_CHECK(cudaMemsetAsync(loss_d.data(), 0, loss_d.bytes(), s()));
  const double minus_one = -1.0, one = 1.0;
  cuda::GptqBlock b{};  // the same operands for every block but i1 and width
  b.w = w_d.as<double>();
  b.u = u.as<double>();
  b.out = out;
  b.in = in;
  b.err_ld = width_max;
  b.per_row = per_row;
  b.scales = scales_d.as<float>();
  b.zeros = zeros_d.as<int32_t>();
  b.q = q_d.as<uint8_t>();
  b.err = err_d.as<double>();
  b.loss = loss_d.as<double>();
  for (int64_t i1 = 0; i1 < in; i1 += block) {
    const int64_t width = std::min(block, in - i1), i2 = i1 + width;
    b.i1 = i1;
    b.width = width;
    cuda::gptq_block(b, kg, s());
    if (i2 == in) break;
    // Column-major: W^T[i2:, :] -= (U[i1:i2, i2:])^T Err^T, i.e. W[:, i2:] -= Err U[i1:i2, i2:].
    const int m = static_cast<int>(in - i2);
    SHARDSERVE_CUBLAS_CHECK_CTX(
        cublasDgemm(blas.get(), CUBLAS_OP_N, CUBLAS_OP_N, m, static_cast<int>(out),
                    static_cast<int>(width), &minus_one, u.as<double>() + i1 * in + i2,
                    static_cast<int>(in), err_d.as<double>(), static_cast<int>(width_max), &one,
                    w_d.as<double>() + i2, static_cast<int>(in)),
        fmt::format("GPTQ update out={} in={} block [{}, {})", out, in, i1, i2));
  }
  std::vector<uint8_t> qp(static_cast<std::size_t>(out) * in);
  std::vector<double> loss(out);
  download(qp.data(), q_d.data(), qp.size());
  download(loss.data(), loss_d.data(), loss.size() * sizeof(double));
  if (!per_row) {
    download(l.scales.data(), scales_d.data(), l.scales.size() * sizeof(float));
    download(l.zeros.data(), zeros_d.data(), l.zeros.size() * sizeof(int32_t));
  }
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t p = 0; p < in; ++p) l.q[o * in + perm[p]] = qp[o * in + p];
    st.loss += loss[o];
  }
  for (int64_t p = 0; p < in; ++p) l.g_idx[perm[p]] = static_cast<int32_t>(p / gs);
  if (stats) *stats = st;
  return l;
}

CudaNumerics::CudaNumerics() {
  require(cuda_numerics_available(), "the GPU quantizer needs a CUDA device and none is usable");
  impl_ = std::make_unique<Impl>();
}

CudaNumerics::~CudaNumerics() = default;

void CudaNumerics::accumulate_hessian(const float* x, int64_t rows, int64_t in, double weight,
                                      std::vector<double>& hessian) {
  require(static_cast<int64_t>(hessian.size()) == in * in, "accumulate_hessian: H is not [{}, {}]",
          in, in);
  const DeviceBuffer h = impl_->hessian(x, rows, in, weight, &hessian);
  impl_->download(hessian.data(), h.data(), h.bytes());
}

QuantizedLinear CudaNumerics::quantize_gptq(const std::vector<float>& w, int64_t out, int64_t in,
                                            const std::vector<double>& hessian,
                                            const quant::QuantGrid& grid,
                                            const quant::GptqOptions& options,
                                            quant::GptqStats* stats) {
  require(static_cast<int64_t>(hessian.size()) == in * in,
          "quantize_gptq: H has {} values for [{}, {}]", hessian.size(), in, in);
  DeviceBuffer h(hessian.size() * sizeof(double), fmt::format("GPTQ Hessian [{}, {}]", in, in));
  impl_->upload(h.data(), hessian.data(), h.bytes());
  return impl_->gptq(w, out, in, h, grid, options, stats);
}

QuantizedLinear CudaNumerics::gptq(const std::vector<float>& w, int64_t out, int64_t in,
                                   const float* x, int64_t rows, const quant::QuantGrid& grid,
                                   const quant::GptqOptions& options, quant::GptqStats* stats) {
  const DeviceBuffer h = impl_->hessian(x, rows, in, 2.0 / static_cast<double>(rows), nullptr);
  return impl_->gptq(w, out, in, h, grid, options, stats);
}

quant::AwqSearch CudaNumerics::awq_search_scales(
    const float* x, int64_t n, int64_t in, const std::vector<const std::vector<float>*>& weights,
    const std::vector<int64_t>& outs, const quant::QuantGrid& grid, int grid_points,
    const std::vector<float>* abs_mean) {
  const quant::AwqProblem prob =
      quant::awq_problem(x, n, in, weights, outs, grid, grid_points, abs_mean);
  const int64_t total_out = prob.total_out;
  const std::vector<float>& mean = prob.mean;
  const std::vector<float>& wcat = prob.wcat;
  const Impl& im = *impl_;
  DeviceBuffer x_d(static_cast<std::size_t>(n) * in * sizeof(float), "AWQ inputs");
  DeviceBuffer w_d(wcat.size() * sizeof(float), "AWQ weights");
  DeviceBuffer wq_d(wcat.size() * sizeof(float), "AWQ candidate weights");
  DeviceBuffer ref_d(static_cast<std::size_t>(n) * total_out * sizeof(float), "AWQ outputs");
  DeviceBuffer y_d(ref_d.bytes(), "AWQ candidate outputs");
  DeviceBuffer s_d(static_cast<std::size_t>(in) * sizeof(float), "AWQ scales");
  DeviceBuffer part_d(cuda::kSquaredErrorBlocks * sizeof(double), "AWQ error partials");
  im.upload(x_d.data(), x, x_d.bytes());
  im.upload(w_d.data(), wcat.data(), w_d.bytes());
  // y[n, total_out] = x W^T: column-major y^T = W x^T, W's rows the transposed operand ("TN").
  auto outputs = [&](const DeviceBuffer& weights_d, DeviceBuffer& y) {
    const float one = 1.0f, zero = 0.0f;
    SHARDSERVE_CUBLAS_CHECK_CTX(
        cublasSgemm(im.blas.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(total_out),
                    static_cast<int>(n), static_cast<int>(in), &one, weights_d.as<float>(),
                    static_cast<int>(in), x_d.as<float>(), static_cast<int>(in), &zero,
                    y.as<float>(), static_cast<int>(total_out)),
        fmt::format("AWQ outputs n={} out={} in={}", n, total_out, in));
  };
  outputs(w_d, ref_d);
  const cuda::KernelGrid kg = kernel_grid(grid, in);
  std::vector<double> partials(cuda::kSquaredErrorBlocks);
  quant::AwqSearch best;
  best.loss = std::numeric_limits<double>::infinity();
  for (int step = 0; step < grid_points; ++step) {
    const double alpha = static_cast<double>(step) / grid_points;
    const std::vector<float> s = quant::awq_candidate_scales(mean, alpha);
    im.upload(s_d.data(), s.data(), s.size() * sizeof(float));
    cuda::awq_candidate(w_d.as<float>(), s_d.as<float>(), total_out, in, kg, wq_d.as<float>(),
                        im.s());
    outputs(wq_d, y_d);
    cuda::squared_error_partials(y_d.as<float>(), ref_d.as<float>(), n * total_out,
                                 part_d.as<double>(), im.s());
    im.download(partials.data(), part_d.data(), part_d.bytes());
    double mse = 0;
    for (const double p : partials) mse += p;
    mse /= static_cast<double>(n * total_out);
    best.consider(step, alpha, mse, s);
  }
  return best;
}

}  // namespace shardserve::quantize
