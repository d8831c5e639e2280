#include "worker/model_runner.h"

#include "worker/plan_validation.h"

#include <cmath>
#include <utility>

#include "common/error.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"

namespace shardserve::worker {
namespace cpu = kernels::cpu;

namespace {
cpu::RopeParams rope_params(const model::ModelConfig& c) {
  cpu::RopeParams p;
  p.head_dim = c.head_dim;
  p.theta = c.rope_theta;
  p.factor = c.rope_scaling.factor;
  p.low_freq_factor = c.rope_scaling.low_freq_factor;
  p.high_freq_factor = c.rope_scaling.high_freq_factor;
  p.original_max_position = c.rope_scaling.original_max_position_embeddings;
  switch (c.rope_scaling.type) {
    case model::RopeScaling::Type::kNone: p.scaling = cpu::RopeParams::Scaling::kNone; break;
    case model::RopeScaling::Type::kLlama3: p.scaling = cpu::RopeParams::Scaling::kLlama3; break;
    case model::RopeScaling::Type::kLinear: p.scaling = cpu::RopeParams::Scaling::kLinear; break;
  }
  return p;
}
}  // namespace

ModelRunner::ModelRunner(model::ModelConfig config, TensorParallelShard shard,
                         LlamaWeights weights, int64_t num_kv_blocks, int64_t block_size,
                         comm::Collective& group)
    : config_(std::move(config)),
      shard_(shard),
      weights_(std::move(weights)),
      kv_(config_.num_hidden_layers, num_kv_blocks, block_size, shard_.kv_heads,
          config_.head_dim),
      group_(group),
      inv_freq_(cpu::rope_inverse_frequencies(rope_params(config_))) {
  require(group_.size() == shard_.size && group_.rank() == shard_.rank,
          "model runner: shard {} of {} does not match the collective's rank {} of {}",
          shard_.rank, shard_.size, group_.rank(), group_.size());
}

void ModelRunner::validate(const messages::StepPlan& plan) const {
  validate_plan(plan, PlanLimits{.vocab_size = config_.vocab_size,
                                 .max_positions = config_.max_position_embeddings,
                                 .block_size = kv_.block_size(),
                                 .num_blocks = kv_.num_blocks()});
}

StepLogits ModelRunner::forward(const messages::StepPlan& plan) {
  validate(plan);
  const int64_t T = plan.total_tokens();
  const int64_t H = config_.hidden_size;
  std::vector<int32_t> positions(T);
  for (const auto& s : plan.seqs) {
    for (int32_t i = 0; i < s.num_tokens; ++i) positions[s.token_offset + i] = s.start_pos + i;
  }
  residual_.resize(T * H);
  normed_.resize(T * H);
  cpu::embedding_lookup(weights_.embedding.data(), shard_.vocab_begin, shard_.vocab, H,
                        plan.token_ids.data(), T, residual_.data());
  group_.all_reduce_sum(residual_.data(), T * H);
  cpu::rms_norm(residual_.data(), weights_.layers[0].input_norm.data(), normed_.data(), T, H,
                static_cast<float>(config_.rms_norm_eps));
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    attention_layer(l, plan, positions);
    mlp_layer(l);
  }
  return lm_head(plan);
}

