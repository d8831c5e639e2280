#pragma once
// The CUDA versions of the CPU reference ops (kernels/cpu/), behind checked entry points.
//
// Precision contract (one for the whole forward pass, as vLLM and TensorRT-LLM keep it):
//   * weights and the activations that feed a matrix product are bf16;
//   * the residual stream, norm weights, RoPE frequencies and logits are float32;
//   * every reduction (dot products, sums of squares, softmax) accumulates in float32.
//
// Conventions of every entry point here:
//   * pointers are device pointers unless the parameter says "host";
//   * row-major tensors; the shape of each tensor parameter is written beside it;
//   * the work is enqueued on `stream` and nothing is synchronised or allocated, so a step made
//     of these calls can be captured in a CUDA graph; scratch memory (the split-K workspace of
//     attention) is passed in, sized by the matching *_workspace_bytes function;
//   * arguments are validated on the host first (shapes, alignment of 16-byte vector access);
//     a bad argument or a failed launch throws shardserve::Error naming the op and the values;
//   * the decode step's short kernels are programmatic dependent launches
//     (dependent_launch.cuh): each waits for the kernel ahead before it touches memory, except
//     that the 4-bit GEMM streams its weights before that wait, so weights must be complete
//     before the work that uses them is enqueued behind another kernel.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace shardserve::messages {
struct SamplingParams;
}

namespace shardserve::kernels::cuda {

using bf16 = __nv_bfloat16;

// ---- embedding (kernels/cuda/embedding.cu) -------------------------------------------------
// Vocabulary-parallel lookup: this rank holds rows [vocab_begin, vocab_begin + shard_rows);
// ids outside the shard give zero rows (sum the ranks' outputs to get the full lookup).
// table: bf16 [shard_rows, dim]; ids: int32 [tokens]; out: float [tokens, dim].
void embedding_lookup(const bf16* table, int64_t vocab_begin, int64_t shard_rows, int64_t dim,
                      const int32_t* ids, int64_t tokens, float* out, cudaStream_t stream);

// Copies rows of a bf16 matrix: dst[r] = src[indices[r]].
// src: bf16 [*, dim]; indices: int32 [rows]; dst: bf16 [rows, dim].
void gather_rows(const bf16* src, int64_t dim, const int32_t* indices, int64_t rows, bf16* dst,
                 cudaStream_t stream);

// ---- RMSNorm (kernels/cuda/rms_norm.cu) ----------------------------------------------------
// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight.
// x: float [rows, dim]; weight: float [dim]; out: bf16 [rows, dim].
void rms_norm(const float* x, const float* weight, bf16* out, int64_t rows, int64_t dim,
              float eps, cudaStream_t stream);

// residual += delta; out = rms_norm(residual) (one pass over the row).
// residual: float [rows, dim] (updated); delta: bf16 or float [rows, dim]; weight: float [dim];
// out: bf16 [rows, dim].
void add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                  int64_t rows, int64_t dim, float eps, cudaStream_t stream);
void add_rms_norm(float* residual, const float* delta, const float* weight, bf16* out,
                  int64_t rows, int64_t dim, float eps, cudaStream_t stream);

// ---- RoPE (kernels/cuda/rope.cu) -----------------------------------------------------------
// Rotate-half RoPE in place on `heads` heads of head_dim at the start of each row, with the
// inverse frequencies of kernels::cpu::rope_inverse_frequencies (llama3 / linear scaling is
// in that table). q and k heads sit side by side at the start of a fused qkv row, so one call
// with heads = q_heads + kv_heads rotates both.
// x: bf16 [tokens, row_stride] (head h of token t at x + t*row_stride + h*head_dim);
// positions: int32 [tokens]; inv_freq: float [head_dim / 2].
void apply_rope(bf16* x, int64_t row_stride, const int32_t* positions, int64_t tokens,
                int64_t heads, int64_t head_dim, const float* inv_freq, cudaStream_t stream);

