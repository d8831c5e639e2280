#include "tools/quantize/calibration.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rms_norm.h"

namespace shardserve::quantize {
namespace cpu = kernels::cpu;

const char* stage_name(Stage s) {
  switch (s) {
    case Stage::kQkv: return "qkv";
    case Stage::kO: return "o";
    case Stage::kGateUp: return "gate_up";
    case Stage::kDown: return "down";
  }
  return "?";
}

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

CalibrationForward::CalibrationForward(const model::ModelConfig& config,
                                       worker::LlamaWeights& weights, int64_t seq_len)
    : config_(config), w_(weights), seq_len_(seq_len),
      inv_freq_(cpu::rope_inverse_frequencies(rope_params(config))) {
  require(seq_len > 0 && seq_len <= config.max_position_embeddings,
          "calibration: sequence length {} outside [1, {}]", seq_len,
          config.max_position_embeddings);
  require(static_cast<int64_t>(weights.embedding.size()) == config.vocab_size * config.hidden_size,
          "calibration: the weights must be one rank's copy of the whole model");
}

std::vector<float> CalibrationForward::embed(const std::vector<int32_t>& tokens) const {
  const int64_t n = static_cast<int64_t>(tokens.size()), H = config_.hidden_size;
  require(n > 0 && n % seq_len_ == 0, "calibration: {} tokens is not a whole number of {}-token "
          "sequences", n, seq_len_);
  for (int32_t t : tokens) {
    require(t >= 0 && t < config_.vocab_size, "calibration: token id {} outside the vocabulary", t);
  }
  std::vector<float> x(n * H);
  cpu::embedding_lookup(w_.embedding.data(), 0, config_.vocab_size, H, tokens.data(), n, x.data());
  return x;
}

void CalibrationForward::attention(const std::vector<float>& qkv, int64_t n,
                                   std::vector<float>& out) const {
  const int64_t D = config_.head_dim, heads = config_.num_attention_heads,
                kv_heads = config_.num_key_value_heads;
  const int64_t qn = heads * D, kvn = kv_heads * D, width = qn + 2 * kvn, T = seq_len_;
  std::vector<float> q(T * qn), k(T * kvn), v(T * kvn);
  std::vector<int32_t> positions(T);
  for (int64_t t = 0; t < T; ++t) positions[t] = static_cast<int32_t>(t);
  out.resize(n * qn);
  const int32_t table[1] = {0};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (int64_t s = 0; s < n / T; ++s) {
    for (int64_t t = 0; t < T; ++t) {
      const float* row = qkv.data() + (s * T + t) * width;
      std::copy(row, row + qn, q.data() + t * qn);
      std::copy(row + qn, row + qn + kvn, k.data() + t * kvn);
      std::copy(row + qn + kvn, row + width, v.data() + t * kvn);
    }
    cpu::apply_rope(q.data(), positions.data(), T, heads, D, inv_freq_.data());
    cpu::apply_rope(k.data(), positions.data(), T, kv_heads, D, inv_freq_.data());
    // The worker's attention kernel over one "block" holding the whole sequence.
    const cpu::PagedKvView view{k.data(), v.data(), 1, T, kv_heads, D};
    cpu::paged_attention(view, q.data(), out.data() + s * T * qn, T, heads, 0, table, 1, scale);
  }
}

void CalibrationForward::layer(int64_t l, std::vector<float>& x, const StageHook& hook) {
  auto& w = w_.layers.at(l);
  const int64_t H = config_.hidden_size, F = config_.intermediate_size;
  const int64_t n = static_cast<int64_t>(x.size()) / H;
  const int64_t qn = config_.q_size(), width = qn + 2 * config_.kv_size();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  std::vector<float> normed(n * H), qkv, attn, proj(n * H), gate_up, act;

  auto input_norm = [&] { cpu::rms_norm(x.data(), w.input_norm.data(), normed.data(), n, H, eps); };
  auto attend = [&] {
    qkv.resize(n * width);
    cpu::matmul_nt(normed.data(), w.qkv.data(), qkv.data(), n, width, H);
    attention(qkv, n, attn);
  };
  input_norm();
  if (hook(l, Stage::kQkv, normed)) input_norm();
  attend();
  if (hook(l, Stage::kO, attn)) attend();
  cpu::matmul_nt(attn.data(), w.o.data(), proj.data(), n, H, qn);
  for (int64_t k = 0; k < n * H; ++k) x[k] += proj[k];

  auto post_norm = [&] { cpu::rms_norm(x.data(), w.post_norm.data(), normed.data(), n, H, eps); };
  auto mlp_act = [&] {
    gate_up.resize(n * 2 * F);
    cpu::matmul_nt(normed.data(), w.gate_up.data(), gate_up.data(), n, 2 * F, H);
    act.resize(n * F);
    cpu::silu_mul(gate_up.data(), act.data(), n, F);
  };
  post_norm();
  if (hook(l, Stage::kGateUp, normed)) post_norm();
  mlp_act();
  if (hook(l, Stage::kDown, act)) mlp_act();
  cpu::matmul_nt(act.data(), w.down.data(), proj.data(), n, H, F);
  for (int64_t k = 0; k < n * H; ++k) x[k] += proj[k];
}

std::vector<float> CalibrationForward::logits(const std::vector<float>& x) const {
  const int64_t H = config_.hidden_size, n = static_cast<int64_t>(x.size()) / H;
  std::vector<float> normed(n * H), out(n * config_.vocab_size);
  cpu::rms_norm(x.data(), w_.final_norm.data(), normed.data(), n, H,
                static_cast<float>(config_.rms_norm_eps));
  cpu::matmul_nt(normed.data(), w_.head().data(), out.data(), n, config_.vocab_size, H);
  return out;
}

}  // namespace shardserve::quantize
