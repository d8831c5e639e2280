#pragma once
// 4-bit weight-only matrix products (W4A16) for GPTQ and AWQ checkpoints on the GPU:
//   y[m, n] = x[m, k] · Ŵᵀ,  x bf16, Ŵ[j][i] = scale[j][g] · (code[j][c] − zero[j][g])
// for the input column i = perm[c] at stored column c of group g = c / group_size.
//
// One device layout for both formats (model/quant converts either to kernels::cpu::QuantMatrix
// at load; make_w4_layout converts that here), so one kernel serves GPTQ (with or without
// act-order) and AWQ:
//   codes  [n_padded * k / 2] bytes: tiles of 16 rows x 64 stored columns in the operand order
//                                  of the tensor cores' mma.m16n8k16 (kernels/cuda/quant_layout.h;
//                                  n_padded = n rounded up to 16, padding codes zero);
//   meta   uint32 [n_padded, groups] {fp16 scale (low half), bf16 128 + zero (high half)}: 4/group_size
//                                  bytes per weight (0.031 at g128);
//   perm   int32  [k] or null      input column of each stored column (act-order; null = identity);
//   groups are uniform runs of group_size stored columns (32, 64, 128, ... or k), k % 64 == 0.
// A layout the kernels cannot take (8 bits, uneven groups, k % 64 != 0) is reported by
// w4_layout_problem; the runner keeps such a linear dense in bf16 instead.
//
// Three paths, picked by the number of rows m (w4_matmul):
//   * decode (m <= kW4DecodeMaxRows): w4_gemv, one pass over the packed weights per 16 rows of x:
//     codes become bf16 (code - zero) pairs in registers and go through mma.sync with float32
//     accumulation, scaled per group (kernels/cuda/quant_gemm.cu says how): memory-bound;
//   * tiled (m <= w4_matmul_max_tiled_rows(group size)): groups of whole 64-column k tiles take
//     w4_gemm_wgmma from kW4WgmmaMinRows to kW4WgmmaMaxRows rows (quant_gemm_wgmma.cu: warpgroup
//     products, weights rounded to bf16, 256 weight rows x 16-128 rows of x per CTA); fewer
//     rows, and other group sizes, take w4_gemm_tc up to kW4TiledMaxRows (quant_gemm_tc.cu:
//     mma.sync, 128 weight rows x 16-128 rows of x per CTA, the decode kernel's exact arithmetic
//     up to kW4TcExactMaxRows rows, weights rounded to bf16 above: W4TcArithmetic). Each weight byte is read once per CTA batch of x,
//     and nothing is written but y;
//   * dense (larger m): the weight is dequantized into a bf16 [n, k] scratch matrix (original
//     column order) and multiplied by cuBLASLt (GemmBf16): wgmma does the work at its full
//     rate, the dequantization costs 2.5 bytes per weight once per call.
// Every entry point enqueues on `stream`, allocates nothing and never synchronises (capturable
// in a CUDA graph); scratch memory is passed in, sized by the *_bytes functions.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cuda/gemm.h"

