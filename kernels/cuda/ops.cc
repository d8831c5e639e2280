// Checked entry points of kernels/cuda/ops.h: validate on the host (shapes, 16-byte alignment
// that the vector paths need), launch through kernels/cuda/launchers.h, and turn a failed launch
// into an Error naming the op and its arguments.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"
#include "messages/sampling_params.h"

namespace shardserve::kernels::cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

void check_launch(cudaError_t status, const char* op, const std::string& args) {
  if (status != cudaSuccess) throw_cuda_error(status, op, __FILE__, __LINE__, args);
}

}  // namespace

void embedding_lookup(const bf16* table, int64_t vocab_begin, int64_t shard_rows, int64_t dim,
                      const int32_t* ids, int64_t tokens, float* out, cudaStream_t stream) {
  require(tokens >= 0 && dim > 0 && shard_rows > 0 && vocab_begin >= 0,
          "embedding_lookup: bad sizes tokens={} dim={} shard_rows={} vocab_begin={}", tokens, dim,
          shard_rows, vocab_begin);
  require(tokens == 0 || (table && ids && out), "embedding_lookup: null pointer");
  require(dim % 8 != 0 || (aligned16(table) && aligned16(out)),
          "embedding_lookup: table and out must be 16-byte aligned");
  check_launch(launch::embedding_lookup(table, vocab_begin, shard_rows, dim, ids, tokens, out,
                                        stream),
               "embedding_lookup", fmt::format("tokens={} dim={} shard_rows={}", tokens, dim,
                                               shard_rows));
}

void gather_rows(const bf16* src, int64_t dim, const int32_t* indices, int64_t rows, bf16* dst,
                 cudaStream_t stream) {
  require(rows >= 0 && dim > 0, "gather_rows: bad sizes rows={} dim={}", rows, dim);
  require(rows == 0 || (src && indices && dst), "gather_rows: null pointer");
  require(dim % 8 != 0 || (aligned16(src) && aligned16(dst)),
          "gather_rows: src and dst must be 16-byte aligned");
  check_launch(launch::gather_rows(src, dim, indices, rows, dst, stream), "gather_rows",
               fmt::format("rows={} dim={}", rows, dim));
}

void convert_to_bf16(const float* src, bf16* dst, int64_t count, cudaStream_t stream) {
  require(count >= 0, "convert_to_bf16: count {}", count);
  check_launch(launch::convert_to_bf16(src, dst, count, stream), "convert_to_bf16",
               fmt::format("count={}", count));
}

namespace {
void check_norm_args(const char* op, const void* x, const void* delta, const float* weight,
                     const bf16* out, int64_t rows, int64_t dim, float eps) {
  require(rows >= 0 && dim > 0 && eps >= 0, "{}: bad sizes rows={} dim={} eps={}", op, rows, dim,
          eps);
  require(rows == 0 || (x && weight && out), "{}: null pointer", op);
  require(dim % 8 != 0 || (aligned16(x) && aligned16(weight) && aligned16(out) &&
                           (delta == nullptr || aligned16(delta))),
          "{}: buffers must be 16-byte aligned", op);
}
}  // namespace

void rms_norm(const float* x, const float* weight, bf16* out, int64_t rows, int64_t dim,
              float eps, cudaStream_t stream) {
  check_norm_args("rms_norm", x, nullptr, weight, out, rows, dim, eps);
  // With no delta the kernel only reads `x`.
  check_launch(launch::add_rms_norm(const_cast<float*>(x), static_cast<const float*>(nullptr),
                                    weight, out, rows, dim, eps, stream),
               "rms_norm", fmt::format("rows={} dim={}", rows, dim));
}

namespace {
template <typename DeltaT>
void add_rms_norm_checked(float* residual, const DeltaT* delta, const float* weight, bf16* out,
                          int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  check_norm_args("add_rms_norm", residual, delta, weight, out, rows, dim, eps);
  require(rows == 0 || delta != nullptr, "add_rms_norm: null delta");
  check_launch(launch::add_rms_norm(residual, delta, weight, out, rows, dim, eps, stream),
               "add_rms_norm", fmt::format("rows={} dim={} delta {}", rows, dim,
                                           sizeof(DeltaT) == 2 ? "bf16" : "f32"));
}
}  // namespace

