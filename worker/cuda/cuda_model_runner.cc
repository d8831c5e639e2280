#include "worker/cuda/cuda_model_runner.h"

#include "worker/plan_validation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "common/error.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/cuda_check.h"

namespace shardserve::worker::cuda {
namespace kc = kernels::cuda;
using kc::bf16;
using kc::DeviceBuffer;

namespace {

kernels::cpu::RopeParams rope_params(const model::ModelConfig& c) {
  kernels::cpu::RopeParams p;
  p.head_dim = c.head_dim;
  p.theta = c.rope_theta;
  p.factor = c.rope_scaling.factor;
  p.low_freq_factor = c.rope_scaling.low_freq_factor;
  p.high_freq_factor = c.rope_scaling.high_freq_factor;
  p.original_max_position = c.rope_scaling.original_max_position_embeddings;
  switch (c.rope_scaling.type) {
    case model::RopeScaling::Type::kNone: p.scaling = kernels::cpu::RopeParams::Scaling::kNone; break;
    case model::RopeScaling::Type::kLlama3: p.scaling = kernels::cpu::RopeParams::Scaling::kLlama3; break;
    case model::RopeScaling::Type::kLinear: p.scaling = kernels::cpu::RopeParams::Scaling::kLinear; break;
  }
  return p;
}

// Byte offsets of forward_sampled's inputs for one launch of `rows` rows and `history_ints`
// history entries (cuda_model_runner.h: sampling_inputs_). Every part is 8-byte aligned.
struct SamplingInputLayout {
  std::size_t params = 0, seen_offsets = 0, count_offsets = 0, history = 0, total = 0;
  SamplingInputLayout(int64_t rows, int64_t history_ints) {
    auto align8 = [](std::size_t n) { return (n + 7) / 8 * 8; };
    params = sizeof(double) * rows;
    seen_offsets = params + align8(sizeof(kc::SamplingRowParams) * rows);
    count_offsets = seen_offsets + align8(sizeof(int32_t) * (rows + 1));
    history = count_offsets + align8(sizeof(int32_t) * (rows + 1));
    total = history + sizeof(int32_t) * history_ints;
  }
};

// The shape of Sampler::device_inputs' result for a step of `rows` logit rows.
void check_sampling_inputs(uint64_t step_id, const DeviceSamplingInputs& in, int64_t rows) {
  require(in.rows() == rows && static_cast<int64_t>(in.uniforms.size()) == rows &&
              static_cast<int64_t>(in.seen_offsets.size()) == rows + 1 &&
              static_cast<int64_t>(in.count_offsets.size()) == rows + 1 &&
              in.counts.size() == in.count_tokens.size(),
          "forward_sampled (step {}): inputs for {} rows ({} uniforms, {} + {} offsets, {} count "
          "tokens and {} counts), the plan has {} logit rows",
          step_id, in.rows(), in.uniforms.size(), in.seen_offsets.size(),
          in.count_offsets.size(), in.count_tokens.size(), in.counts.size(), rows);
  auto check_csr = [&](const std::vector<int32_t>& offsets, std::size_t entries, const char* what) {
    require(offsets.front() == 0 && static_cast<std::size_t>(offsets.back()) == entries &&
                std::is_sorted(offsets.begin(), offsets.end()),
            "forward_sampled (step {}): {} offsets must rise from 0 to {} entries", step_id, what,
            entries);
  };
  check_csr(in.seen_offsets, in.seen_tokens.size(), "seen");
  check_csr(in.count_offsets, in.count_tokens.size(), "count");
  for (int64_t r = 0; r < rows; ++r) {
    require(in.uniforms[r] >= 0 && in.uniforms[r] < 1,
            "forward_sampled (step {}): row {}'s uniform {} is not in [0, 1)", step_id, r,
            in.uniforms[r]);
  }
}

}  // namespace

std::size_t CudaModelRunner::kv_bytes_per_block(const model::ModelConfig& c,
                                                const TensorParallelShard& s, int64_t block_size) {
  return static_cast<std::size_t>(c.num_hidden_layers) * 2 * block_size * s.kv_heads *
         c.head_dim * sizeof(bf16);
}

CudaModelRunner::CudaModelRunner(model::ModelConfig config, TensorParallelShard shard,
                                 const model::Checkpoint& checkpoint, CudaRunnerOptions options,
                                 comm::Collective& group)
    : CudaModelRunner(
          std::move(config), shard,
          [&] { return std::make_unique<DeviceWeights>(checkpoint, config_, shard_); }, options,
          group) {}

CudaModelRunner::CudaModelRunner(model::ModelConfig config, TensorParallelShard shard,
                                 const RandomWeightsSpec& random, CudaRunnerOptions options,
                                 comm::Collective& group)
    : CudaModelRunner(
          std::move(config), shard,
          [&] { return std::make_unique<DeviceWeights>(config_, shard_, random); }, options,
          group) {}

CudaModelRunner::CudaModelRunner(model::ModelConfig config, TensorParallelShard shard,
                                 const WeightsFactory& load, CudaRunnerOptions options,
                                 comm::Collective& group)
    : config_(std::move(config)), shard_(shard), options_(options), group_(group) {
  require(group_.size() == shard_.size && group_.rank() == shard_.rank,
          "cuda model runner: shard {} of {} does not match the collective's rank {} of {}",
          shard_.rank, shard_.size, group_.rank(), group_.size());
  require(options_.block_size > 0 && options_.max_tokens_per_step > 0 &&
              options_.max_logits_per_step > 0 && options_.num_kv_blocks >= 0 &&
              options_.kv_memory_fraction > 0 && options_.kv_memory_fraction <= 1 &&
              options_.sampling_rows_per_launch > 0 && options_.sampling_history_ints >= 0,
          "cuda model runner: bad options (block_size {}, max_tokens_per_step {}, "
          "max_logits_per_step {}, num_kv_blocks {}, kv_memory_fraction {}, "
          "sampling_rows_per_launch {}, sampling_history_ints {})",
          options_.block_size, options_.max_tokens_per_step, options_.max_logits_per_step,
          options_.num_kv_blocks, options_.kv_memory_fraction, options_.sampling_rows_per_launch,
          options_.sampling_history_ints);
  SHARDSERVE_CUDA_CHECK_CTX(cudaSetDevice(options_.device), fmt::format("device {}", options_.device));
  SHARDSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount,
                                               options_.device));
  stream_ = kc::Stream();
  const auto start = kc::device_memory_info();
  memory_.total_bytes = start.total_bytes;
  memory_.free_at_start_bytes = start.free_bytes;
  memory_.block_size = options_.block_size;

  // 1. Weights.
  weights_ = load();
  memory_.weights_bytes = weights_->bytes();

  // 2. Activations and workspaces.
  const auto after_weights = kc::device_memory_info().free_bytes;
  const int64_t T = options_.max_tokens_per_step, R = options_.max_logits_per_step;
  const int64_t H = config_.hidden_size, D = config_.head_dim;
  const int64_t qn = shard_.heads * D, kvn = shard_.kv_heads * D, width = qn + 2 * kvn;
  const int64_t F = shard_.ffn, V = shard_.vocab_per_rank;
  const int64_t blocks_per_seq =
      (config_.max_position_embeddings + options_.block_size - 1) / options_.block_size;
  block_table_capacity_ = std::min<int64_t>(T * blocks_per_seq, int64_t{1} << 24);
  gemm_ = std::make_unique<kc::GemmBf16>();
  const auto inv_freq = kernels::cpu::rope_inverse_frequencies(rope_params(config_));
  inv_freq_ = DeviceBuffer(inv_freq.size() * sizeof(float), "RoPE frequencies");
  kc::copy_to_device(inv_freq_.data(), inv_freq.data(), inv_freq.size() * sizeof(float));
  residual_ = DeviceBuffer(T * H * 4, "activations (residual)");
  normed_ = DeviceBuffer(T * H * 2, "activations (normed)");
  qkv_ = DeviceBuffer(T * width * 2, "activations (qkv)");
  attn_ = DeviceBuffer(T * qn * 2, "activations (attention)");
  proj_ = DeviceBuffer(T * H * 4, "activations (projection)");
  gate_up_ = DeviceBuffer(T * 2 * F * 2, "activations (gate_up)");
  act_ = DeviceBuffer(T * F * 2, "activations (swiglu)");
  head_in_ = DeviceBuffer(R * H * 2, "activations (LM head input)");
  logits_ = DeviceBuffer(R * V * 4, "logits");
  if (group_.size() > 1) gathered_ = DeviceBuffer(group_.size() * R * V * 4, "gathered logits");
  attn_workspace_ = DeviceBuffer(options_.attention_workspace_bytes, "attention workspace");
  if (weights_->num_w4_linears() > 0) {
    if (weights_->w4_uses_dense(T)) {
      w4_dense_ = DeviceBuffer(weights_->max_w4_dense_bytes(), "4-bit prefill scratch (dense bf16)");
    }
    w4_partial_ = DeviceBuffer(std::max<std::size_t>(weights_->max_w4_workspace_bytes(T), 16),
                               "4-bit GEMM workspace");
  }
  // + the attention lists of a step with prefill chunks: 3 per decode token, 4 per chunk (a
  // chunk has at least 2 tokens), so at most 5 T.
  const std::size_t input_ints = 4 * T + R + block_table_capacity_ + 5 * T;
  inputs_ = DeviceBuffer(input_ints * 4, "step inputs");
  inputs_host_ = kc::PinnedBuffer(input_ints * 4, "step inputs");
  logits_host_ = kc::PinnedBuffer(std::size_t(group_.size()) * R * V * 4, "logits");
  samples_ = DeviceBuffer(R * 12, "device samples");
  samples_host_ = kc::PinnedBuffer(R * 12, "device samples");
  if (samples_on_device()) {
    // One row's history is at most its unique seen tokens plus its unique output tokens with
    // their counts, each bounded by the vocabulary and the positions: it always fits a launch.
    sampling_rows_ = std::min(options_.sampling_rows_per_launch, R);
    sampling_history_ = std::max(
        options_.sampling_history_ints,
        3 * std::min<int64_t>(config_.vocab_size, config_.max_position_embeddings));
    const SamplingInputLayout layout(sampling_rows_, sampling_history_);
    sampling_inputs_ = DeviceBuffer(layout.total, "sampling inputs");
    sampling_inputs_host_ = kc::PinnedBuffer(layout.total, "sampling inputs");
    sampling_workspace_ = DeviceBuffer(
        kc::sampling_workspace_bytes(sampling_rows_, config_.vocab_size), "sampling workspace");
  }
  memory_.activation_bytes = after_weights - kc::device_memory_info().free_bytes;

  // 3. The KV pool from what is left.
  memory_.kv_bytes_per_block = kv_bytes_per_block(config_, shard_, options_.block_size);
  const auto free_now = kc::device_memory_info();
  if (options_.num_kv_blocks > 0) {
    memory_.num_kv_blocks = options_.num_kv_blocks;
    const double needed = double(memory_.kv_bytes_per_block) * double(options_.num_kv_blocks);
    require(needed <= double(free_now.free_bytes),
            "out of device memory: the KV cache of {} blocks x {} needs {} but only {} of {} is "
            "free after the weights ({}) and activations ({})",
            options_.num_kv_blocks, kc::format_bytes(memory_.kv_bytes_per_block),
            kc::format_bytes(static_cast<std::size_t>(needed)),
            kc::format_bytes(free_now.free_bytes), kc::format_bytes(free_now.total_bytes),
            kc::format_bytes(memory_.weights_bytes), kc::format_bytes(memory_.activation_bytes));
  } else {
    const double budget = double(free_now.free_bytes) * options_.kv_memory_fraction;
    memory_.num_kv_blocks = static_cast<int64_t>(budget / double(memory_.kv_bytes_per_block));
    require(memory_.num_kv_blocks >= 1,
            "out of device memory: one KV block needs {} but {} of the {} free after the weights "
            "({}) and activations ({}) is only {}",
            kc::format_bytes(memory_.kv_bytes_per_block), options_.kv_memory_fraction,
            kc::format_bytes(free_now.free_bytes), kc::format_bytes(memory_.weights_bytes),
            kc::format_bytes(memory_.activation_bytes),
            kc::format_bytes(static_cast<std::size_t>(budget)));
  }
  memory_.kv_bytes = memory_.kv_bytes_per_block * memory_.num_kv_blocks;
  kv_ = DeviceBuffer(memory_.kv_bytes, fmt::format("KV cache ({} blocks)", memory_.num_kv_blocks));
}

