#include "worker/cuda/device_weights.h"

#include <cstring>
#include <string>

#include "common/error.h"
#include "common/half.h"
#include "kernels/cuda/cuda_check.h"

namespace shardserve::worker::cuda {
namespace {

using model::DType;
using model::TensorView;

constexpr std::size_t kAlign = 256;
std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// The tensor, after checking its shape and that it is a float type.
const TensorView& get(const model::Checkpoint& ckpt, const std::string& name,
                      const std::vector<int64_t>& shape) {
  const TensorView& t = ckpt.tensor(name);
  t.expect_shape(shape);
  if (t.dtype != DType::kF32 && t.dtype != DType::kBF16 && t.dtype != DType::kF16) {
    fail("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16", t.file, t.name,
         model::dtype_name(t.dtype));
  }
  return t;
}

float element(const TensorView& t, int64_t i) {
  uint16_t h;
  switch (t.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, t.data.data() + i * 4, 4);
      return f;
    }
    case DType::kBF16:
      std::memcpy(&h, t.data.data() + i * 2, 2);
      return bf16_to_float(h);
    default:
      std::memcpy(&h, t.data.data() + i * 2, 2);
      return fp16_to_float(h);
  }
}

// Sub-allocates the one device buffer and stages host copies; copies in flush().
class Packer {
 public:
  explicit Packer(std::size_t bytes) : host_(bytes) {}

  // Appends rows [r0, r0 + rows) x columns [c0, c0 + cols) of a 2-D tensor as bf16, and
  // continues the same matrix when called again with `continue_matrix` (fused q/k/v, gate/up).
  std::size_t bf16_block(const TensorView& t, int64_t r0, int64_t rows, int64_t c0, int64_t cols,
                         bool continue_matrix = false) {
    if (!continue_matrix) offset_ = align_up(offset_);
    const std::size_t start = offset_;
    const int64_t width = t.shape[1];
    auto* out = reinterpret_cast<uint16_t*>(host_.data() + offset_);
    require(offset_ + std::size_t(rows * cols) * 2 <= host_.size(),
            "device weights: packing overflow at '{}'", t.name);
    for (int64_t r = 0; r < rows; ++r) {
      if (t.dtype == DType::kBF16) {
        std::memcpy(out + r * cols, t.data.data() + ((r0 + r) * width + c0) * 2, cols * 2);
      } else {
        for (int64_t c = 0; c < cols; ++c) {
          out[r * cols + c] = float_to_bf16(element(t, (r0 + r) * width + c0 + c));
        }
      }
    }
    offset_ += std::size_t(rows * cols) * 2;
    return start;
  }

  std::size_t f32_vector(const TensorView& t, int64_t n) {
    offset_ = align_up(offset_);
    const std::size_t start = offset_;
    require(offset_ + std::size_t(n) * 4 <= host_.size(), "device weights: packing overflow at '{}'",
            t.name);
    auto* out = reinterpret_cast<float*>(host_.data() + offset_);
    for (int64_t i = 0; i < n; ++i) out[i] = element(t, i);
    offset_ += std::size_t(n) * 4;
    return start;
  }

  const std::vector<std::byte>& host() const { return host_; }
  std::size_t used() const { return offset_; }

 private:
  std::vector<std::byte> host_;
  std::size_t offset_ = 0;
};

}  // namespace

std::size_t DeviceWeights::required_bytes(const model::ModelConfig& c,
                                          const TensorParallelShard& s) {
  const std::size_t H = c.hidden_size, D = c.head_dim;
  std::size_t n = 0;
  auto mat = [&](std::size_t rows, std::size_t cols) { n = align_up(n) + rows * cols * 2; };
  auto vec = [&](std::size_t len) { n = align_up(n) + len * 4; };
  mat(s.vocab, H);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    vec(H);
    vec(H);
    mat((s.heads + 2 * s.kv_heads) * D, H);
    mat(H, s.heads * D);
    mat(2 * s.ffn, H);
    mat(H, s.ffn);
  }
  vec(H);
  if (!c.tie_word_embeddings) mat(s.vocab, H);
  return align_up(n);
}