void add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                  int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  add_rms_norm_checked(residual, delta, weight, out, rows, dim, eps, stream);
}

void add_rms_norm(float* residual, const float* delta, const float* weight, bf16* out,
                  int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  add_rms_norm_checked(residual, delta, weight, out, rows, dim, eps, stream);
}

void apply_rope(bf16* x, int64_t row_stride, const int32_t* positions, int64_t tokens,
                int64_t heads, int64_t head_dim, const float* inv_freq, cudaStream_t stream) {
  require(tokens >= 0 && heads > 0 && head_dim > 0 && head_dim % 2 == 0 &&
              row_stride >= heads * head_dim,
          "apply_rope: bad sizes tokens={} heads={} head_dim={} row_stride={}", tokens, heads,
          head_dim, row_stride);
  require(tokens == 0 || (x && positions && inv_freq), "apply_rope: null pointer");
  check_launch(launch::apply_rope(x, row_stride, positions, tokens, heads, head_dim, inv_freq,
                                  stream),
               "apply_rope", fmt::format("tokens={} heads={} head_dim={} row_stride={}", tokens,
                                         heads, head_dim, row_stride));
}

namespace {
void check_pool(const char* op, const PagedKvPool& pool) {
  require(pool.k && pool.v && pool.num_blocks > 0 && pool.block_size > 0 &&
              pool.num_kv_heads > 0 && pool.head_dim > 0,
          "{}: bad pool (blocks={} block_size={} kv_heads={} head_dim={})", op, pool.num_blocks,
          pool.block_size, pool.num_kv_heads, pool.head_dim);
  require(pool.head_dim % 8 == 0 && aligned16(pool.k) && aligned16(pool.v),
          "{}: head_dim {} must be a multiple of 8 and the pool 16-byte aligned", op,
          pool.head_dim);
}
}  // namespace

void write_kv(const PagedKvPool& pool, const bf16* k, const bf16* v, int64_t src_stride,
              const int32_t* slots, int64_t tokens, cudaStream_t stream) {
  check_pool("write_kv", pool);
  const int64_t row = pool.num_kv_heads * pool.head_dim;
  require(tokens >= 0 && src_stride >= row && src_stride % 8 == 0,
          "write_kv: bad sizes tokens={} src_stride={} (row {} values, stride a multiple of 8)",
          tokens, src_stride, row);
  require(tokens == 0 || (k && v && slots && aligned16(k) && aligned16(v)),
          "write_kv: k, v must be non-null and 16-byte aligned");
  check_launch(launch::write_kv(pool, k, v, src_stride, slots, tokens, stream), "write_kv",
               fmt::format("tokens={} kv_heads={} head_dim={}", tokens, pool.num_kv_heads,
                           pool.head_dim));
}

std::size_t attention_workspace_bytes(int64_t tokens, int64_t num_heads, int64_t head_dim,
                                      int32_t num_splits) {
  if (num_splits <= 1) return 0;
  return sizeof(float) * static_cast<std::size_t>(tokens * num_heads * num_splits) *
         static_cast<std::size_t>(head_dim + 1);
}

AttentionSplit plan_attention_split(int64_t tokens, int64_t num_heads, int64_t num_kv_heads,
                                    int64_t head_dim, int64_t max_context, int sm_count,
                                    std::size_t workspace_bytes) {
  constexpr int64_t kMinPartition = 256;
  AttentionSplit one;
  if (tokens <= 0 || max_context <= kMinPartition) return one;
  const int64_t group = num_heads / std::max<int64_t>(num_kv_heads, 1);
  const int64_t per_block = group % 8 == 0 ? 8 : group % 4 == 0 ? 4 : group % 2 == 0 ? 2 : 1;
  const int64_t blocks = tokens * (num_heads / per_block);
  const int64_t target = 2 * static_cast<int64_t>(std::max(sm_count, 1));
  if (blocks >= target) return one;
  int64_t splits = std::min((target + blocks - 1) / blocks,
                            (max_context + kMinPartition - 1) / kMinPartition);
  int64_t partition = (max_context + splits - 1) / splits;
  partition = (partition + 63) / 64 * 64;
  splits = (max_context + partition - 1) / partition;
  while (splits > 1 &&
         attention_workspace_bytes(tokens, num_heads, head_dim, static_cast<int32_t>(splits)) >
             workspace_bytes) {
    partition *= 2;
    splits = (max_context + partition - 1) / partition;
  }
  if (splits <= 1) return one;
  return {static_cast<int32_t>(partition), static_cast<int32_t>(splits)};
}