CudaModelRunner::~CudaModelRunner() = default;

kc::PagedKvPool CudaModelRunner::pool(int64_t layer) const {
  const int64_t per_pool =
      memory_.num_kv_blocks * options_.block_size * shard_.kv_heads * config_.head_dim;
  bf16* base = kv_.as<bf16>() + layer * 2 * per_pool;
  return {base, base + per_pool, memory_.num_kv_blocks, options_.block_size, shard_.kv_heads,
          config_.head_dim};
}

void CudaModelRunner::validate(const messages::StepPlan& plan) const {
  validate_plan(plan, PlanLimits{.vocab_size = config_.vocab_size,
                                 .max_positions = config_.max_position_embeddings,
                                 .block_size = options_.block_size,
                                 .num_blocks = memory_.num_kv_blocks,
                                 .max_tokens = options_.max_tokens_per_step,
                                 .max_logits = options_.max_logits_per_step,
                                 .max_block_entries = block_table_capacity_});
}

void CudaModelRunner::project(const bf16* x, int64_t m, int64_t n, int64_t k,
                              const DeviceLinear& w, void* y, kc::GemmOut out,
                              cudaStream_t stream) {
  if (!w.quantized()) {
    gemm_->run(x, w.dense, y, {.m = m, .n = n, .k = k, .out = out}, stream);
    return;
  }
  require(w.w4.n == n && w.w4.k == k, "cuda model runner: 4-bit weight [{}, {}] used as [{}, {}]",
          w.w4.n, w.w4.k, n, k);
  const kc::W4Scratch scratch{w4_dense_.as<bf16>(), w4_dense_.bytes(), w4_partial_.data(),
                              w4_partial_.bytes()};
  kc::w4_matmul(x, m, w.w4, y, n, out, scratch, *gemm_, stream);
}

