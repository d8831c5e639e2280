#pragma once
// The calibration forward pass of the quantizer: the model over S sequences of T tokens at
// once, dense causal attention, layer by layer, with a hook that sees the input of each group of
// linears (q/k/v, o, gate/up, down) before it is used and may change the layer's weights.
//
// Why not worker::ModelRunner: GPTQ and AWQ need (a) every linear's input activations, (b) to
// change a layer's weights between its stages (GPTQ quantizes q/k/v before o's inputs are
// computed - "true sequential"; AWQ folds scales into the norms) and (c) the residual stream
// between layers. ModelRunner exposes none of these (and pages its KV cache, which calibration
// does not need). This file replays the same layer loop with the same CPU kernels
// (rms_norm, apply_rope, matmul_nt, silu_mul) on the same fused LlamaWeights; a test checks that
// its logits equal ModelRunner's.
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/cpu/rope.h"
#include "model/model_config.h"
#include "worker/llama_weights.h"

namespace shardserve::quantize {

enum class Stage { kQkv, kO, kGateUp, kDown };
const char* stage_name(Stage stage);  // "qkv", "o", "gate_up", "down"

// Called with the layer, the stage and the stage's input [tokens, in_features]; returns true
// when it changed weights that the input depends on (a norm weight, v_proj, up_proj), so the
// input must be recomputed before the stage's matmul.
using StageHook = std::function<bool(int64_t layer, Stage stage, const std::vector<float>& input)>;

class CalibrationForward {
 public:
  // `weights`: one rank holding everything (make_shard(config, 0, 1)); kept by reference, so the
  // hook may change it. Sequences are `seq_len` tokens each, at positions 0 .. seq_len - 1.
  CalibrationForward(const model::ModelConfig& config, worker::LlamaWeights& weights,
                     int64_t seq_len);

  // The residual stream entering layer 0: [tokens, hidden]; tokens.size() % seq_len == 0.
  std::vector<float> embed(const std::vector<int32_t>& tokens) const;
  // Runs layer `layer` on the residual stream in place.
  void layer(int64_t layer, std::vector<float>& residual, const StageHook& hook);
  // Final norm and LM head: logits [tokens, vocab].
  std::vector<float> logits(const std::vector<float>& residual) const;

 private:
  void attention(const std::vector<float>& qkv, int64_t tokens, std::vector<float>& out) const;

  const model::ModelConfig& config_;
  worker::LlamaWeights& w_;
  int64_t seq_len_;
  std::vector<float> inv_freq_;
};

// Rope parameters of a config, as the worker derives them.
kernels::cpu::RopeParams rope_params(const model::ModelConfig& config);

}  // namespace shardserve::quantize