void paged_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride, bf16* out,
                     int64_t out_stride, const AttentionBatch& batch, int64_t num_heads,
                     float scale, const AttentionSplit& split, void* workspace,
                     std::size_t workspace_bytes, cudaStream_t stream) {
  check_pool("paged_attention", pool);
  const int64_t hd = pool.head_dim;
  require(hd == 8 || hd == 16 || hd == 32 || hd == 64 || hd == 128 || hd == 256,
          "paged_attention: head_dim {} is not one of 8, 16, 32, 64, 128, 256", hd);
  require(num_heads > 0 && num_heads % pool.num_kv_heads == 0,
          "paged_attention: {} query heads do not divide into {} KV heads", num_heads,
          pool.num_kv_heads);
  require(batch.tokens >= 0 && q_stride >= num_heads * hd && q_stride % 8 == 0 &&
              out_stride >= num_heads * hd,
          "paged_attention: bad strides q_stride={} out_stride={} for {} heads of {}", q_stride,
          out_stride, num_heads, hd);
  require(split.num_splits >= 1 && split.partition_len > 0,
          "paged_attention: bad split ({} x {})", split.num_splits, split.partition_len);
  require(batch.tokens <= INT32_MAX && num_heads <= 65535 * 8 && split.num_splits <= 65535,
          "paged_attention: grid too large (tokens={} heads={} splits={})", batch.tokens,
          num_heads, split.num_splits);
  if (batch.tokens == 0) return;
  require(q && out && batch.positions && batch.table_offsets && batch.block_ids && aligned16(q),
          "paged_attention: null or misaligned pointer");
  const std::size_t needed =
      attention_workspace_bytes(batch.tokens, num_heads, hd, split.num_splits);
  require(workspace_bytes >= needed && (needed == 0 || workspace != nullptr),
          "paged_attention: {} splits for {} tokens x {} heads need {} bytes of workspace, "
          "given {}", split.num_splits, batch.tokens, num_heads, needed, workspace_bytes);
  check_launch(launch::paged_attention(pool, q, q_stride, out, out_stride, batch, num_heads,
                                       scale, split, static_cast<float*>(workspace), stream),
               "paged_attention",
               fmt::format("tokens={} heads={} kv_heads={} head_dim={} splits={}x{}",
                           batch.tokens, num_heads, pool.num_kv_heads, hd, split.num_splits,
                           split.partition_len));
}