void CudaModelRunner::all_reduce(float* data, int64_t count) {
  if (group_.size() == 1) return;
  stream_.synchronize();  // the collective runs on its own stream and returns when done
  group_.all_reduce_sum(data, count);
}

int64_t CudaModelRunner::graph_bucket(const messages::StepPlan& plan) const {
  if (!options_.cuda_graphs || group_.size() != 1) return 0;
  for (const auto& s : plan.seqs) {
    if (s.num_tokens != 1 || s.num_logits != 1) return 0;  // decode steps only
  }
  const int64_t T = plan.total_tokens();
  const int64_t cap = std::min(options_.max_tokens_per_step, options_.max_logits_per_step);
  int64_t bucket = 1;
  while (bucket < T) bucket *= 2;
  return T > 0 && bucket <= std::min<int64_t>(cap, kMaxGraphBatch) ? bucket : 0;
}

StepLogits CudaModelRunner::forward(const messages::StepPlan& plan) {
  const int64_t R = run_to_logits(plan);
  StepLogits out;
  out.rows = R;
  out.vocab = config_.vocab_size;
  if (R == 0) {
    stream_.synchronize();  // the KV writes are done when forward returns, as on the CPU
    return out;
  }
  const cudaStream_t st = stream_.get();
  const int64_t stride = shard_.vocab_per_rank;
  const float* full = logits_.as<float>();
  const int64_t ranks = group_.size();
  if (ranks > 1) {
    stream_.synchronize();
    group_.all_gather(logits_.as<float>(), gathered_.as<float>(), R * stride);
    full = gathered_.as<float>();
  }
  SHARDSERVE_CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), full,
                                        std::size_t(ranks * R * stride) * 4,
                                        cudaMemcpyDeviceToHost, st));
  stream_.synchronize();
  out.data.resize(R * out.vocab);
  const float* host = logits_host_.as<float>();
  for (int64_t g = 0; g < ranks; ++g) {
    const int64_t begin = g * stride;
    const int64_t count = std::min<int64_t>(stride, out.vocab - begin);
    for (int64_t row = 0; row < R && count > 0; ++row) {
      std::memcpy(out.data.data() + row * out.vocab + begin, host + (g * R + row) * stride,
                  count * 4);
    }
  }
  return out;
}

