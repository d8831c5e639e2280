#include "worker/llama_weights.h"

#include <cstring>
#include <string>

#include "common/error.h"
#include "common/half.h"
#include "model/quant/quantized_checkpoint.h"

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

// Rows x columns of the linear `prefix` ([out, in] as nn.Linear stores it), as float32: read from
// `<prefix>.weight`, or dequantized from the GPTQ / AWQ tensors of a quantized checkpoint.
void append_linear(const model::Checkpoint& ckpt, const model::ModelConfig& c, const Loader& load,
                   const std::string& prefix, int64_t out, int64_t in, int64_t row_begin,
                   int64_t rows, int64_t col_begin, int64_t cols, std::vector<float>& dst) {
  if (c.quantization && quant::is_quantized_linear(ckpt, *c.quantization, prefix)) {
    quant::QuantizedLinearView(ckpt, *c.quantization, prefix, out, in)
        .append_block(row_begin, rows, col_begin, cols, dst);
    return;
  }
  append_block(load.get(prefix + ".weight", {out, in}), row_begin, rows, col_begin, cols, dst);
}

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
    const int64_t F = c.intermediate_size;
    auto linear = [&](const char* name, int64_t out, int64_t in, int64_t row_begin, int64_t rows,
                      int64_t col_begin, int64_t cols, std::vector<float>& dst) {
      append_linear(ckpt, c, load, p + name, out, in, row_begin, rows, col_begin, cols, dst);
    };
    linear("self_attn.q_proj", c.q_size(), H, s.head_begin * D, s.heads * D, 0, H, lw.qkv);
    linear("self_attn.k_proj", c.kv_size(), H, s.kv_head_begin * D, s.kv_heads * D, 0, H, lw.qkv);
    linear("self_attn.v_proj", c.kv_size(), H, s.kv_head_begin * D, s.kv_heads * D, 0, H, lw.qkv);
    linear("self_attn.o_proj", H, c.q_size(), 0, H, s.head_begin * D, s.heads * D, lw.o);
    linear("mlp.gate_proj", F, H, s.ffn_begin, s.ffn, 0, H, lw.gate_up);
    linear("mlp.up_proj", F, H, s.ffn_begin, s.ffn, 0, H, lw.gate_up);
    linear("mlp.down_proj", H, F, 0, H, s.ffn_begin, s.ffn, lw.down);
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = load.vector("model.norm.weight", H);
  // Tied: lm_head stays empty and head() serves the embedding (transformers ignores a stored
  // lm_head.weight when tied).
  if (!c.tie_word_embeddings) {
    const auto& head = load.get("lm_head.weight", {c.vocab_size, H});
    append_block(head, s.vocab_begin, s.vocab, 0, H, w.lm_head);
  }
  return w;
}

}  // namespace shardserve::worker
