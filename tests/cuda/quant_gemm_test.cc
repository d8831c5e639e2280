// The W4A16 kernels (kernels/cuda/quant_gemm.h) against the CPU reference quant_matmul_nt
// (kernels/cpu/quant_matmul.h) on the same QuantMatrix: fresh random codes, fp16 scales and
// zeros, group sizes 32 / 64 / 128 / per-channel, act-order permutations, odd row counts and the
// LLaMA-70B tensor-parallel shard shapes. Outputs poisoned with NaN before each run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <random>

#include "common/half.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/quant_gemm.h"
#include "kernels/cuda/quant_layout.h"
#include "tests/cuda/cuda_test_util.h"

namespace shardserve::kernels::cuda {
namespace {

using namespace shardserve::kernels::cuda::testing;

struct DeviceW4 {
  DeviceBuffer codes, meta, perm;
  W4Weights view;
};

DeviceW4 upload_w4(const W4HostLayout& l) {
  DeviceW4 d;
  d.codes = upload(l.codes);
  d.meta = upload(l.meta);
  if (!l.perm.empty()) d.perm = upload(l.perm);
  d.view = {d.codes.as<uint8_t>(), d.meta.as<uint32_t>(),
            l.perm.empty() ? nullptr : d.perm.as<int32_t>(), l.n, l.k, l.group_size};
  return d;
}

// A random 4-bit linear [n, k] in the CPU kernel's layout: codes uniform in [0, 16), zeros in
// [0, 16), scales exact fp16 in [0.004, 0.016); act_order shuffles which input columns form a
// group (as GPTQ's desc_act does), so the stored order is a permutation.
cpu::QuantMatrix random_quant(std::mt19937& rng, int64_t n, int64_t k, int64_t group_size,
                              bool act_order) {
  const int64_t groups = (k + group_size - 1) / group_size;
  std::vector<uint8_t> q(n * k);
  for (auto& v : q) v = static_cast<uint8_t>(rng() % 16);
  std::vector<int32_t> zeros(groups * n);
  for (auto& z : zeros) z = static_cast<int32_t>(rng() % 16);
  std::vector<float> scales(groups * n);
  for (auto& s : scales) s = fp16_to_float(static_cast<uint16_t>(0x1C00 + rng() % 0x800));
  std::vector<int32_t> g_idx(k);
  for (int64_t i = 0; i < k; ++i) g_idx[i] = static_cast<int32_t>(i / group_size);
  if (act_order) std::shuffle(g_idx.begin(), g_idx.end(), rng);
  return cpu::make_quant_matrix(4, n, k, q.data(), zeros.data(), scales.data(), g_idx.data(),
                                groups);
}

W4HostLayout to_w4(const cpu::QuantMatrix& w) {
  return make_w4_layout(w.n, w.k, w.codes.data(), w.scales.data(), w.zeros.data(),
                        w.perm.data(), w.group_begin.data(), w.groups());
}

struct Case {
  int64_t m, n, k, group_size;
  bool act_order;
};

std::string name(const Case& c) {
  return "m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) +
         " g=" + std::to_string(c.group_size) + (c.act_order ? " act-order" : "");
}

class CudaQuantGemm : public ::testing::Test {
 protected:
  // The kernels' exact arithmetic on the CPU: cpu::quant_matmul_nt. x [m, k]; y [m, n].
  static std::vector<float> exact_reference(const std::vector<float>& x,
                                            const cpu::QuantMatrix& w, int64_t m) {
    std::vector<float> y(m * w.n);
    cpu::quant_matmul_nt(x.data(), w, y.data(), m);
    return y;
  }