std::vector<DeviceSample> CudaModelRunner::forward_greedy(const messages::StepPlan& plan) {
  require(samples_on_device(), "forward_greedy: a tp group of {} ranks (the logits are "
          "sharded over the vocabulary; use forward())", group_.size());
  const int64_t R = run_to_logits(plan);
  std::vector<DeviceSample> out(R);
  if (R == 0) {
    stream_.synchronize();
    return out;
  }
  const cudaStream_t st = stream_.get();
  const int64_t V = config_.vocab_size, stride = shard_.vocab_per_rank;
  // samples_ = int32 tokens [R], float max logits [R], float lse [R], packed for this step's R:
  // one copy of 12 R bytes back.
  int32_t* d_tokens = samples_.as<int32_t>();
  float* d_max = reinterpret_cast<float*>(d_tokens + R);
  float* d_lse = d_max + R;
  kc::argmax_rows(logits_.as<float>(), R, V, stride, d_tokens, d_max, st);
  kc::logsumexp_rows(logits_.as<float>(), R, V, stride, d_lse, st);
  SHARDSERVE_CUDA_CHECK(cudaMemcpyAsync(samples_host_.data(), samples_.data(),
                                        std::size_t(R) * 12, cudaMemcpyDeviceToHost, st));
  stream_.synchronize();
  const auto* tokens = samples_host_.as<int32_t>();
  const auto* maxes = reinterpret_cast<const float*>(tokens + R);
  const float* lse = maxes + R;
  for (int64_t r = 0; r < R; ++r) out[r] = {tokens[r], maxes[r] - lse[r]};
  return out;
}

