#include "kernels/cuda/gemm.h"

#include <fmt/format.h>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"

namespace shardserve::kernels::cuda {

CublasLtHandle::CublasLtHandle() { SHARDSERVE_CUBLAS_CHECK(cublasLtCreate(&handle_)); }
CublasLtHandle::~CublasLtHandle() {
  if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
}

struct GemmBf16::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (c != nullptr) (void)cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) (void)cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) (void)cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) (void)cublasLtMatmulDescDestroy(desc);
  }
};

GemmBf16::GemmBf16(std::size_t workspace_bytes)
    : workspace_(workspace_bytes, "cuBLASLt workspace") {}

GemmBf16::~GemmBf16() = default;

const GemmBf16::Plan& GemmBf16::plan(const GemmShape& s) {
  const int64_t ldy = s.ldy == 0 ? s.n : s.ldy;
  const Key key{s.m, s.n, s.k, ldy, static_cast<int>(s.out)};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  require(s.m > 0 && s.n > 0 && s.k > 0 && ldy >= s.n,
          "gemm: bad shape m={} n={} k={} ldy={}", s.m, s.n, s.k, ldy);
  const std::string what = fmt::format("gemm m={} n={} k={} ldy={} out={}", s.m, s.n, s.k, ldy,
                                       s.out == GemmOut::kBf16 ? "bf16" : "f32");
  auto p = std::make_unique<Plan>();
  SHARDSERVE_CUBLAS_CHECK_CTX(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                              what);
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  SHARDSERVE_CUBLAS_CHECK_CTX(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                             &trans_a, sizeof(trans_a)), what);
  SHARDSERVE_CUBLAS_CHECK_CTX(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                             &trans_b, sizeof(trans_b)), what);
  const cudaDataType_t out_type = s.out == GemmOut::kBf16 ? CUDA_R_16BF : CUDA_R_32F;
  // A = w viewed column-major [k, n]; B = x viewed column-major [k, m]; C = D = y [n, m].
  SHARDSERVE_CUBLAS_CHECK_CTX(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, s.k, s.n, s.k), what);
  SHARDSERVE_CUBLAS_CHECK_CTX(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, s.k, s.m, s.k), what);
  SHARDSERVE_CUBLAS_CHECK_CTX(cublasLtMatrixLayoutCreate(&p->c, out_type, s.n, s.m, ldy), what);
  cublasLtMatmulPreference_t pref = nullptr;
  SHARDSERVE_CUBLAS_CHECK_CTX(cublasLtMatmulPreferenceCreate(&pref), what);
  const uint64_t ws = workspace_.bytes();
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st1 = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  const cublasStatus_t st2 =
      st1 != CUBLAS_STATUS_SUCCESS
          ? st1
          : cublasLtMatmulAlgoGetHeuristic(handle_.get(), p->desc, p->a, p->b, p->c, p->c, pref, 1,
                                           &result, &found);
  (void)cublasLtMatmulPreferenceDestroy(pref);
  SHARDSERVE_CUBLAS_CHECK_CTX(st2, what);
  require(found > 0, "cuBLASLt has no algorithm for {}", what);
  p->algo = result.algo;
  return *plans_.emplace(key, std::move(p)).first->second;
}

void GemmBf16::prepare(const GemmShape& shape) { (void)plan(shape); }

void GemmBf16::run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y,
                   const GemmShape& shape, cudaStream_t stream) {
  const Plan& p = plan(shape);
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status =
      cublasLtMatmul(handle_.get(), p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c,
                     &p.algo, workspace_.data(), workspace_.bytes(), stream);
  if (status != CUBLAS_STATUS_SUCCESS) {
    SHARDSERVE_CUBLAS_CHECK_CTX(status, fmt::format("gemm m={} n={} k={} ldy={}", shape.m,
                                                    shape.n, shape.k, shape.ldy));
  }
}

}  // namespace shardserve::kernels::cuda