  // One kernel against the CPU reference on a fresh random weight and x: float32 out (exact
  // bf16 products, code - zero and x, summed in float32 by the tensor cores per group, then
  // scaled: float32 rounding in another order than the CPU's) and bf16 out with row stride
  // n + 8, whose padding must stay untouched (poison).
  // kernel: w4_gemv or w4_gemm_tc's operands; ws_bytes(m, n, k): its workspace; reference(x, w,
  // m): the float32 result the kernel's arithmetic gives (exact_reference unless it rounds).
  template <typename Kernel, typename WorkspaceBytes, typename Reference>
  void check_kernel(const Case& c, const std::string& what, Kernel kernel,
                    WorkspaceBytes ws_bytes, Reference reference) {
    const auto w = random_quant(rng_, c.n, c.k, c.group_size, c.act_order);
    auto x = random_floats(c.m * c.k, rng_);
    round_to_bf16(x);
    const std::vector<float> want = reference(x, w, c.m);
    auto dw = upload_w4(to_w4(w));
    EXPECT_EQ(dw.view.perm != nullptr, c.act_order) << name(c);
    auto d_x = upload_bf16(x);
    DeviceBuffer ws(std::max<std::size_t>(ws_bytes(c.m, c.n, c.k), 16), "ws");
    DeviceBuffer d_y(c.m * c.n * 4, "y");
    poison(d_y);
    kernel(d_x.as<bf16>(), c.m, dw.view, d_y.data(), c.n, GemmOut::kFloat, ws.data(), ws.bytes(),
           s());
    sync();
    const double err = relative_error(download<float>(d_y, want.size()), want);
    std::printf("w4 %s %s: float out error %.3g\n", what.c_str(), name(c).c_str(), err);
    EXPECT_LT(err, 10 * kF32Tolerance) << what << " " << name(c);
    const int64_t ldy = c.n + 8;
    DeviceBuffer d_yb(c.m * ldy * 2, "y");
    poison(d_yb);
    kernel(d_x.as<bf16>(), c.m, dw.view, d_yb.data(), ldy, GemmOut::kBf16, ws.data(), ws.bytes(),
           s());
    sync();
    const auto padded = download_bf16(d_yb, c.m * ldy);
    std::vector<float> got(c.m * c.n);
    for (int64_t r = 0; r < c.m; ++r) {
      std::copy_n(padded.begin() + r * ldy, c.n, got.begin() + r * c.n);
      for (int64_t p = c.n; p < ldy; ++p) EXPECT_TRUE(std::isnan(padded[r * ldy + p])) << name(c);
    }
    EXPECT_LT(relative_error(got, want), kBf16Tolerance) << what << " " << name(c);
  }
  // The rounded-weights arithmetic (W4TcArithmetic::kBf16Weights, w4_gemm_wgmma) on the CPU:
  // each weight bf16(bf16(scale) · (code - zero)), formed exactly in float from the scales
  // rounded to bf16 and rounded once as the kernels' bf16 multiply does, then a float32
  // product; so the float32 bound holds, and a weight rounded otherwise (or a scale left
  // unrounded) shows.
  static std::vector<float> rounded_reference(const std::vector<float>& x,
                                              const cpu::QuantMatrix& w, int64_t m) {
    auto rounded = w;
    round_to_bf16(rounded.scales);
    auto dense = cpu::dequantize(rounded);
    round_to_bf16(dense);
    std::vector<float> y(m * w.n);
    cpu::matmul_nt(x.data(), dense.data(), y.data(), m, w.n, w.k);
    return y;
  }

  template <typename Kernel, typename WorkspaceBytes>
  void check_kernel(const Case& c, const std::string& what, Kernel kernel,
                    WorkspaceBytes ws_bytes) {
    check_kernel(c, what, kernel, ws_bytes, exact_reference);
  }
  // The tiled kernel (w4_gemm_tc) with one arithmetic, through check_kernel.
  template <typename Reference>
  void check_tiled(const Case& c, W4TcArithmetic arithmetic, const std::string& what,
                   Reference reference) {
    const auto kernel = [arithmetic](const bf16* x, int64_t m, const W4Weights& w, void* y,
                                     int64_t ldy, GemmOut out, void* ws, std::size_t ws_bytes,
                                     cudaStream_t stream) {
      w4_gemm_tc(x, m, w, y, ldy, out, ws, ws_bytes, stream, arithmetic);
    };
    const auto bytes = [arithmetic](int64_t m, int64_t n, int64_t k) {
      return w4_gemm_tc_workspace_bytes(m, n, k, arithmetic);
    };
    check_kernel(c, what, kernel, bytes, reference);
  }

  void SetUp() override {
    SHARDSERVE_REQUIRE_GPU();
    stream_.emplace();
    seed_ = input_seed();
    rng_.seed(seed_);
  }
  void sync() { stream_->synchronize(); }
  cudaStream_t s() { return stream_->get(); }
  uint32_t seed_ = 0;
  std::mt19937 rng_;