std::vector<DeviceSample> CudaModelRunner::forward_sampled(const messages::StepPlan& plan,
                                                           const DeviceSamplingInputs& in) {
  require(samples_on_device(), "forward_sampled: a tp group of {} ranks (the logits are "
          "sharded over the vocabulary; use forward())", group_.size());
  int64_t rows = 0;
  for (const auto& s : plan.seqs) rows += s.num_logits;
  // Every input is checked before the forward pass writes any K/V.
  check_sampling_inputs(plan.step_id, in, rows);
  std::vector<kc::SamplingRowParams> params(rows);
  for (int64_t r = 0; r < rows; ++r) params[r] = kc::sampling_row_params(in.params[r]);
  const int64_t R = run_to_logits(plan);
  std::vector<DeviceSample> out(R);
  if (R == 0) {
    stream_.synchronize();
    return out;
  }
  const cudaStream_t st = stream_.get();
  const int64_t V = config_.vocab_size, stride = shard_.vocab_per_rank;
  // samples_ = int32 tokens [R], float logprobs [R], packed for this step's R: one copy of
  // 8 R bytes back after the last launch.
  int32_t* d_tokens = samples_.as<int32_t>();
  float* d_logprobs = reinterpret_cast<float*>(d_tokens + R);
  const SamplingInputLayout layout(sampling_rows_, sampling_history_);
  char* h = static_cast<char*>(sampling_inputs_host_.data());
  char* d = static_cast<char*>(sampling_inputs_.data());
  auto history_ints = [&](int64_t b, int64_t e) {
    return int64_t{in.seen_offsets[e] - in.seen_offsets[b]} +
           2 * int64_t{in.count_offsets[e] - in.count_offsets[b]};
  };
  // Launches over rows [b, e): as many rows as the launch's capacity and history allow.
  for (int64_t b = 0, e = 0; b < R; b = e) {
    while (e < R && e - b < sampling_rows_ && history_ints(b, e + 1) <= sampling_history_) ++e;
    require(e > b, "forward_sampled (step {}): row {}'s penalty history of {} entries exceeds a "
            "launch's {}", plan.step_id, b, history_ints(b, b + 1), sampling_history_);
    // The staging is reused: the previous launch's upload must have read it (a step of more
    // than sampling_rows_per_launch rows or of long histories only).
    if (b > 0) stream_.synchronize();
    const int64_t c = e - b;
    const int32_t s0 = in.seen_offsets[b], s1 = in.seen_offsets[e];
    const int32_t c0 = in.count_offsets[b], c1 = in.count_offsets[e];
    std::memcpy(h, in.uniforms.data() + b, sizeof(double) * c);
    std::memcpy(h + layout.params, params.data() + b, sizeof(kc::SamplingRowParams) * c);
    auto* h_seen_offsets = reinterpret_cast<int32_t*>(h + layout.seen_offsets);
    auto* h_count_offsets = reinterpret_cast<int32_t*>(h + layout.count_offsets);
    for (int64_t i = 0; i <= c; ++i) {
      h_seen_offsets[i] = in.seen_offsets[b + i] - s0;
      h_count_offsets[i] = in.count_offsets[b + i] - c0;
    }
    auto* h_history = reinterpret_cast<int32_t*>(h + layout.history);
    std::copy(in.seen_tokens.begin() + s0, in.seen_tokens.begin() + s1, h_history);
    std::copy(in.count_tokens.begin() + c0, in.count_tokens.begin() + c1, h_history + (s1 - s0));
    std::copy(in.counts.begin() + c0, in.counts.begin() + c1, h_history + (s1 - s0) + (c1 - c0));
    const std::size_t bytes = layout.history + sizeof(int32_t) * history_ints(b, e);
    SHARDSERVE_CUDA_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, st));
    const auto* d_history = reinterpret_cast<const int32_t*>(d + layout.history);
    const kc::SamplingHistory history{
        .seen_offsets = reinterpret_cast<const int32_t*>(d + layout.seen_offsets),
        .seen_tokens = d_history,
        .count_offsets = reinterpret_cast<const int32_t*>(d + layout.count_offsets),
        .count_tokens = d_history + (s1 - s0),
        .counts = d_history + (s1 - s0) + (c1 - c0)};
    kc::sample_rows(logits_.as<float>() + b * stride, c, V, stride,
                    reinterpret_cast<const kc::SamplingRowParams*>(d + layout.params), history,
                    reinterpret_cast<const double*>(d), d_tokens + b, d_logprobs + b,
                    sampling_workspace_.data(), sampling_workspace_.bytes(), st);
  }
  SHARDSERVE_CUDA_CHECK(cudaMemcpyAsync(samples_host_.data(), samples_.data(),
                                        std::size_t(R) * 8, cudaMemcpyDeviceToHost, st));
  stream_.synchronize();
  const auto* tokens = samples_host_.as<int32_t>();
  const auto* logprobs = reinterpret_cast<const float*>(tokens + R);
  for (int64_t r = 0; r < R; ++r) out[r] = {tokens[r], logprobs[r]};
  return out;
}