// ---- paged KV cache (kernels/cuda/paged_attention.cu) ----------------------------------------
// One layer's pool, the CPU layout in bf16: k, v each [num_blocks, block_size, num_kv_heads,
// head_dim]. A token's slot is physical_block * block_size + position % block_size.
struct PagedKvPool {
  bf16* k = nullptr;
  bf16* v = nullptr;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Stores the new tokens' keys and values at their slots.
// k, v: bf16 [tokens, src_stride], the kv_heads * head_dim values of token t at k + t*src_stride;
// slots: int32 [tokens] (a negative slot is skipped: padding).
void write_kv(const PagedKvPool& pool, const bf16* k, const bf16* v, int64_t src_stride,
              const int32_t* slots, int64_t tokens, cudaStream_t stream);

// Per-query-token description of a batch of sequences (prefill chunks and decodes mixed).
// Each query token attends causally to positions 0 .. its own position of its sequence.
struct AttentionBatch {
  const int32_t* positions = nullptr;      // int32 [tokens]: the token's position
  const int32_t* table_offsets = nullptr;  // int32 [tokens]: its sequence's block table start
  const int32_t* block_ids = nullptr;      // int32 [*]: block tables, concatenated
  int64_t tokens = 0;
  // int32 [tokens]: the row of q / out that entry t reads and writes; null: row t. Lets the
  // decode kernel take a step's single-token sequences while the prefill kernel below takes
  // the chunks around them.
  const int32_t* rows = nullptr;
};

// How attention splits long contexts (flash-decoding): each query token's visible positions are
// cut into partitions of partition_len, computed by separate thread blocks and merged.
struct AttentionSplit {
  int32_t partition_len = 1 << 30;
  int32_t num_splits = 1;  // ceil(max_context / partition_len)
};

// Chooses the split so that tokens x heads x splits fills the GPU (sm_count multiprocessors)
// and the workspace it needs fits in workspace_bytes.
AttentionSplit plan_attention_split(int64_t tokens, int64_t num_heads, int64_t num_kv_heads,
                                    int64_t head_dim, int64_t max_context, int sm_count,
                                    std::size_t workspace_bytes);
std::size_t attention_workspace_bytes(int64_t tokens, int64_t num_heads, int64_t head_dim,
                                      int32_t num_splits);

// Causal grouped-query attention over the paged pool (the new tokens' K/V already written):
// query head h reads KV head h / (num_heads / num_kv_heads).
// q: bf16 [tokens, q_stride] (head h at column h*head_dim); out: bf16 [tokens, out_stride];
// workspace: attention_workspace_bytes(tokens, num_heads, head_dim, split.num_splits) bytes
// (may be null when split.num_splits == 1). head_dim must be 8, 16, 32, 64, 128 or 256.
void paged_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride, bf16* out,
                     int64_t out_stride, const AttentionBatch& batch, int64_t num_heads,
                     float scale, const AttentionSplit& split, void* workspace,
                     std::size_t workspace_bytes, cudaStream_t stream);

// ---- prefill attention (kernels/cuda/prefill_attention.cu) ----------------------------------
// The same attention as paged_attention for prefill chunks, on the tensor cores: per sequence
// (all device arrays int32 [seqs]) query rows q_begin .. q_begin + q_len - 1 of q / out, at
// positions first_pos .. first_pos + q_len - 1 (first_pos = tokens already cached), each
// seeing positions 0 .. its own through the block table at block_ids + table_offsets.
struct PrefillSequences {
  const int32_t* q_begin = nullptr;
  const int32_t* q_len = nullptr;
  const int32_t* first_pos = nullptr;
  const int32_t* table_offsets = nullptr;
  const int32_t* block_ids = nullptr;  // int32 [*]: block tables, concatenated
  int64_t seqs = 0;
  int64_t max_q_len = 0;  // host value, >= every q_len (sizes the grid)
};

// Whether paged_prefill_attention takes this head_dim (64 and 128); otherwise use
// paged_attention for the chunks too.
bool prefill_attention_supported(int64_t head_dim);

// q: bf16 [tokens, q_stride] (head h at column h*head_dim); out: bf16 [tokens, out_stride]
// (only the sequences' rows written). The chunks' own K/V must be in the pool (write_kv).
// No workspace; one launch, no host synchronisation.
void paged_prefill_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride, bf16* out,
                             int64_t out_stride, const PrefillSequences& seqs, int64_t num_heads,
                             float scale, cudaStream_t stream);

// ---- activation (kernels/cuda/activation.cu) -----------------------------------------------
// SwiGLU: out = silu(gate) * up. gate_up: bf16 [rows, 2*width] (gate columns, then up);
// out: bf16 [rows, width].
void silu_mul(const bf16* gate_up, bf16* out, int64_t rows, int64_t width, cudaStream_t stream);

// ---- sampling (kernels/cuda/sampling.cu) ---------------------------------------------------
// Greedy decoding: tokens[r] = argmax of row r (lowest id on ties, as torch.argmax).
// logits: float [rows, row_stride] (first `vocab` columns used); tokens: int32 [rows];
// max_logits: float [rows] or null.
void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                 int32_t* tokens, float* max_logits, cudaStream_t stream);

