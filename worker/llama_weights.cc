#include "worker/llama_weights.h"

#include <cstring>
#include <string>

#include "common/error.h"
#include "common/half.h"

namespace shardserve::worker {
namespace {

using model::DType;
using model::TensorView;

float element(const TensorView& t, int64_t index) {
  const std::byte* p = t.data.data();
  uint16_t h;
  switch (t.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p + index * 4, 4);
      return f;
    }
    case DType::kBF16:
      std::memcpy(&h, p + index * 2, 2);
      return bf16_to_float(h);
    case DType::kF16:
      std::memcpy(&h, p + index * 2, 2);
      return fp16_to_float(h);
    default:
      fail("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16", t.file, t.name,
           model::dtype_name(t.dtype));
  }
}

// Appends rows [row_begin, row_begin + rows) x columns [col_begin, col_begin + cols) of a 2-D
// tensor, as float32, to `out`.
void append_block(const TensorView& t, int64_t row_begin, int64_t rows, int64_t col_begin,
                  int64_t cols, std::vector<float>& out) {
  const int64_t width = t.shape[1];
  out.reserve(out.size() + rows * cols);
  for (int64_t r = row_begin; r < row_begin + rows; ++r) {
    for (int64_t c = col_begin; c < col_begin + cols; ++c) out.push_back(element(t, r * width + c));
  }
}

class Loader {
 public:
  explicit Loader(const model::Checkpoint& ckpt) : ckpt_(ckpt) {}

  const TensorView& get(const std::string& name, std::vector<int64_t> shape) const {
    const TensorView& t = ckpt_.tensor(name);
    t.expect_shape(shape);
    if (t.dtype != DType::kF32 && t.dtype != DType::kBF16 && t.dtype != DType::kF16) {
      fail("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16", t.file, t.name,
           model::dtype_name(t.dtype));
    }
    return t;
  }

  std::vector<float> vector(const std::string& name, int64_t n) const {
    const TensorView& t = get(name, {n});
    std::vector<float> out(n);
    for (int64_t i = 0; i < n; ++i) out[i] = element(t, i);
    return out;
  }

 private:
  const model::Checkpoint& ckpt_;
};

}  // namespace

LlamaWeights load_llama_weights(const model::Checkpoint& ckpt, const model::ModelConfig& c,
                                const TensorParallelShard& s) {
  Loader load(ckpt);
  const int64_t H = c.hidden_size, D = c.head_dim;
  LlamaWeights w;
  const auto& embed = load.get("model.embed_tokens.weight", {c.vocab_size, H});
  append_block(embed, s.vocab_begin, s.vocab, 0, H, w.embedding);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights lw;
    lw.input_norm = load.vector(p + "input_layernorm.weight", H);
    lw.post_norm = load.vector(p + "post_attention_layernorm.weight", H);
    const auto& q = load.get(p + "self_attn.q_proj.weight", {c.q_size(), H});
    const auto& k = load.get(p + "self_attn.k_proj.weight", {c.kv_size(), H});
    const auto& v = load.get(p + "self_attn.v_proj.weight", {c.kv_size(), H});
    append_block(q, s.head_begin * D, s.heads * D, 0, H, lw.qkv);
    append_block(k, s.kv_head_begin * D, s.kv_heads * D, 0, H, lw.qkv);
    append_block(v, s.kv_head_begin * D, s.kv_heads * D, 0, H, lw.qkv);
    const auto& o = load.get(p + "self_attn.o_proj.weight", {H, c.q_size()});
    append_block(o, 0, H, s.head_begin * D, s.heads * D, lw.o);
    const auto& gate = load.get(p + "mlp.gate_proj.weight", {c.intermediate_size, H});
    const auto& up = load.get(p + "mlp.up_proj.weight", {c.intermediate_size, H});
    append_block(gate, s.ffn_begin, s.ffn, 0, H, lw.gate_up);
    append_block(up, s.ffn_begin, s.ffn, 0, H, lw.gate_up);
    const auto& down = load.get(p + "mlp.down_proj.weight", {H, c.intermediate_size});
    append_block(down, 0, H, s.ffn_begin, s.ffn, lw.down);
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = load.vector("model.norm.weight", H);
  if (c.tie_word_embeddings) {
    w.lm_head = w.embedding;  // transformers ignores a stored lm_head.weight when tied
  } else {
    const auto& head = load.get("lm_head.weight", {c.vocab_size, H});
    append_block(head, s.vocab_begin, s.vocab, 0, H, w.lm_head);
  }
  return w;
}

}  // namespace shardserve::worker