void ModelRunner::attention_layer(int64_t l, const messages::StepPlan& plan,
                                  const std::vector<int32_t>& positions) {
  const auto& w = weights_.layers[l];
  const int64_t T = plan.total_tokens(), H = config_.hidden_size, D = config_.head_dim;
  const int64_t qn = shard_.heads * D, kvn = shard_.kv_heads * D, width = qn + 2 * kvn;
  qkv_.resize(T * width);
  cpu::matmul_nt(normed_.data(), w.qkv.data(), qkv_.data(), T, width, H);
  q_.resize(T * qn);
  k_.resize(T * kvn);
  v_.resize(T * kvn);
  for (int64_t t = 0; t < T; ++t) {
    const float* row = qkv_.data() + t * width;
    std::copy(row, row + qn, q_.data() + t * qn);
    std::copy(row + qn, row + qn + kvn, k_.data() + t * kvn);
    std::copy(row + qn + kvn, row + width, v_.data() + t * kvn);
  }
  cpu::apply_rope(q_.data(), positions.data(), T, shard_.heads, D, inv_freq_.data());
  cpu::apply_rope(k_.data(), positions.data(), T, shard_.kv_heads, D, inv_freq_.data());
  const auto cache = kv_.layer(l);
  attn_.resize(T * qn);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (const auto& s : plan.seqs) {
    const int32_t* table = plan.block_ids.data() + s.block_offset;
    cpu::write_kv(cache, k_.data() + s.token_offset * kvn, v_.data() + s.token_offset * kvn,
                  positions.data() + s.token_offset, s.num_tokens, table, s.num_blocks);
    cpu::paged_attention(cache, q_.data() + s.token_offset * qn, attn_.data() + s.token_offset * qn,
                         s.num_tokens, shard_.heads, s.start_pos, table, s.num_blocks, scale);
  }
  proj_.resize(T * H);
  cpu::matmul_nt(attn_.data(), w.o.data(), proj_.data(), T, H, qn);
  group_.all_reduce_sum(proj_.data(), T * H);
  cpu::add_rms_norm(residual_.data(), proj_.data(), w.post_norm.data(), normed_.data(), T, H,
                    static_cast<float>(config_.rms_norm_eps));
}

void ModelRunner::mlp_layer(int64_t l) {
  const auto& w = weights_.layers[l];
  const int64_t H = config_.hidden_size, F = shard_.ffn;
  const int64_t T = static_cast<int64_t>(normed_.size()) / H;
  gate_up_.resize(T * 2 * F);
  cpu::matmul_nt(normed_.data(), w.gate_up.data(), gate_up_.data(), T, 2 * F, H);
  act_.resize(T * F);
  cpu::silu_mul(gate_up_.data(), act_.data(), T, F);
  cpu::matmul_nt(act_.data(), w.down.data(), proj_.data(), T, H, F);
  group_.all_reduce_sum(proj_.data(), T * H);
  const bool last = l + 1 == config_.num_hidden_layers;
  const float* next_norm =
      last ? weights_.final_norm.data() : weights_.layers[l + 1].input_norm.data();
  cpu::add_rms_norm(residual_.data(), proj_.data(), next_norm, normed_.data(), T, H,
                    static_cast<float>(config_.rms_norm_eps));
}

StepLogits ModelRunner::lm_head(const messages::StepPlan& plan) {
  const int64_t H = config_.hidden_size;
  std::vector<float> rows;
  for (const auto& s : plan.seqs) {
    const int64_t first = s.token_offset + s.num_tokens - s.num_logits;
    rows.insert(rows.end(), normed_.begin() + first * H,
                normed_.begin() + (first + s.num_logits) * H);
  }
  StepLogits out;
  out.rows = static_cast<int64_t>(rows.size()) / H;
  out.vocab = config_.vocab_size;
  if (out.rows == 0) return out;
  // Vocabulary-parallel head: each rank computes its rows of the vocabulary, padded to the
  // common stride, then one all-gather assembles the full logits.
  const int64_t stride = shard_.vocab_per_rank;
  std::vector<float> local(out.rows * stride, 0.0f);
  std::vector<float> partial(out.rows * shard_.vocab);
  cpu::matmul_nt(rows.data(), weights_.head().data(), partial.data(), out.rows, shard_.vocab, H);
  for (int64_t r = 0; r < out.rows; ++r) {
    std::copy(partial.begin() + r * shard_.vocab, partial.begin() + (r + 1) * shard_.vocab,
              local.begin() + r * stride);
  }
  std::vector<float> gathered(static_cast<std::size_t>(group_.size()) * out.rows * stride);
  group_.all_gather(local.data(), gathered.data(), out.rows * stride);
  out.data.resize(out.rows * out.vocab);
  for (int g = 0; g < group_.size(); ++g) {
    const int64_t begin = g * stride;
    const int64_t count = std::min<int64_t>(stride, out.vocab - begin);
    for (int64_t r = 0; r < out.rows && count > 0; ++r) {
      const float* src = gathered.data() + (g * out.rows + r) * stride;
      std::copy(src, src + count, out.data.begin() + r * out.vocab + begin);
    }
  }
  return out;
}

}  // namespace shardserve::worker