// lse[r] = log(sum_v exp(logits[r, v])) over the first `vocab` columns (NaN skipped): a token's
// log-probability is logits[r, token] - lse[r] (kernels/cuda/log_softmax.cu).
// logits: float [rows, row_stride]; lse: float [rows].
void logsumexp_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                    float* lse, cudaStream_t stream);
// ---- full sampling (kernels/cuda/sampling_filter.cu) ----------------------------------------
// Exactly kernels/cpu/sampling.cc's sample_token for each row: penalties (CTRL rule over the seen
// tokens, then frequency / presence over the output counts), then greedy argmax (lowest id on
// ties) or temperature / top-k / top-p / min-p and the inverse-CDF draw in id order with the
// row's uniform. The token may differ from the CPU's only where the uniform lies within rounding
// (~1e-12) of a cumulative boundary of the distribution (the GPU sums in another order).

// One row's settings (device array [rows]); sampling_row_params builds it from the request's.
struct SamplingRowParams {
  float temperature = 1.0f;  // > 0 unless greedy
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.0f;        // [0, 1); 0 = off
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int32_t top_k = 0;   // 0 = off
  int32_t greedy = 0;  // nonzero (or temperature 0): argmax of the penalised logits
};

// Penalty histories of the rows in CSR form (all device arrays; a pair of nulls = no history).
// Row r's seen tokens (prompt and output, each at most once) are
// seen_tokens[seen_offsets[r] .. seen_offsets[r + 1]); its output counts are the pairs
// (count_tokens[i], counts[i]) for i in [count_offsets[r], count_offsets[r + 1]), each token at
// most once (cpu::PenaltyHistory, as worker::Sampler builds it). Tokens outside [0, vocab) are
// ignored. seen_offsets, count_offsets: int32 [rows + 1]; the others int32 [total].
struct SamplingHistory {
  const int32_t* seen_offsets = nullptr;
  const int32_t* seen_tokens = nullptr;
  const int32_t* count_offsets = nullptr;
  const int32_t* count_tokens = nullptr;
  const int32_t* counts = nullptr;
};

// The row settings of a request (validated: the ranges of messages/sampling_params.h).
SamplingRowParams sampling_row_params(const messages::SamplingParams& params);

// Workspace of sample_rows for `rows` rows of `vocab` tokens: about 24 * rows * vocab bytes
// (16 for its own arrays, ~8 for the segmented sort's temporary storage). No allocation, but
// the CUB query reads the current device's attributes (so it needs a device).
std::size_t sampling_workspace_bytes(int64_t rows, int64_t vocab);

// logits: float [rows, row_stride] (first `vocab` columns used, not modified);
// params: SamplingRowParams [rows]; history: as above (per row); uniforms: double [rows], each
// in [0, 1) (worker::Sampler's counter_uniform; unused by greedy rows); tokens: int32 [rows];
// logprobs: float [rows], the chosen token's log_softmax of the raw logits (cpu::describe_token);
// workspace: sampling_workspace_bytes(rows, vocab) bytes, 256-byte aligned.
// rows * vocab must fit in int32 (the sort's item count).
void sample_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                 const SamplingRowParams* params, const SamplingHistory& history,
                 const double* uniforms, int32_t* tokens, float* logprobs, void* workspace,
                 std::size_t workspace_bytes, cudaStream_t stream);

// ---- conversions (kernels/cuda/embedding.cu) -----------------------------------------------
// dst = bf16(src), round to nearest even. src: float [count]; dst: bf16 [count].
void convert_to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t stream);

// ---- random device data (kernels/cuda/random_fill.cu), for benchmarks of full-size models ----
// Counter-hash values (the same for a seed on every run). bytes: any 8-byte multiple filled,
// out 8-byte aligned; bf16 / float: uniform in [offset - scale, offset + scale); W4 meta: fp16
// scale in [0.5, 1.5) * scale and zero an integer in [0, 16) (kernels/cuda/quant_gemm.h).
void fill_random_bytes(void* out, std::size_t bytes, uint64_t seed, cudaStream_t stream);
void fill_random_bf16(bf16* out, int64_t count, float scale, float offset, uint64_t seed,
                      cudaStream_t stream);
void fill_random_f32(float* out, int64_t count, float scale, float offset, uint64_t seed,
                     cudaStream_t stream);
void fill_random_w4_meta(uint32_t* out, int64_t count, float scale, uint64_t seed,
                         cudaStream_t stream);

}  // namespace shardserve::kernels::cuda