bool prefill_attention_supported(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

void paged_prefill_attention(const PagedKvPool& pool, const bf16* q, int64_t q_stride, bf16* out,
                             int64_t out_stride, const PrefillSequences& seqs, int64_t num_heads,
                             float scale, cudaStream_t stream) {
  check_pool("paged_prefill_attention", pool);
  const int64_t hd = pool.head_dim;
  require(prefill_attention_supported(hd),
          "paged_prefill_attention: head_dim {} is not 64 or 128 (use paged_attention)", hd);
  require(pool.block_size <= INT32_MAX, "paged_prefill_attention: block_size {}",
          pool.block_size);
  require(num_heads > 0 && num_heads % pool.num_kv_heads == 0,
          "paged_prefill_attention: {} query heads do not divide into {} KV heads", num_heads,
          pool.num_kv_heads);
  require(q_stride >= num_heads * hd && q_stride % 8 == 0 && out_stride >= num_heads * hd &&
              out_stride % 2 == 0,
          "paged_prefill_attention: bad strides q_stride={} (a multiple of 8) out_stride={} (even) "
          "for {} heads of {}", q_stride, out_stride, num_heads, hd);
  require(seqs.seqs >= 0 && seqs.seqs <= 65535 && pool.num_kv_heads <= 65535 &&
              seqs.max_q_len >= 0 && seqs.max_q_len * num_heads <= INT32_MAX,
          "paged_prefill_attention: grid too large (seqs={} kv_heads={} max_q_len={} heads={})",
          seqs.seqs, pool.num_kv_heads, seqs.max_q_len, num_heads);
  if (seqs.seqs == 0 || seqs.max_q_len == 0) return;
  require(q && out && seqs.q_begin && seqs.q_len && seqs.first_pos && seqs.table_offsets &&
              seqs.block_ids && aligned16(q) && reinterpret_cast<std::uintptr_t>(out) % 4 == 0,
          "paged_prefill_attention: null or misaligned pointer (q 16-byte, out 4-byte aligned)");
  check_launch(launch::paged_prefill_attention(pool, q, q_stride, out, out_stride, seqs,
                                               num_heads, scale, stream),
               "paged_prefill_attention",
               fmt::format("seqs={} max_q_len={} heads={} kv_heads={} head_dim={}", seqs.seqs,
                           seqs.max_q_len, num_heads, pool.num_kv_heads, hd));
}

void silu_mul(const bf16* gate_up, bf16* out, int64_t rows, int64_t width, cudaStream_t stream) {
  require(rows >= 0 && width > 0, "silu_mul: bad sizes rows={} width={}", rows, width);
  require(rows == 0 || (gate_up && out), "silu_mul: null pointer");
  require(width % 8 != 0 || (aligned16(gate_up) && aligned16(out)),
          "silu_mul: buffers must be 16-byte aligned");
  check_launch(launch::silu_mul(gate_up, out, rows, width, stream), "silu_mul",
               fmt::format("rows={} width={}", rows, width));
}

void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                 int32_t* tokens, float* max_logits, cudaStream_t stream) {
  require(rows >= 0 && vocab > 0 && vocab <= INT32_MAX && row_stride >= vocab,
          "argmax_rows: bad sizes rows={} vocab={} row_stride={}", rows, vocab, row_stride);
  require(rows == 0 || (logits && tokens), "argmax_rows: null pointer");
  check_launch(launch::argmax_rows(logits, rows, vocab, row_stride, tokens, max_logits, stream),
               "argmax_rows", fmt::format("rows={} vocab={}", rows, vocab));
}

void logsumexp_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                    float* lse, cudaStream_t stream) {
  require(rows >= 0 && vocab > 0 && row_stride >= vocab,
          "logsumexp_rows: bad sizes rows={} vocab={} row_stride={}", rows, vocab, row_stride);
  require(rows == 0 || (logits && lse), "logsumexp_rows: null pointer");
  check_launch(launch::logsumexp_rows(logits, rows, vocab, row_stride, lse, stream),
               "logsumexp_rows", fmt::format("rows={} vocab={}", rows, vocab));
}

SamplingRowParams sampling_row_params(const messages::SamplingParams& p) {
  require(std::isfinite(p.temperature) && p.temperature >= 0,
          "sampling_row_params: temperature {} (want 0 for greedy or > 0)", p.temperature);
  require(p.top_p > 0 && p.top_p <= 1, "sampling_row_params: top_p {} not in (0, 1]", p.top_p);
  require(p.top_k >= 0, "sampling_row_params: top_k {} (want 0 = off or > 0)", p.top_k);
  require(p.min_p >= 0 && p.min_p < 1, "sampling_row_params: min_p {} not in [0, 1)", p.min_p);
  require(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0,
          "sampling_row_params: repetition_penalty {} (want > 0)", p.repetition_penalty);
  require(std::isfinite(p.frequency_penalty) && std::isfinite(p.presence_penalty),
          "sampling_row_params: frequency_penalty {} / presence_penalty {} not finite",
          p.frequency_penalty, p.presence_penalty);
  SamplingRowParams r;
  r.temperature = p.temperature;
  r.top_p = p.top_p;
  r.min_p = p.min_p;
  r.repetition_penalty = p.repetition_penalty;
  r.frequency_penalty = p.frequency_penalty;
  r.presence_penalty = p.presence_penalty;
  r.top_k = p.top_k;
  r.greedy = p.greedy() ? 1 : 0;
  return r;
}