namespace shardserve::kernels::cuda {

// Rows of x up to which w4_matmul takes the decode kernel, then the tiled kernels (measured:
// docs/PERF.md).
// H200, 70B layer at TP 1 (2026-12-03, run 36): decode 148.9 / 160.4 / 201.3 µs at 1 / 4 / 8 rows
// against the tiled kernel's 180.7 / 181.6 / 183.7: decode ahead up to 4 rows.
// The tiled kernel's cost steps with its CTA batch (16, 32, 64, then blocks of 128 rows). Above
// 64 rows it takes rounded weights (W4TcArithmetic below): 716.1 µs at 128 rows against the
// exact arithmetic's 865.8 and the dense path's 1276.4; at 256, 1212.8 against 1501.9 and
// 1407.5 (the batch-256 step 116.5 ms; 136.0 on the dense path in run 31): tiled to 256 rows,
// dense above (at 512, 2355 against 1921).
// The wgmma kernel (run 39): 197.6 / 199.6 / 218.2 / 275.8 µs at 8 / 16 / 32 / 64 rows, against
// w4_gemm_tc's 181.1 / 189.9 / 267.8 / 432.1: wgmma from 17 rows. Run 41 (4 A buffers): 379.0 /
// 740.5 / 1331.4 / 2707.0 / 6075.3 at 128 / 256 / 512 / 1024 / 2048 rows, against the dense
// path's 1269.3 / 1410.5 / 1982.8 / 3427.8 / 5751.9: the two lines cross near 1700 rows, so
// wgmma to 1536 (the batch-64 step 40.6 → 28.7 ms, batch 256 116.5 → 79.9).
inline constexpr int64_t kW4DecodeMaxRows = 4;
inline constexpr int64_t kW4TiledMaxRows = 256;
inline constexpr int64_t kW4WgmmaMinRows = 17;
inline constexpr int64_t kW4WgmmaMaxRows = 1536;

// How the tiled kernel applies the group scales:
//   kExactGroups: Σ (code − zero) · x per group in float32, times the fp16 scale (the decode
//     kernel's numbers: no weight is rounded); the group sums hold as many registers as the
//     accumulators, so a warp holds at most 64 rows of x;
//   kBf16Weights: A = bf16(bf16(scale) · (code − zero)), summed straight into the accumulators
//     (the dense path's numbers, but for the scale's own rounding to bf16); a warp holds 128
//     rows of x, so each code is converted once per 128 rows instead of once per 64.
// w4_matmul's tiled path takes kBf16Weights above kW4TcExactMaxRows rows (run 36, 70B layer:
// 670 against 433 µs at 64 rows, its CTA of 128 rows half empty; 716 against 866 at 128).
// Run 35's profile has it latency-bound (8 warps per multiprocessor at 234 registers, 40 % of
// stalls on fixed-latency dependencies, the tensor pipe 51 % busy).
enum class W4TcArithmetic { kExactGroups, kBf16Weights };
inline constexpr int64_t kW4TcExactMaxRows = 64;
inline W4TcArithmetic w4_matmul_tc_arithmetic(int64_t m) {
  return m > kW4TcExactMaxRows ? W4TcArithmetic::kBf16Weights : W4TcArithmetic::kExactGroups;
}

// A W4 weight on the device (pointers into device memory; not owned).
struct W4Weights {
  const uint8_t* codes = nullptr;   // [n_padded * k / 2] (tiles), 16-byte aligned
  const uint32_t* meta = nullptr;   // [n_padded, groups]
  const int32_t* perm = nullptr;    // [k] or null (identity)
  int64_t n = 0, k = 0, group_size = 0;
  int64_t groups() const { return (k + group_size - 1) / group_size; }
};

// The same layout in host memory, ready to copy (what the loader and the tests build).
struct W4HostLayout {
  int64_t n = 0, k = 0, group_size = 0;
  std::vector<uint8_t> codes;    // [n_padded * k / 2], tile order (quant_layout.h)
  std::vector<uint32_t> meta;    // [n_padded, groups]
  std::vector<int32_t> perm;     // [k], empty when identity
  std::size_t bytes() const {
    return codes.size() + meta.size() * 4 + perm.size() * 4;
  }
};

// Why the W4 kernels cannot take a QuantMatrix-style layout (kernels/cpu/quant_matmul.h:
// group_begin [groups + 1] stored-column offsets), or nullopt when they can.
std::optional<std::string> w4_layout_problem(int bits, int64_t k, const int64_t* group_begin,
                                             int64_t groups);

// From the CPU kernel's layout: codes [n, k / 2] (4-bit, row-major, low nibble even column),
// reordered into tiles; scales /
// zeros float [n, groups] (scales must be exact in fp16, zeros integers in [0, 15]), perm [k],
// group_begin [groups + 1]. Throws (naming the problem) where w4_layout_problem would.
W4HostLayout make_w4_layout(int64_t n, int64_t k, const uint8_t* codes, const float* scales,
                            const float* zeros, const int32_t* perm, const int64_t* group_begin,
                            int64_t groups);

// The decode kernel's grid: K splits for about this many warps per multiprocessor (the
// benchmark sweeps it; the tests run two values).
inline constexpr int kW4DecodeWarpsPerSm = 32;
// Workspace of the decode kernel for m rows: split-K partial sums float [splits, min(m, 16), n],
// then (16-byte aligned) x in stored-column order, bf16 [m, k] (act-order).
std::size_t w4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k,
                                    int warps_per_sm = kW4DecodeWarpsPerSm);

