// Checked entry points and the host-side layout of kernels/cuda/quant_gemm.h.
#include "kernels/cuda/quant_gemm.h"

#include <cuda_fp16.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/quant_layout.h"

namespace shardserve::kernels::cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

void check_weights(const char* op, const W4Weights& w) {
  require(w.n > 0 && w.k > 0 && w.k % 64 == 0 && w.group_size > 0 && w.group_size % 32 == 0,
          "{}: weight [{}, {}] with group size {}: needs k a multiple of 64 and the group size "
          "of 32", op, w.n, w.k, w.group_size);
  require(w.codes != nullptr && w.meta != nullptr, "{}: null weight pointer", op);
  require(aligned16(w.codes), "{}: codes must be 16-byte aligned", op);
}

uint16_t exact_fp16(float v, const char* what, int64_t row, int64_t group) {
  const __half h = __float2half_rn(v);
  require(__half2float(h) == v,
          "W4 layout: {} {} of row {} group {} is not exactly representable in fp16 (GPTQ and "
          "AWQ store fp16 scales)", what, v, row, group);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

}  // namespace

std::optional<std::string> w4_layout_problem(int bits, int64_t k, const int64_t* group_begin,
                                             int64_t groups) {
  if (bits != 4) return fmt::format("{}-bit codes (the W4 kernels take 4 bits)", bits);
  if (k % 64 != 0) return fmt::format("{} input features (not a multiple of 64)", k);
  const int64_t gs = group_begin[1] - group_begin[0];
  if (gs % 32 != 0) return fmt::format("group size {} (not a multiple of 32)", gs);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t want_end = std::min<int64_t>((g + 1) * gs, k);
    if (group_begin[g] != g * gs || group_begin[g + 1] != want_end) {
      return fmt::format("uneven groups (group {} spans stored columns [{}, {}), expected [{}, {}))",
                         g, group_begin[g], group_begin[g + 1], g * gs, want_end);
    }
  }
  if (group_begin[groups] != k) return fmt::format("groups cover {} of {} columns",
                                                   group_begin[groups], k);
  return std::nullopt;
}

W4HostLayout make_w4_layout(int64_t n, int64_t k, const uint8_t* codes, const float* scales,
                            const float* zeros, const int32_t* perm, const int64_t* group_begin,
                            int64_t groups) {
  if (const auto problem = w4_layout_problem(4, k, group_begin, groups)) {
    fail("W4 layout: weight [{}, {}] cannot use the W4 kernels: {}", n, k, *problem);
  }
  W4HostLayout out;
  out.n = n;
  out.k = k;
  out.group_size = group_begin[1] - group_begin[0];
  // Codes into the tensor-core tile order of quant_layout.h; rows padded to 16 with zero codes
  // and zero meta (scale 0), so the padding adds nothing.
  const int64_t np = w4_padded_rows(n);
  out.codes.assign(np * (k / 2), 0);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c = 0; c < k; ++c) {
      const uint8_t byte = codes[j * (k / 2) + c / 2];
      const uint32_t q = c % 2 == 0 ? byte & 0xF : byte >> 4;
      const W4CodePos pos = w4_code_pos(j, c, k);
      uint32_t word;
      std::memcpy(&word, out.codes.data() + pos.byte, 4);
      word |= q << (4 * pos.nibble);
      std::memcpy(out.codes.data() + pos.byte, &word, 4);
    }
  }
  out.meta.assign(np * groups, 0);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t g = 0; g < groups; ++g) {
      const float z = zeros[j * groups + g];
      require(z >= 0 && z <= 15 && z == static_cast<float>(static_cast<int>(z)),
              "W4 layout: zero {} of row {} group {} is not an integer in [0, 15]", z, j, g);
      const uint32_t s = exact_fp16(scales[j * groups + g], "scale", j, g);
      // High half: bf16 bits of 128 + zero (exact: 128..143), what the kernels subtract.
      const uint32_t zb = 0x4300u | static_cast<uint32_t>(z);
      out.meta[j * groups + g] = s | (zb << 16);
    }
  }
  bool identity = true;
  for (int64_t c = 0; c < k && identity; ++c) identity = perm[c] == c;
  if (!identity) out.perm.assign(perm, perm + k);
  return out;
}

std::size_t w4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int warps_per_sm) {
  return launch::w4_gemv_workspace_bytes(m, n, k, warps_per_sm);
}

namespace {

// The checks and the error report of the decode and tiled paths (same operands). launch:
// cudaError_t(x, m, w, y, ldy, float_out, workspace, stream).
template <typename Launch>
void run_w4(const char* op, Launch launch, std::size_t need, const bf16* x, int64_t m,
            const W4Weights& w, void* y, int64_t ldy, GemmOut out, void* workspace,
            std::size_t workspace_bytes, cudaStream_t stream) {
  check_weights(op, w);
  require(m >= 0 && ldy >= w.n, "{}: m {} with ldy {} < n {}", op, m, ldy, w.n);
  require(m == 0 || (x != nullptr && y != nullptr), "{}: null pointer", op);
  require(m == 0 || aligned16(x), "{}: x must be 16-byte aligned", op);
  require(workspace_bytes >= need && (need == 0 || workspace != nullptr) &&
              reinterpret_cast<std::uintptr_t>(workspace) % 16 == 0,
          "{}: workspace of {} bytes (16-byte aligned), needs {} (m {}, n {}, k {})", op,
          workspace_bytes, need, m, w.n, w.k);
  const cudaError_t status = launch(x, m, w, y, ldy, out == GemmOut::kFloat, workspace, stream);
  if (status != cudaSuccess) {
    throw_cuda_error(status, op, __FILE__, __LINE__,
                     fmt::format("m={} n={} k={} group_size={}", m, w.n, w.k, w.group_size));
  }
}

}  // namespace

