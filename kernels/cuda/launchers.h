#pragma once
// Internal: the raw launchers that the .cu files define and ops.cc's checked entry points call
// after validating the arguments. A launcher only computes the grid, launches and returns
// cudaGetLastError(); it assumes valid arguments (see ops.h for the shapes).
#include "kernels/cuda/ops.h"
#include "kernels/cuda/quant_gemm.h"

namespace shardserve::kernels::cuda::launch {

cudaError_t embedding_lookup(const bf16* table, int64_t vocab_begin, int64_t shard_rows,
                             int64_t dim, const int32_t* ids, int64_t tokens, float* out,
                             cudaStream_t stream);
cudaError_t gather_rows(const bf16* src, int64_t dim, const int32_t* indices, int64_t rows,
                        bf16* dst, cudaStream_t stream);
cudaError_t convert_to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t stream);

// delta == nullptr: plain rms_norm of `residual` (not modified).
cudaError_t add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream);
cudaError_t add_rms_norm(float* residual, const float* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream);

cudaError_t apply_rope(bf16* x, int64_t row_stride, const int32_t* positions, int64_t tokens,
                       int64_t heads, int64_t head_dim, const float* inv_freq,
                       cudaStream_t stream);

cudaError_t write_kv(const PagedKvPool& pool, const bf16* k, const bf16* v, int64_t src_stride,
                     const int32_t* slots, int64_t tokens, cudaStream_t stream);

cudaError_t paged_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride, bf16* out,
                            int64_t out_stride, const AttentionBatch& batch, int64_t num_heads,
                            float scale, const AttentionSplit& split, float* workspace,
                            cudaStream_t stream);

cudaError_t paged_prefill_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride,
                                    bf16* out, int64_t out_stride, const PrefillSequences& seqs,
                                    int64_t num_heads, float scale, cudaStream_t stream);

cudaError_t silu_mul(const bf16* gate_up, bf16* out, int64_t rows, int64_t width,
                     cudaStream_t stream);

cudaError_t argmax_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                        int32_t* tokens, float* max_logits, cudaStream_t stream);
cudaError_t logsumexp_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                           float* lse, cudaStream_t stream);

// Full sampling (sampling_filter.cu). bytes: the workspace size (a host-side CUB query).
cudaError_t sampling_workspace_bytes(int64_t rows, int64_t vocab, std::size_t& bytes);
cudaError_t sample_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                        const SamplingRowParams* params, const SamplingHistory& history,
                        const double* uniforms, int32_t* tokens, float* logprobs,
                        void* workspace, cudaStream_t stream);

// W4A16 (quant_gemm.cu). workspace: w4_gemv_workspace_bytes(m, n, k, warps_per_sm) bytes,
// 16-byte aligned.
std::size_t w4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int warps_per_sm);
cudaError_t w4_gemv(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                    bool float_out, void* workspace, int warps_per_sm, cudaStream_t stream);
cudaError_t w4_dequantize(const W4Weights& w, bf16* dense, cudaStream_t stream);
// quant_gemm_tc.cu. workspace: w4_gemm_tc_workspace_bytes(m, n, k, arithmetic) bytes, 16-byte
// aligned.
std::size_t w4_gemm_tc_workspace_bytes(int64_t m, int64_t n, int64_t k,
                                       W4TcArithmetic arithmetic);
cudaError_t w4_gemm_tc(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                       bool float_out, void* workspace, W4TcArithmetic arithmetic,
                       cudaStream_t stream);

// quant_gemm_wgmma.cu (weights rounded to bf16; group_size a multiple of 64). workspace:
// w4_gemm_wgmma_workspace_bytes(m, n, k) bytes, 16-byte aligned.
std::size_t w4_gemm_wgmma_workspace_bytes(int64_t m, int64_t n, int64_t k);
cudaError_t w4_gemm_wgmma(const bf16* x, int64_t m, const W4Weights& w, void* y, int64_t ldy,
                          bool float_out, void* workspace, cudaStream_t stream);

// Random device data (random_fill.cu): counter-hash values, the same for a seed everywhere.
cudaError_t fill_random_bytes(void* out, std::size_t bytes, uint64_t seed, cudaStream_t stream);
cudaError_t fill_random_bf16(bf16* out, int64_t count, float scale, float offset, uint64_t seed,
                             cudaStream_t stream);
cudaError_t fill_random_f32(float* out, int64_t count, float scale, float offset, uint64_t seed,
                            cudaStream_t stream);
cudaError_t fill_random_w4_meta(uint32_t* out, int64_t count, float scale, uint64_t seed,
                                cudaStream_t stream);

}  // namespace shardserve::kernels::cuda::launch