DeviceWeights::DeviceWeights(const model::Checkpoint& ckpt, const model::ModelConfig& c,
                             const TensorParallelShard& s) {
  const std::size_t bytes = required_bytes(c, s);
  // Fail before reading anything when the weights cannot fit.
  const auto mem = kernels::cuda::device_memory_info();
  require(bytes <= mem.free_bytes,
          "out of device memory: the weights of {} (rank {} of {}) need {} but only {} of {} is "
          "free", ckpt.source().string(), s.rank, s.size, kernels::cuda::format_bytes(bytes),
          kernels::cuda::format_bytes(mem.free_bytes), kernels::cuda::format_bytes(mem.total_bytes));
  storage_ = kernels::cuda::DeviceBuffer(bytes, "model weights");
  const int64_t H = c.hidden_size, D = c.head_dim;
  Packer pack(bytes);
  const std::size_t embed_off =
      pack.bf16_block(get(ckpt, "model.embed_tokens.weight", {c.vocab_size, H}), s.vocab_begin,
                      s.vocab, 0, H);
  struct Offsets { std::size_t in, post, qkv, o, gate_up, down; };
  std::vector<Offsets> offs;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Offsets o{};
    o.in = pack.f32_vector(get(ckpt, p + "input_layernorm.weight", {H}), H);
    o.post = pack.f32_vector(get(ckpt, p + "post_attention_layernorm.weight", {H}), H);
    o.qkv = pack.bf16_block(get(ckpt, p + "self_attn.q_proj.weight", {c.q_size(), H}),
                            s.head_begin * D, s.heads * D, 0, H);
    pack.bf16_block(get(ckpt, p + "self_attn.k_proj.weight", {c.kv_size(), H}),
                    s.kv_head_begin * D, s.kv_heads * D, 0, H, true);
    pack.bf16_block(get(ckpt, p + "self_attn.v_proj.weight", {c.kv_size(), H}),
                    s.kv_head_begin * D, s.kv_heads * D, 0, H, true);
    o.o = pack.bf16_block(get(ckpt, p + "self_attn.o_proj.weight", {H, c.q_size()}), 0, H,
                          s.head_begin * D, s.heads * D);
    o.gate_up = pack.bf16_block(get(ckpt, p + "mlp.gate_proj.weight", {c.intermediate_size, H}),
                                s.ffn_begin, s.ffn, 0, H);
    pack.bf16_block(get(ckpt, p + "mlp.up_proj.weight", {c.intermediate_size, H}), s.ffn_begin,
                    s.ffn, 0, H, true);
    o.down = pack.bf16_block(get(ckpt, p + "mlp.down_proj.weight", {H, c.intermediate_size}), 0,
                             H, s.ffn_begin, s.ffn);
    offs.push_back(o);
  }
  const std::size_t norm_off = pack.f32_vector(get(ckpt, "model.norm.weight", {H}), H);
  std::size_t head_off = embed_off;  // tied: transformers ignores a stored lm_head.weight
  if (!c.tie_word_embeddings) {
    head_off = pack.bf16_block(get(ckpt, "lm_head.weight", {c.vocab_size, H}), s.vocab_begin,
                               s.vocab, 0, H);
  }
  kernels::cuda::copy_to_device(storage_.data(), pack.host().data(), pack.used());
  auto* base = static_cast<std::byte*>(storage_.data());
  auto as_bf16 = [&](std::size_t off) { return reinterpret_cast<const bf16*>(base + off); };
  auto as_f32 = [&](std::size_t off) { return reinterpret_cast<const float*>(base + off); };
  embedding_ = as_bf16(embed_off);
  lm_head_ = as_bf16(head_off);
  final_norm_ = as_f32(norm_off);
  for (const auto& o : offs) {
    layers_.push_back({as_f32(o.in), as_f32(o.post), as_bf16(o.qkv), as_bf16(o.o),
                       as_bf16(o.gate_up), as_bf16(o.down)});
  }
}

}  // namespace shardserve::worker::cuda