int64_t CudaModelRunner::run_to_logits(const messages::StepPlan& plan) {
  validate(plan);
  const cudaStream_t st = stream_.get();
  const int64_t bs = options_.block_size;
  // A decode step of up to kMaxGraphBatch sequences is padded to its bucket and replays that
  // bucket's graph (captured after its first, eager run); everything else runs eagerly.
  const int64_t bucket = graph_bucket(plan);
  const int64_t T = bucket > 0 ? bucket : plan.total_tokens();

  // Attention: prefill chunks (sequences of more than one new token) go to the tensor-core
  // prefill kernel where it takes the head_dim, the other tokens to the decode kernel. A step
  // without chunks (every decode step, so every graph) gives the decode kernel all T tokens.
  const bool prefill_kernel = kc::prefill_attention_supported(config_.head_dim);
  int64_t R = 0, max_context = 0, chunks = 0, max_q_len = 0, decode_tokens = 0,
          decode_context = 0;
  for (const auto& s : plan.seqs) {
    R += s.num_logits;
    const int64_t context = int64_t{s.start_pos} + s.num_tokens;
    max_context = std::max(max_context, context);
    if (prefill_kernel && s.num_tokens > 1) {
      ++chunks;
      max_q_len = std::max<int64_t>(max_q_len, s.num_tokens);
    } else {
      decode_tokens += s.num_tokens;
      decode_context = std::max(decode_context, context);
    }
  }

  // Pack the int32 inputs: [tokens T | positions T | slots T | table offsets T | rows R |
  // block ids | (steps with chunks) decode positions, table offsets, rows [decode tokens] |
  // chunk q_begin, q_len, first_pos, table offsets [chunks]], one host-to-device copy. Padding
  // tokens (graph buckets): token 0 at position 0 of the first block table, slot -1 (no KV
  // write), their own logit row (dropped).
  const int64_t real_rows = R;
  if (bucket > 0) R = bucket;
  const int64_t nb = static_cast<int64_t>(plan.block_ids.size());
  int32_t* h = inputs_host_.as<int32_t>();
  int32_t *h_tokens = h, *h_pos = h + T, *h_slots = h + 2 * T, *h_tab = h + 3 * T,
          *h_rows = h + 4 * T, *h_blocks = h + 4 * T + R;
  std::memcpy(h_tokens, plan.token_ids.data(), plan.token_ids.size() * 4);
  if (nb > 0) std::memcpy(h_blocks, plan.block_ids.data(), nb * 4);
  int64_t r = 0;
  for (const auto& s : plan.seqs) {
    for (int32_t i = 0; i < s.num_tokens; ++i) {
      const int32_t t = s.token_offset + i, pos = s.start_pos + i;
      h_pos[t] = pos;
      h_tab[t] = s.block_offset;
      h_slots[t] = plan.block_ids[s.block_offset + pos / bs] * static_cast<int32_t>(bs) +
                   static_cast<int32_t>(pos % bs);
    }
    for (int32_t j = 0; j < s.num_logits; ++j) h_rows[r++] = s.token_offset + s.num_tokens - s.num_logits + j;
  }
  for (int64_t t = plan.total_tokens(); t < T; ++t) {
    h_tokens[t] = 0;
    h_pos[t] = 0;
    h_slots[t] = -1;
    h_tab[t] = plan.seqs.front().block_offset;
  }
  for (; r < R; ++r) h_rows[r] = static_cast<int32_t>(r);
  int64_t ints = 4 * T + R + nb;
  const int32_t* d = inputs_.as<int32_t>();
  StepAttention att;
  if (chunks == 0) {
    att.decode = {d + T, d + 3 * T, d + 4 * T + R, T};
    att.split = kc::plan_attention_split(T, shard_.heads, shard_.kv_heads, config_.head_dim,
                                         max_context, sm_count_, attn_workspace_.bytes());
  } else {
    const int64_t dt = decode_tokens, base = ints;
    int32_t *h_dpos = h + base, *h_dtab = h_dpos + dt, *h_drow = h_dtab + dt;
    int32_t *h_qbeg = h_drow + dt, *h_qlen = h_qbeg + chunks, *h_first = h_qlen + chunks,
            *h_ctab = h_first + chunks;
    int64_t i = 0, c = 0;
    for (const auto& s : plan.seqs) {
      if (s.num_tokens > 1) {
        h_qbeg[c] = s.token_offset;
        h_qlen[c] = s.num_tokens;
        h_first[c] = s.start_pos;
        h_ctab[c++] = s.block_offset;
        continue;
      }
      h_dpos[i] = s.start_pos;
      h_dtab[i] = s.block_offset;
      h_drow[i++] = s.token_offset;
    }
    ints += 3 * dt + 4 * chunks;
    att.decode = {d + base, d + base + dt, d + 4 * T + R, dt, d + base + 2 * dt};
    att.prefill = {d + base + 3 * dt,          d + base + 3 * dt + chunks,
                   d + base + 3 * dt + 2 * chunks, d + base + 3 * dt + 3 * chunks,
                   d + 4 * T + R,              chunks,
                   max_q_len};
    att.split = kc::plan_attention_split(dt, shard_.heads, shard_.kv_heads, config_.head_dim,
                                         decode_context, sm_count_, attn_workspace_.bytes());
  }
  SHARDSERVE_CUDA_CHECK(cudaMemcpyAsync(inputs_.data(), h, std::size_t(ints) * 4,
                                        cudaMemcpyHostToDevice, st));
  const kc::AttentionSplit& split = att.split;
  if (bucket == 0) {
    enqueue_step(T, R, att);
  } else {
    const GraphKey key{bucket, split.partition_len, split.num_splits};
    const auto found = graphs_.find(key);
    if (found != graphs_.end()) {
      found->second.launch(st);
    } else {
      // First step of this shape: run it eagerly (it also makes the GEMM plans, host work that
      // stays out of the capture), then capture the same launches for the next ones.
      enqueue_step(T, R, att);
      graphs_.emplace(key, kc::CudaGraph::capture(st, [&] { enqueue_step(T, R, att); }));
    }
  }
  return real_rows;
}