 private:
  std::optional<Stream> stream_;
};


// Decode kernel (tensor cores): 1..8 rows (one n8 tile, partly empty), 9..16 (two), more than 16
// (several passes, the last one short), row counts n not a multiple of 16 (padded tiles, a
// block past the last row tile), float and bf16 outputs with a padded row stride, one and
// several K splits (three grid targets: few long splits, the default, many short ones; 16
// rows cap the x slice at 15 tiles); the 70B shard shapes at TP 8 (qkv 1280 x 8192, o 8192 x
// 1024, gate_up 7168 x 8192, down 8192 x 3584) and TP 4 down (8192 x 7168). Groups of 128 over an
// even tile count take the fixed-group kernel (its last chunk of a split half full where the
// split is 2 mod 4 tiles long); k = 192 (3 tiles, a short last group) takes the other.
TEST_F(CudaQuantGemm, DecodeKernelMatchesCpuReference) {
  const Case cases[] = {
      {1, 256, 256, 128, false},   {2, 96, 4096, 4096, false},  {3, 1280, 8192, 128, false},
      {4, 8192, 1024, 128, false}, {5, 1000, 3584, 128, true},  {7, 384, 512, 64, false},
      {8, 7168, 1024, 32, true},   {1, 8192, 3584, 128, false}, {13, 640, 2048, 128, false},
      {6, 8192, 7168, 128, false}, {1, 40, 128, 32, false},   {17, 1280, 8192, 128, false},
      {33, 1000, 1024, 64, true},  {64, 512, 3584, 128, false}, {2, 256, 192, 128, false},
      {1, 1056, 1536, 128, false},
  };
  for (const int warps : {2, kW4DecodeWarpsPerSm, 64}) {
    const auto kernel = [warps](const bf16* x, int64_t m, const W4Weights& w, void* y,
                                int64_t ldy, GemmOut out, void* ws, std::size_t ws_bytes,
                                cudaStream_t stream) {
      w4_gemv(x, m, w, y, ldy, out, ws, ws_bytes, stream, warps);
    };
    const auto bytes = [warps](int64_t m, int64_t n, int64_t k) {
      return w4_gemv_workspace_bytes(m, n, k, warps);
    };
    for (const Case& c : cases) {
      check_kernel(c, "decode (" + std::to_string(warps) + " warps/SM)", kernel, bytes);
    }
  }
}

// Tiled kernel (w4_gemm_tc): every CTA batch (16, 32, 64 rows with one warp along x, 128 with
// two), m not a multiple of the CTA's rows (zero-filled rows of x), n not a multiple of the CTA's 128 rows nor of
// 16 (a CTA past the last row tile), group sizes 32 / 64 / 128 / k (boundaries inside and across
// k tiles), act-order, one and several K splits, float and bf16 out with a padded row stride.
// Same arithmetic as the decode kernel, so the same float32 bound.
TEST_F(CudaQuantGemm, TiledKernelMatchesCpuReference) {
  const Case cases[] = {
      {1, 256, 256, 128, false},    {33, 1000, 1024, 64, true},   {64, 512, 3584, 128, false},
      {65, 1280, 8192, 128, false}, {100, 640, 2048, 32, true},   {128, 96, 4096, 4096, false},
      {200, 1032, 1024, 128, false}, {256, 8192, 1024, 128, false}, {300, 384, 512, 32, true},
      {17, 7168, 1024, 128, false}, {9, 640, 2048, 64, true},     {32, 1280, 8192, 128, false},
  };
  for (const Case& c : cases) {
    check_tiled(c, W4TcArithmetic::kExactGroups, "tiled", exact_reference);
  }
}

// The tiled kernel with weights rounded to bf16 (W4TcArithmetic::kBf16Weights: one warp of 128
// rows of x per CTA) against its own numbers on the CPU (rounded_reference). The exact path's
// cases, with m from 1 to past one CTA of 128 rows; float and bf16 out (padded row stride) as
// check_kernel does.
TEST_F(CudaQuantGemm, TiledKernelWithBf16WeightsMatchesRoundedReference) {
  const Case cases[] = {
      {1, 256, 256, 128, false},    {33, 1000, 1024, 64, true},  {64, 512, 3584, 128, false},
      {65, 1280, 8192, 128, false}, {100, 640, 2048, 32, true},  {128, 96, 4096, 4096, false},
      {129, 1032, 1024, 128, false}, {256, 8192, 1024, 128, false}, {300, 384, 512, 32, true},
  };
  for (const Case& c : cases) {
    check_tiled(c, W4TcArithmetic::kBf16Weights, "tiled, bf16 weights", rounded_reference);
  }
}

// The wgmma kernel (w4_gemm_wgmma, the same rounded arithmetic) against rounded_reference: every
// batch tile (16, 32, 64, then blocks of 128 rows: m from 1 to 1000, zero-filled rows of x), n
// neither a multiple of the CTA's 256 rows nor of 16 (a CTA past the last row tile, a padded
// tile), groups of 64, 128 and k (the group's meta loaded one group ahead, the boundary at
// every tile or none), act-order, one and several K splits (96 x 4096: one row block, so 8
// splits; the 70B o shard 8192 x 1024 at 256 rows), float and bf16 out with a padded row
// stride. A group size that is not a multiple of 64 is refused.
TEST_F(CudaQuantGemm, WgmmaKernelMatchesRoundedReference) {
  const Case cases[] = {
      {1, 256, 256, 128, false},     {65, 1280, 8192, 128, false}, {100, 1000, 1024, 64, true},
      {128, 96, 4096, 4096, false},  {129, 1032, 1024, 128, false}, {200, 640, 2048, 64, false},
      {256, 8192, 1024, 128, false}, {300, 384, 512, 128, true},   {77, 7168, 1024, 128, false},
      {5, 1000, 1024, 128, true},    {17, 640, 2048, 64, false},   {33, 8192, 1024, 128, false},
      {64, 7168, 1024, 128, false},  {1000, 256, 512, 128, false},
  };
  const auto kernel = [](const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                         GemmOut out, void* ws, std::size_t ws_bytes, cudaStream_t stream) {
    w4_gemm_wgmma(x, m, w, y, ldy, out, ws, ws_bytes, stream);
  };
  for (const Case& c : cases) {
    check_kernel(c, "wgmma", kernel, w4_gemm_wgmma_workspace_bytes, rounded_reference);
  }
  const auto w = random_quant(rng_, 128, 256, 32, false);
  auto dw = upload_w4(to_w4(w));
  DeviceBuffer d_x(64 * 256 * 2, "x"), d_y(64 * 128 * 4, "y"), ws(1 << 20, "ws");
  try {
    w4_gemm_wgmma(d_x.as<bf16>(), 64, dw.view, d_y.data(), 128, GemmOut::kFloat, ws.data(),
                  ws.bytes(), s());
    ADD_FAILURE() << "group size 32 was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("group size 32"), std::string::npos) << e.what();
  }
}

// w4_matmul's paths by m and group size (decode; the wgmma kernel for groups of whole k tiles,
// w4_gemm_tc with exact group sums then with bf16 weights for groups of 32; dequantize to bf16 +
// cuBLASLt; each bound from both sides) with the workspace
// w4_matmul_workspace_bytes gives, and the dequantized matrix itself equal to the CPU's
// dequantize rounded to bf16 (rows 1000: a padded last row tile).
TEST_F(CudaQuantGemm, MatmulPathsMatchCpuReference) {
  GemmBf16 gemm;
  // Groups of 64 and 128: decode, w4_gemm_tc exact below kW4WgmmaMinRows, then wgmma to
  // kW4WgmmaMaxRows, then dense; groups of 32: decode, w4_gemm_tc exact to kW4TcExactMaxRows,
  // rounded to kW4TiledMaxRows, then dense.
  const Case cases[] = {{2, 512, 1024, 128, false},
                        {kW4DecodeMaxRows, 256, 1024, 128, true},
                        {kW4DecodeMaxRows + 1, 256, 1024, 64, false},
                        {kW4WgmmaMinRows - 1, 512, 1024, 128, true},
                        {kW4WgmmaMinRows, 512, 1024, 128, false},
                        {20, 512, 1024, 128, false},
                        {100, 640, 2048, 128, true},
                        {kW4TiledMaxRows + 1, 96, 1024, 64, true},
                        {kW4TiledMaxRows + 3, 1000, 1024, 128, false},
                        {kW4WgmmaMaxRows, 256, 512, 128, false},
                        {kW4WgmmaMaxRows + 1, 256, 512, 64, false},
                        {kW4DecodeMaxRows + 1, 384, 512, 32, false},
                        {kW4TcExactMaxRows, 384, 512, 32, true},
                        {kW4TcExactMaxRows + 1, 384, 512, 32, false},
                        {kW4TiledMaxRows, 384, 512, 32, false},
                        {kW4TiledMaxRows + 77, 384, 512, 32, false}};
  for (const Case& c : cases) {
    const auto w = random_quant(rng_, c.n, c.k, c.group_size, c.act_order);
    auto x = random_floats(c.m * c.k, rng_);
    round_to_bf16(x);
    std::vector<float> want(c.m * c.n);
    cpu::quant_matmul_nt(x.data(), w, want.data(), c.m);
    auto dw = upload_w4(to_w4(w));
    auto d_x = upload_bf16(x);
    DeviceBuffer dense(c.n * c.k * 2, "dense");
    DeviceBuffer ws(std::max<std::size_t>(w4_matmul_workspace_bytes(c.m, c.n, c.k), 16), "ws");
    poison(dense);
    w4_dequantize(dw.view, dense.as<bf16>(), s());
    sync();
    // The same float products (the scales are fp16 values), each rounded once to bf16: equal.
    auto want_dense = cpu::dequantize(w);
    round_to_bf16(want_dense);
    const auto got_dense = download_bf16(dense, c.n * c.k);
    int64_t unequal = 0;
    for (int64_t i = 0; i < c.n * c.k; ++i) unequal += got_dense[i] != want_dense[i];
    EXPECT_EQ(unequal, 0) << name(c) << ": dequantized weights unlike the CPU's";
    const W4Scratch scratch{dense.as<bf16>(), dense.bytes(), ws.data(), ws.bytes()};
    for (const GemmOut out : {GemmOut::kFloat, GemmOut::kBf16}) {
      DeviceBuffer d_y(c.m * c.n * 4, "y");
      poison(d_y);
      poison(dense);
      w4_matmul(d_x.as<bf16>(), c.m, dw.view, d_y.data(), c.n, out, scratch, gemm, s());
      sync();
      const auto got = out == GemmOut::kFloat ? download<float>(d_y, want.size())
                                              : download_bf16(d_y, want.size());
      const double err = relative_error(got, want);
      std::printf("w4 matmul %s: error %.3g\n", name(c).c_str(), err);
      EXPECT_LT(err, kBf16Tolerance) << name(c);
    }
  }
}

// The decode kernel is a programmatic dependent launch that copies its weights before it waits
// for the kernel ahead (dependent_launch.cuh). Here that kernel writes the kernel's x: rms_norm,
// itself dependent, lets the GEMM be scheduled as soon as it has waited for its own
// predecessor. Four rounds share one x buffer, poisoned with NaN first, launched back to back
// without a synchronisation, so a GEMM reading x early reads NaN or the previous round's row.
// Each round must match the CPU's rms_norm (rounded to bf16, as the kernel writes x) then
// quant_matmul_nt. A read before the wait shows only when the GEMM's blocks get to x before the
// norm has written it: likely (the norm of 4096-float rows takes microseconds, the GEMM's
// blocks are resident and copying weights meanwhile), not certain.
TEST_F(CudaQuantGemm, DecodeKernelReadsTheXItsPredecessorWrites) {
  const int64_t m = 2, n = 4096, k = 4096, rounds = 4;
  const float eps = 1e-5f;
  const auto w = random_quant(rng_, n, k, 128, false);
  auto dw = upload_w4(to_w4(w));
  const auto norm_weight = random_floats(k, rng_);
  std::vector<std::vector<float>> residuals, wants;
  for (int64_t r = 0; r < rounds; ++r) {
    residuals.push_back(random_floats(m * k, rng_));
    std::vector<float> x(m * k);
    cpu::rms_norm(residuals.back().data(), norm_weight.data(), x.data(), m, k, eps);
    round_to_bf16(x);
    wants.emplace_back(m * n);
    cpu::quant_matmul_nt(x.data(), w, wants.back().data(), m);
  }
  std::vector<DeviceBuffer> d_residuals, d_ys;
  for (int64_t r = 0; r < rounds; ++r) {
    d_residuals.push_back(upload(residuals[r]));
    d_ys.emplace_back(m * n * 4, "y");
    poison(d_ys.back());
  }
  auto d_weight = upload(norm_weight);
  DeviceBuffer d_x(m * k * 2, "x");
  poison(d_x);
  const std::size_t ws_bytes = std::max<std::size_t>(w4_gemv_workspace_bytes(m, n, k), 16);
  DeviceBuffer ws(ws_bytes, "ws");
  for (int64_t r = 0; r < rounds; ++r) {
    rms_norm(d_residuals[r].as<float>(), d_weight.as<float>(), d_x.as<bf16>(), m, k, eps, s());
    w4_gemv(d_x.as<bf16>(), m, dw.view, d_ys[r].data(), n, GemmOut::kFloat, ws.data(), ws_bytes,
            s());
  }
  sync();
  for (int64_t r = 0; r < rounds; ++r) {
    // bf16 rounding of x can differ by one unit where the CPU and GPU norms differ in the last
    // float bit: far below the error of a stale or poisoned x (order 1 or NaN).
    EXPECT_LT(relative_error(download<float>(d_ys[r], m * n), wants[r]), kBf16Tolerance)
        << "round " << r;
  }
}

TEST(CudaQuantGemmLayout, RefusesWhatTheKernelsCannotTake) {
  // Uneven groups (arbitrary g_idx sizes) and 8 bits are named; the runner keeps those dense.
  const int64_t uneven[] = {0, 32, 96, 128};
  const auto p = w4_layout_problem(4, 128, uneven, 3);
  ASSERT_TRUE(p.has_value());
  EXPECT_NE(p->find("uneven groups"), std::string::npos) << *p;
  const int64_t even[] = {0, 64, 128};
  EXPECT_FALSE(w4_layout_problem(4, 128, even, 2).has_value());
  EXPECT_NE(w4_layout_problem(8, 128, even, 2)->find("8-bit"), std::string::npos);
  const int64_t odd[] = {0, 96};
  EXPECT_NE(w4_layout_problem(4, 96, odd, 1)->find("multiple of 64"), std::string::npos);
  // A scale that fp16 cannot hold exactly is refused with its row and group.
  std::vector<uint8_t> codes(2 * 32, 0x11);
  std::vector<float> scales = {0.1f, 0.25f}, zeros = {8, 8};
  std::vector<int32_t> perm(64);
  std::iota(perm.begin(), perm.end(), 0);
  const int64_t one[] = {0, 64};
  try {
    make_w4_layout(2, 64, codes.data(), scales.data(), zeros.data(), perm.data(), one, 1);
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("scale 0.1 of row 0 group 0"), std::string::npos)
        << e.what();
  }
}

// The tile order (quant_layout.h) is a bijection, and make_w4_layout puts every code where the
// kernels read it (no GPU needed: runs in CI).
TEST(CudaQuantGemmLayout, TileOrderRoundTripsEveryCode) {
  const int64_t n = 40, k = 192;  // 3 row tiles (the last one padded), 3 column tiles
  std::vector<int> seen(w4_padded_rows(n) * k, 0);  // one entry per nibble
  for (int64_t r = 0; r < w4_padded_rows(n); ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const W4CodePos p = w4_code_pos(r, c, k);
      ASSERT_EQ(p.byte % 4, 0);
      ASSERT_LT(p.byte, w4_padded_rows(n) * k / 2);
      ++seen[p.byte * 2 + p.nibble];
      int64_t rr = -1, cc = -1;
      w4_code_coords(p.byte, p.nibble, k, &rr, &cc);
      EXPECT_EQ(rr, r);
      EXPECT_EQ(cc, c);
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<long>(seen.size()));
  std::mt19937 rng(5);
  const auto w = random_quant(rng, n, k, 64, true);
  const W4HostLayout l = to_w4(w);
  ASSERT_EQ(l.codes.size(), std::size_t(w4_padded_rows(n) * k / 2));
  for (int64_t r = 0; r < w4_padded_rows(n); ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const W4CodePos p = w4_code_pos(r, c, k);
      uint32_t word;
      std::memcpy(&word, l.codes.data() + p.byte, 4);
      const uint32_t got = (word >> (4 * p.nibble)) & 0xF;
      const uint8_t byte = r < n ? w.codes[r * (k / 2) + c / 2] : 0;
      EXPECT_EQ(got, r < n ? (c % 2 == 0 ? byte & 0xFu : byte >> 4) : 0u) << r << "," << c;
    }
  }
}

}  // namespace
}  // namespace shardserve::kernels::cuda
