#pragma once
// The quantizer's own CUDA kernels (quant_kernels.cu), driven by cuda_numerics.cc: the small
// per-element and per-row work between its cuBLAS / cuSOLVER calls. All asynchronous on
// `stream`; launch errors are checked here (SHARDSERVE_CUDA_CHECK on cudaGetLastError), so the
// callers check only their own calls. No fmt in this header: nvcc compiles it.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace shardserve::quantize::cuda {

// quant::QuantGrid as plain integers (the kernels cannot take model/quant's types by value
// without its headers' host-only parts).
struct KernelGrid {
  int bits = 4;
  bool awq = false;   // QuantGrid::Style::kAwq (else kGptq)
  bool sym = true;
  int min_zero = 0;
  int64_t group_size = 0;  // the real width (in_features for -1)
};

// dst[k] = double(src[k]), k < n.
void convert_to_double(const float* src, double* dst, int64_t n, cudaStream_t stream);

// a [n, n] holds a symmetric matrix in its column-major lower triangle (what cublasDsyrk
// writes with CUBLAS_FILL_MODE_LOWER); copies it onto the upper one, so a is whole.
void mirror_lower(double* a, int64_t n, cudaStream_t stream);

// out[p][q] = h[perm[p]][perm[q]], both [n, n].
void gather_symmetric(const double* h, const int32_t* perm, double* out, int64_t n,
                      cudaStream_t stream);

// One lazy-batch block of GPTQ's column loop, columns [i1, i1 + width) of the permuted W
// [out, in] (row-major, double), every output row independently (one thread per row, its
// block slice in shared memory): quantize the column, spread its error over the block's later
// columns through u (row-major view of the upper Cholesky factor U of H^-1), record
// err[o][j - i1] = (w - q) / U_jj for the batched update of the later blocks (a GEMM, by the
// caller), q[o][j] (permuted column order), and add (w - q)^2 / U_jj^2 / 2 to loss[o].
// Grouped grids take a group's scale / zero when its first column is reached, from the
// updated block, into scales / zeros [groups, out]; with one group per row (`per_row`) they
// are read from there instead (the caller computed them from the whole row). The in-block
// updates stay in shared memory: w's columns [i1, i1 + width) in device memory keep their
// values from before the block, and nothing reads them again.
struct GptqBlock {
  const double* w;
  const double* u;
  int64_t out, in, i1, width;
  int64_t err_ld;  // row stride of err
  bool per_row;
  float* scales;
  int32_t* zeros;
  uint8_t* q;
  double* err;
  double* loss;
};
void gptq_block(const GptqBlock& block, const KernelGrid& grid, cudaStream_t stream);
// The widest block gptq_block takes: one row's slice (plus the padding row) in 48 KiB of
// shared memory. Narrower blocks put more rows in a CTA (up to 32 at width <= 186).
constexpr int64_t kGptqMaxBlockWidth = 3072;

// One AWQ candidate: wq[o][i] = RTN(w[o][i] * s[i]) / s[i] on `grid`, for W [out, in] (float,
// row-major), as quant::quantize_rtn(W * s).dequantize() / s computes it.
void awq_candidate(const float* w, const float* s, int64_t out, int64_t in, const KernelGrid& grid,
                   float* wq, cudaStream_t stream);

// partials[b] (b < blocks) = partial sums over k < n of double(y[k] - ref[k])^2 (the difference
// in float, as the CPU search takes it); the caller adds the `blocks` partials in order, so the
// total does not depend on scheduling.
constexpr int kSquaredErrorBlocks = 512;
void squared_error_partials(const float* y, const float* ref, int64_t n, double* partials,
                            cudaStream_t stream);

}  // namespace shardserve::quantize::cuda