void CudaModelRunner::enqueue_step(int64_t T, int64_t R, const StepAttention& att) {
  const cudaStream_t st = stream_.get();
  const int64_t H = config_.hidden_size, D = config_.head_dim;
  const int64_t qn = shard_.heads * D, kvn = shard_.kv_heads * D, width = qn + 2 * kvn;
  const int64_t F = shard_.ffn;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const int32_t* d = inputs_.as<int32_t>();
  // The table offsets and block ids are read through att's pointers.
  const int32_t *d_tokens = d, *d_pos = d + T, *d_slots = d + 2 * T, *d_rows = d + 4 * T;

  float* residual = residual_.as<float>();
  bf16* normed = normed_.as<bf16>();
  bf16* qkv = qkv_.as<bf16>();
  bf16* attn = attn_.as<bf16>();
  float* proj = proj_.as<float>();
  kc::embedding_lookup(weights_->embedding(), shard_.vocab_begin, shard_.vocab, H, d_tokens, T,
                       residual, st);
  all_reduce(residual, T * H);
  kc::rms_norm(residual, weights_->layer(0).input_norm, normed, T, H, eps, st);

  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const auto& w = weights_->layer(l);
    const auto kv = pool(l);
    project(normed, T, width, H, w.qkv, qkv, kc::GemmOut::kBf16, st);
    kc::apply_rope(qkv, width, d_pos, T, shard_.heads + shard_.kv_heads, D, inv_freq_.as<float>(),
                   st);
    kc::write_kv(kv, qkv + qn, qkv + qn + kvn, width, d_slots, T, st);
    kc::paged_attention(kv, qkv, width, attn, qn, att.decode, shard_.heads, scale, att.split,
                        attn_workspace_.data(), attn_workspace_.bytes(), st);
    if (att.prefill.seqs > 0) {
      kc::paged_prefill_attention(kv, qkv, width, attn, qn, att.prefill, shard_.heads, scale, st);
    }
    project(attn, T, H, qn, w.o, proj, kc::GemmOut::kFloat, st);
    all_reduce(proj, T * H);
    kc::add_rms_norm(residual, static_cast<const float*>(proj), w.post_norm, normed, T, H, eps,
                     st);
    project(normed, T, 2 * F, H, w.gate_up, gate_up_.as<bf16>(), kc::GemmOut::kBf16, st);
    kc::silu_mul(gate_up_.as<bf16>(), act_.as<bf16>(), T, F, st);
    project(act_.as<bf16>(), T, H, F, w.down, proj, kc::GemmOut::kFloat, st);
    all_reduce(proj, T * H);
    const bool last = l + 1 == config_.num_hidden_layers;
    const float* next_norm = last ? weights_->final_norm() : weights_->layer(l + 1).input_norm;
    kc::add_rms_norm(residual, static_cast<const float*>(proj), next_norm, normed, T, H, eps, st);
  }
  if (R == 0) return;
  // Vocabulary-parallel head: this rank's rows of the vocabulary at the common stride.
  const int64_t stride = shard_.vocab_per_rank;
  kc::gather_rows(normed, H, d_rows, R, head_in_.as<bf16>(), st);
  if (shard_.vocab < stride) {
    SHARDSERVE_CUDA_CHECK(cudaMemsetAsync(logits_.data(), 0, std::size_t(R * stride) * 4, st));
  }
  gemm_->run(head_in_.as<bf16>(), weights_->lm_head(), logits_.data(),
             {.m = R, .n = shard_.vocab, .k = H, .ldy = stride, .out = kc::GemmOut::kFloat}, st);
}

}  // namespace shardserve::worker::cuda