void w4_gemv(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy, GemmOut out,
             void* workspace, std::size_t workspace_bytes, cudaStream_t stream, int warps_per_sm) {
  require(warps_per_sm >= 1 && warps_per_sm <= 64, "w4_gemv: warps_per_sm {} outside [1, 64]",
          warps_per_sm);
  auto decode = [warps_per_sm](const bf16* xx, int64_t mm, const W4Weights& ww, void* yy,
                               int64_t ld, bool float_out, void* ws, cudaStream_t st) {
    return launch::w4_gemv(xx, mm, ww, yy, ld, float_out, ws, warps_per_sm, st);
  };
  run_w4("w4_gemv", decode, w4_gemv_workspace_bytes(m, w.n, w.k, warps_per_sm), x, m, w, y, ldy,
         out, workspace, workspace_bytes, stream);
}

std::size_t w4_gemm_tc_workspace_bytes(int64_t m, int64_t n, int64_t k,
                                       W4TcArithmetic arithmetic) {
  return launch::w4_gemm_tc_workspace_bytes(m, n, k, arithmetic);
}

void w4_gemm_tc(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy, GemmOut out,
                void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                W4TcArithmetic arithmetic) {
  auto tiled = [arithmetic](const bf16* xx, int64_t mm, const W4Weights& ww, void* yy,
                            int64_t ld, bool float_out, void* ws, cudaStream_t st) {
    return launch::w4_gemm_tc(xx, mm, ww, yy, ld, float_out, ws, arithmetic, st);
  };
  run_w4("w4_gemm_tc", tiled, w4_gemm_tc_workspace_bytes(m, w.n, w.k, arithmetic), x, m, w, y,
         ldy, out, workspace, workspace_bytes, stream);
}

std::size_t w4_gemm_wgmma_workspace_bytes(int64_t m, int64_t n, int64_t k) {
  return launch::w4_gemm_wgmma_workspace_bytes(m, n, k);
}

void w4_gemm_wgmma(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                   GemmOut out, void* workspace, std::size_t workspace_bytes,
                   cudaStream_t stream) {
  require(w4_wgmma_takes_groups(w.group_size),
          "w4_gemm_wgmma: group size {} (the wgmma kernel needs a multiple of 64; "
          "w4_gemm_tc takes any)", w.group_size);
  auto wgmma = [](const bf16* xx, int64_t mm, const W4Weights& ww, void* yy, int64_t ld,
                  bool float_out, void* ws, cudaStream_t st) {
    return launch::w4_gemm_wgmma(xx, mm, ww, yy, ld, float_out, ws, st);
  };
  run_w4("w4_gemm_wgmma", wgmma, w4_gemm_wgmma_workspace_bytes(m, w.n, w.k), x, m, w, y, ldy,
         out, workspace, workspace_bytes, stream);
}

std::size_t w4_matmul_workspace_bytes(int64_t max_m, int64_t n, int64_t k) {
  // Not monotonic in m (the K splits shrink as m grows): the largest over every m and either
  // tiled kernel (which one runs depends on the group size, not known here).
  std::size_t need = 0;
  for (int64_t m = 1; m <= std::min(max_m, kW4WgmmaMaxRows); ++m) {
    if (m <= kW4DecodeMaxRows) {
      need = std::max(need, w4_gemv_workspace_bytes(m, n, k));
      continue;
    }
    if (m >= kW4WgmmaMinRows) need = std::max(need, w4_gemm_wgmma_workspace_bytes(m, n, k));
    if (m <= kW4TiledMaxRows) {
      need = std::max(need, w4_gemm_tc_workspace_bytes(m, n, k, w4_matmul_tc_arithmetic(m)));
    }
  }
  return need;
}

void w4_dequantize(const W4Weights& w, bf16* dense, cudaStream_t stream) {
  check_weights("w4_dequantize", w);
  require(dense != nullptr && aligned16(dense), "w4_dequantize: dense must be 16-byte aligned");
  const cudaError_t status = launch::w4_dequantize(w, dense, stream);
  if (status != cudaSuccess) {
    throw_cuda_error(status, "w4_dequantize", __FILE__, __LINE__,
                     fmt::format("n={} k={} group_size={}", w.n, w.k, w.group_size));
  }
}

void w4_matmul(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy, GemmOut out,
               const W4Scratch& scratch, GemmBf16& gemm, cudaStream_t stream) {
  if (m <= kW4DecodeMaxRows) {
    w4_gemv(x, m, w, y, ldy, out, scratch.partial, scratch.partial_bytes, stream);
    return;
  }
  if (!w4_matmul_uses_dense(m, w.group_size)) {
    if (w4_matmul_uses_wgmma(m, w.group_size)) {
      w4_gemm_wgmma(x, m, w, y, ldy, out, scratch.partial, scratch.partial_bytes, stream);
    } else {
      w4_gemm_tc(x, m, w, y, ldy, out, scratch.partial, scratch.partial_bytes, stream,
                 w4_matmul_tc_arithmetic(m));
    }
    return;
  }
  require(scratch.dense != nullptr && scratch.dense_bytes >= std::size_t(w.n * w.k) * 2,
          "w4_matmul: {} rows take the dense path: dense scratch of {} bytes, the weight [{}, {}] "
          "needs {}", m, scratch.dense_bytes, w.n, w.k, w.n * w.k * 2);
  w4_dequantize(w, scratch.dense, stream);
  gemm.run(x, scratch.dense, y, {.m = m, .n = w.n, .k = w.k, .ldy = ldy, .out = out}, stream);
}

}  // namespace shardserve::kernels::cuda