// Decode path. x: bf16 [m, k] (row stride k); y: bf16 or float [m, ldy] (columns [0, n)).
// Any m (16 rows per pass over the weights).
void w4_gemv(const __nv_bfloat16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
             GemmOut out, void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
             int warps_per_sm = kW4DecodeWarpsPerSm);

// Tiled path. x: bf16 [m, k] (row stride k); y: bf16 or float [m, ldy]. Any m.
// workspace: w4_gemm_tc_workspace_bytes(m, n, k, arithmetic): split-K partial sums float
// [splits, m, n], then (16-byte aligned) x in stored-column order (act-order).
std::size_t w4_gemm_tc_workspace_bytes(
    int64_t m, int64_t n, int64_t k,
    W4TcArithmetic arithmetic = W4TcArithmetic::kExactGroups);
void w4_gemm_tc(const __nv_bfloat16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                GemmOut out, void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                W4TcArithmetic arithmetic = W4TcArithmetic::kExactGroups);

// The tiled path on warpgroup products (quant_gemm_wgmma.cu): the kBf16Weights arithmetic, CTAs
// of 256 weight rows x 16-128 rows of x, the next k16 step's weights converted while the current
// step's wgmma runs. The group size must fill whole 64-column k tiles (w4_wgmma_takes_groups;
// else it throws: w4_gemm_tc takes any).
// x: bf16 [m, k] (row stride k); y: bf16 or float [m, ldy]. Any m.
// workspace: w4_gemm_wgmma_workspace_bytes(m, n, k): split-K partial sums float [splits, m, n],
// then (16-byte aligned) x in stored-column order (act-order).
std::size_t w4_gemm_wgmma_workspace_bytes(int64_t m, int64_t n, int64_t k);
void w4_gemm_wgmma(const __nv_bfloat16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                   GemmOut out, void* workspace, std::size_t workspace_bytes,
                   cudaStream_t stream);
// Whether the wgmma kernel takes a weight of this group size: groups of whole 64-column k tiles
// (its group boundaries are tested once per k tile).
inline bool w4_wgmma_takes_groups(int64_t group_size) { return group_size % 64 == 0; }
// Rows up to which w4_matmul keeps a weight of this group size off the dense path, and whether
// it takes the wgmma kernel for m rows (rather than the decode kernel, w4_gemm_tc or dense).
inline int64_t w4_matmul_max_tiled_rows(int64_t group_size) {
  return w4_wgmma_takes_groups(group_size) ? kW4WgmmaMaxRows : kW4TiledMaxRows;
}
inline bool w4_matmul_uses_wgmma(int64_t m, int64_t group_size) {
  return m >= kW4WgmmaMinRows && m <= kW4WgmmaMaxRows && w4_wgmma_takes_groups(group_size);
}

// dense: bf16 [n, k], dense[j][perm[c]] = scale · (code − zero) rounded to bf16.
void w4_dequantize(const W4Weights& w, __nv_bfloat16* dense, cudaStream_t stream);

// Scratch of w4_matmul for at most max_m rows over weights of at most max_n x max_k:
// the dense bf16 matrix of the dense path and the other paths' workspace.
struct W4Scratch {
  __nv_bfloat16* dense = nullptr;  // [n, k] of the largest weight (null: no dense path)
  std::size_t dense_bytes = 0;
  void* partial = nullptr;         // w4_matmul_workspace_bytes of the largest weight
  std::size_t partial_bytes = 0;
};

// Workspace w4_matmul needs for any m <= max_m rows over an [n, k] weight (the decode and
// tiled paths; the dense path's matrix is W4Scratch::dense).
std::size_t w4_matmul_workspace_bytes(int64_t max_m, int64_t n, int64_t k);
// Whether w4_matmul takes the dense path (and so needs W4Scratch::dense) for m rows.
inline bool w4_matmul_uses_dense(int64_t m, int64_t group_size) {
  return m > w4_matmul_max_tiled_rows(group_size);
}

// The path for m (see above). x: bf16 [m, k]; y: bf16 or float [m, ldy].
void w4_matmul(const __nv_bfloat16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
               GemmOut out, const W4Scratch& scratch, GemmBf16& gemm, cudaStream_t stream);

}  // namespace shardserve::kernels::cuda