namespace {
void check_sampling_sizes(const char* op, int64_t rows, int64_t vocab) {
  require(rows >= 0 && vocab > 0 && vocab <= INT32_MAX && rows <= INT32_MAX,
          "{}: bad sizes rows={} vocab={}", op, rows, vocab);
  require(rows * vocab <= INT32_MAX,
          "{}: rows={} x vocab={} = {} values exceed the sort's int32 item count", op, rows, vocab,
          rows * vocab);
}
}  // namespace

std::size_t sampling_workspace_bytes(int64_t rows, int64_t vocab) {
  check_sampling_sizes("sampling_workspace_bytes", rows, vocab);
  std::size_t bytes = 0;
  check_launch(launch::sampling_workspace_bytes(rows, vocab, bytes), "sampling_workspace_bytes",
               fmt::format("rows={} vocab={}", rows, vocab));
  return bytes;
}

void sample_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                 const SamplingRowParams* params, const SamplingHistory& history,
                 const double* uniforms, int32_t* tokens, float* logprobs, void* workspace,
                 std::size_t workspace_bytes, cudaStream_t stream) {
  check_sampling_sizes("sample_rows", rows, vocab);
  require(row_stride >= vocab, "sample_rows: row_stride {} < vocab {}", row_stride, vocab);
  require((history.seen_offsets == nullptr) == (history.seen_tokens == nullptr),
          "sample_rows: seen_offsets and seen_tokens must both be set or both null");
  require((history.count_offsets == nullptr) == (history.count_tokens == nullptr) &&
              (history.count_offsets == nullptr) == (history.counts == nullptr),
          "sample_rows: count_offsets, count_tokens and counts must all be set or all null");
  if (rows == 0) return;
  require(logits && params && uniforms && tokens && logprobs,
          "sample_rows: null pointer (logits {} params {} uniforms {} tokens {} logprobs {})",
          fmt::ptr(logits), fmt::ptr(params), fmt::ptr(uniforms), fmt::ptr(tokens),
          fmt::ptr(logprobs));
  require(workspace != nullptr && reinterpret_cast<std::uintptr_t>(workspace) % 256 == 0,
          "sample_rows: workspace {} must be non-null and 256-byte aligned", fmt::ptr(workspace));
  const std::size_t needed = sampling_workspace_bytes(rows, vocab);
  require(workspace_bytes >= needed,
          "sample_rows: rows={} vocab={} need {} bytes of workspace, given {}", rows, vocab,
          needed, workspace_bytes);
  check_launch(launch::sample_rows(logits, rows, vocab, row_stride, params, history, uniforms,
                                   tokens, logprobs, workspace, stream),
               "sample_rows", fmt::format("rows={} vocab={} row_stride={}", rows, vocab,
                                          row_stride));
}

void fill_random_bytes(void* out, std::size_t bytes, uint64_t seed, cudaStream_t stream) {
  require(bytes % 8 == 0 && reinterpret_cast<std::uintptr_t>(out) % 8 == 0,
          "fill_random_bytes: {} bytes at a pointer not 8-byte aligned or not a multiple of 8",
          bytes);
  check_launch(launch::fill_random_bytes(out, bytes, seed, stream), "fill_random_bytes",
               fmt::format("bytes={}", bytes));
}

void fill_random_bf16(bf16* out, int64_t count, float scale, float offset, uint64_t seed,
                      cudaStream_t stream) {
  require(count >= 0, "fill_random_bf16: count {}", count);
  check_launch(launch::fill_random_bf16(out, count, scale, offset, seed, stream),
               "fill_random_bf16", fmt::format("count={}", count));
}

void fill_random_f32(float* out, int64_t count, float scale, float offset, uint64_t seed,
                     cudaStream_t stream) {
  require(count >= 0, "fill_random_f32: count {}", count);
  check_launch(launch::fill_random_f32(out, count, scale, offset, seed, stream), "fill_random_f32",
               fmt::format("count={}", count));
}

void fill_random_w4_meta(uint32_t* out, int64_t count, float scale, uint64_t seed,
                         cudaStream_t stream) {
  require(count >= 0, "fill_random_w4_meta: count {}", count);
  check_launch(launch::fill_random_w4_meta(out, count, scale, seed, stream),
               "fill_random_w4_meta", fmt::format("count={}", count));
}

}  // namespace shardserve::kernels::cuda
