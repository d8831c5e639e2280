#include "worker/cuda/device_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/half.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/quant_layout.h"
#include "model/quant/quantized_checkpoint.h"

namespace shardserve::worker::cuda {
namespace {

namespace kc = kernels::cuda;
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

// Host staging of the one device allocation: appends aligned pieces and remembers offsets; the
// pointers are made once the allocation exists.
class Packer {
 public:
  std::size_t begin(std::size_t bytes) {
    const std::size_t start = align_up(host_.size());
    host_.resize(start + bytes);
    return start;
  }
  std::byte* at(std::size_t offset) { return host_.data() + offset; }
  // Rows [r0, r0 + rows) x columns [c0, c0 + cols) of a 2-D float tensor as bf16, appended to
  // the matrix being built (the caller reserves the whole matrix with begin()).
  void bf16_block(std::size_t& cursor, const TensorView& t, int64_t r0, int64_t rows, int64_t c0,
                  int64_t cols) {
    const int64_t width = t.shape[1];
    auto* out = reinterpret_cast<uint16_t*>(at(cursor));
    for (int64_t r = 0; r < rows; ++r) {
      if (t.dtype == DType::kBF16) {
        std::memcpy(out + r * cols, t.data.data() + ((r0 + r) * width + c0) * 2, cols * 2);
      } else {
        for (int64_t c = 0; c < cols; ++c) {
          out[r * cols + c] = float_to_bf16(element(t, (r0 + r) * width + c0 + c));
        }
      }
    }
    cursor += std::size_t(rows * cols) * 2;
  }
  std::size_t f32_vector(const TensorView& t, int64_t n) {
    const std::size_t start = begin(std::size_t(n) * 4);
    auto* out = reinterpret_cast<float*>(at(start));
    for (int64_t i = 0; i < n; ++i) out[i] = element(t, i);
    return start;
  }
  std::size_t raw(const void* data, std::size_t bytes) {
    const std::size_t start = begin(bytes);
    if (bytes > 0) std::memcpy(at(start), data, bytes);
    return start;
  }
  std::size_t size() const { return align_up(host_.size()); }
  const std::byte* data() const { return host_.data(); }

 private:
  std::vector<std::byte> host_;
};


// One checkpoint linear's part of a fused projection: rows [r0, r0 + rows) (outputs) x
// columns [c0, c0 + cols) (inputs) of `prefix` ([out, in]).
struct Part {
  std::string prefix;
  int64_t out, in, r0, rows, c0, cols;
};

// The rank's slice of a quantized linear in the CPU kernel's layout. Groups are renumbered to
// those the slice touches (in order), so a row-parallel slice of a g128 linear has its own
// uniform groups; make_quant_matrix sorts act-order columns by group.
kernels::cpu::QuantMatrix quant_slice(const quant::QuantizedLinearView& v, const Part& p) {
  std::vector<int32_t> touched(p.cols);
  for (int64_t j = 0; j < p.cols; ++j) touched[j] = v.group_of(p.c0 + j);
  std::vector<int32_t> groups = touched;
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  const int64_t G = static_cast<int64_t>(groups.size());
  std::vector<int32_t> g_idx(p.cols);
  for (int64_t j = 0; j < p.cols; ++j) {
    g_idx[j] = static_cast<int32_t>(std::lower_bound(groups.begin(), groups.end(), touched[j]) -
                                    groups.begin());
  }
  std::vector<uint8_t> q(p.rows * p.cols);
  for (int64_t o = 0; o < p.rows; ++o)
    for (int64_t j = 0; j < p.cols; ++j)
      q[o * p.cols + j] = static_cast<uint8_t>(v.code(p.r0 + o, p.c0 + j));
  std::vector<int32_t> zeros(G * p.rows);
  std::vector<float> scales(G * p.rows);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t o = 0; o < p.rows; ++o) {
      zeros[g * p.rows + o] = v.zero(groups[g], p.r0 + o);
      scales[g * p.rows + o] = v.scale(groups[g], p.r0 + o);
    }
  return kernels::cpu::make_quant_matrix(v.bits(), p.rows, p.cols, q.data(), zeros.data(),
                                         scales.data(), g_idx.data(), G);
}

class Builder {
 public:
  Builder(const model::Checkpoint& ckpt, const model::ModelConfig& c, Packer& pack,
          std::vector<std::string>& fallbacks)
      : ckpt_(ckpt), c_(c), pack_(pack), fallbacks_(fallbacks) {}

  // A fused projection from its parts: 4-bit when every part is quantized and the parts share
  // one W4-compatible column layout, else dense bf16.
  LinearOffsets linear(const std::vector<Part>& parts) {
    std::string why;
    if (const auto w4 = try_w4(parts, why)) return *w4;
    if (!why.empty()) {
      std::string names;
      for (const Part& p : parts) names += (names.empty() ? "" : "+") + p.prefix;
      fallbacks_.push_back(names + ": " + why);
    }
    LinearOffsets out;
    out.n = 0;
    for (const Part& p : parts) out.n += p.rows;
    out.k = parts.front().cols;
    out.dense = pack_.begin(std::size_t(out.n * out.k) * 2);
    std::size_t cursor = out.dense;
    for (const Part& p : parts) {
      if (quantized(p.prefix)) {
        std::vector<float> f;
        quant::QuantizedLinearView(ckpt_, *c_.quantization, p.prefix, p.out, p.in)
            .append_block(p.r0, p.rows, p.c0, p.cols, f);
        auto* dst = reinterpret_cast<uint16_t*>(pack_.at(cursor));
        for (std::size_t i = 0; i < f.size(); ++i) dst[i] = float_to_bf16(f[i]);
        cursor += f.size() * 2;
      } else {
        pack_.bf16_block(cursor, get(ckpt_, p.prefix + ".weight", {p.out, p.in}), p.r0, p.rows,
                         p.c0, p.cols);
      }
    }
    return out;
  }

 private:
  bool quantized(const std::string& prefix) const {
    return c_.quantization && quant::is_quantized_linear(ckpt_, *c_.quantization, prefix);
  }

  std::optional<LinearOffsets> try_w4(const std::vector<Part>& parts, std::string& why) {
    for (const Part& p : parts) {
      if (!quantized(p.prefix)) {
        // Plain weights (not a quantized checkpoint, or modules_to_not_convert): dense, and not
        // a fallback unless some other part is quantized.
        for (const Part& q : parts)
          if (quantized(q.prefix)) why = p.prefix + " is not quantized but its fused parts are";
        return std::nullopt;
      }
    }
    std::vector<kernels::cpu::QuantMatrix> slices;
    for (const Part& p : parts) {
      slices.push_back(quant_slice(
          quant::QuantizedLinearView(ckpt_, *c_.quantization, p.prefix, p.out, p.in), p));
    }
    const auto& first = slices.front();
    for (const auto& s : slices) {
      if (s.perm != first.perm || s.group_begin != first.group_begin) {
        why = "the fused parts have different column orders or groups (act-order g_idx)";
        return std::nullopt;
      }
    }
    if (const auto problem = kc::w4_layout_problem(first.bits, first.k, first.group_begin.data(),
                                                   first.groups())) {
      why = *problem;
      return std::nullopt;
    }
    // Concatenate the parts' rows (codes [n, k/2], scales / zeros [n, groups]).
    kernels::cpu::QuantMatrix fused = first;
    for (std::size_t i = 1; i < slices.size(); ++i) {
      fused.n += slices[i].n;
      fused.codes.insert(fused.codes.end(), slices[i].codes.begin(), slices[i].codes.end());
      fused.scales.insert(fused.scales.end(), slices[i].scales.begin(), slices[i].scales.end());
      fused.zeros.insert(fused.zeros.end(), slices[i].zeros.begin(), slices[i].zeros.end());
    }
    const kc::W4HostLayout l =
        kc::make_w4_layout(fused.n, fused.k, fused.codes.data(), fused.scales.data(),
                           fused.zeros.data(), fused.perm.data(), fused.group_begin.data(),
                           fused.groups());
    LinearOffsets out;
    out.w4 = true;
    out.n = l.n;
    out.k = l.k;
    out.group_size = l.group_size;
    out.codes = pack_.raw(l.codes.data(), l.codes.size());
    out.meta = pack_.raw(l.meta.data(), l.meta.size() * 4);
    out.has_perm = !l.perm.empty();
    if (out.has_perm) out.perm = pack_.raw(l.perm.data(), l.perm.size() * 4);
    return out;
  }

  const model::Checkpoint& ckpt_;
  const model::ModelConfig& c_;
  Packer& pack_;
  std::vector<std::string>& fallbacks_;
};

void check_fits(std::size_t bytes, const std::string& what, const TensorParallelShard& s) {
  const auto mem = kc::device_memory_info();
  require(bytes <= mem.free_bytes,
          "out of device memory: the weights of {} (rank {} of {}) need {} but only {} of {} is "
          "free", what, s.rank, s.size, kc::format_bytes(bytes), kc::format_bytes(mem.free_bytes),
          kc::format_bytes(mem.total_bytes));
}

}  // namespace

void DeviceWeights::resolve(std::size_t embed_off, std::size_t head_off, std::size_t norm_off,
                            const std::vector<LayerOffsets>& offs) {
  auto* base = static_cast<std::byte*>(storage_.data());
  auto as_bf16 = [&](std::size_t off) { return reinterpret_cast<const bf16*>(base + off); };
  auto as_f32 = [&](std::size_t off) { return reinterpret_cast<const float*>(base + off); };
  auto linear = [&](const LinearOffsets& o) {
    DeviceLinear d;
    if (!o.w4) {
      d.dense = as_bf16(o.dense);
      return d;
    }
    d.w4 = {reinterpret_cast<const uint8_t*>(base + o.codes),
            reinterpret_cast<const uint32_t*>(base + o.meta),
            o.has_perm ? reinterpret_cast<const int32_t*>(base + o.perm) : nullptr, o.n, o.k,
            o.group_size};
    ++num_w4_;
    max_w4_dense_bytes_ = std::max(max_w4_dense_bytes_, std::size_t(o.n * o.k) * 2);
    w4_dense_above_rows_ =
        std::min(w4_dense_above_rows_, kernels::cuda::w4_matmul_max_tiled_rows(o.group_size));
    if (std::find(w4_shapes_.begin(), w4_shapes_.end(), std::pair{o.n, o.k}) == w4_shapes_.end()) {
      w4_shapes_.emplace_back(o.n, o.k);
    }
    return d;
  };
  embedding_ = as_bf16(embed_off);
  lm_head_ = as_bf16(head_off);
  final_norm_ = as_f32(norm_off);
  for (const auto& o : offs) {
    layers_.push_back({as_f32(o.in), as_f32(o.post), linear(o.qkv), linear(o.o),
                       linear(o.gate_up), linear(o.down)});
  }
}

std::size_t DeviceWeights::max_w4_workspace_bytes(int64_t max_rows) const {
  std::size_t need = 0;
  for (const auto& [n, k] : w4_shapes_) {
    need = std::max(need, kc::w4_matmul_workspace_bytes(max_rows, n, k));
  }
  return need;
}

DeviceWeights::DeviceWeights(const model::Checkpoint& ckpt, const model::ModelConfig& c,
                             const TensorParallelShard& s) {
  const int64_t H = c.hidden_size, D = c.head_dim, F = c.intermediate_size;
  Packer pack;
  Builder build(ckpt, c, pack, fallbacks_);
  const auto& embed = get(ckpt, "model.embed_tokens.weight", {c.vocab_size, H});
  const std::size_t embed_off = pack.begin(std::size_t(s.vocab * H) * 2);
  std::size_t cursor = embed_off;
  pack.bf16_block(cursor, embed, s.vocab_begin, s.vocab, 0, H);
  std::vector<LayerOffsets> offs;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerOffsets o{};
    o.in = pack.f32_vector(get(ckpt, p + "input_layernorm.weight", {H}), H);
    o.post = pack.f32_vector(get(ckpt, p + "post_attention_layernorm.weight", {H}), H);
    o.qkv = build.linear({{p + "self_attn.q_proj", c.q_size(), H, s.head_begin * D, s.heads * D, 0, H},
                          {p + "self_attn.k_proj", c.kv_size(), H, s.kv_head_begin * D, s.kv_heads * D, 0, H},
                          {p + "self_attn.v_proj", c.kv_size(), H, s.kv_head_begin * D, s.kv_heads * D, 0, H}});
    o.o = build.linear({{p + "self_attn.o_proj", H, c.q_size(), 0, H, s.head_begin * D, s.heads * D}});
    o.gate_up = build.linear({{p + "mlp.gate_proj", F, H, s.ffn_begin, s.ffn, 0, H},
                              {p + "mlp.up_proj", F, H, s.ffn_begin, s.ffn, 0, H}});
    o.down = build.linear({{p + "mlp.down_proj", H, F, 0, H, s.ffn_begin, s.ffn}});
    offs.push_back(o);
  }
  const std::size_t norm_off = pack.f32_vector(get(ckpt, "model.norm.weight", {H}), H);
  std::size_t head_off = embed_off;  // tied: transformers ignores a stored lm_head.weight
  if (!c.tie_word_embeddings) {
    head_off = pack.begin(std::size_t(s.vocab * H) * 2);
    cursor = head_off;
    pack.bf16_block(cursor, get(ckpt, "lm_head.weight", {c.vocab_size, H}), s.vocab_begin,
                    s.vocab, 0, H);
  }
  check_fits(pack.size(), ckpt.source().string(), s);
  storage_ = kc::DeviceBuffer(pack.size(), "model weights");
  kc::copy_to_device(storage_.data(), pack.data(), pack.size());
  resolve(embed_off, head_off, norm_off, offs);
}

DeviceWeights::DeviceWeights(const model::ModelConfig& c, const TensorParallelShard& s,
                             const RandomWeightsSpec& spec) {
  const int64_t H = c.hidden_size, D = c.head_dim;
  const int64_t gs = spec.group_size;
  require(gs == 0 || (gs % 64 == 0 && H % gs == 0 && (s.heads * D) % gs == 0 && s.ffn % gs == 0),
          "random weights: group size {} must be a multiple of 64 dividing hidden {}, the rank's "
          "attention width {} and FFN width {}", gs, H, s.heads * D, s.ffn);
  // Offsets first (the same order as a checkpoint), then one allocation and device-side fills.
  std::size_t total = 0;
  auto take = [&](std::size_t bytes) {
    const std::size_t start = align_up(total);
    total = start + bytes;
    return start;
  };
  struct Fill { std::size_t off; int64_t count; int kind; };  // 0 bf16, 1 norm, 2 bytes, 3 meta
  std::vector<Fill> fills;
  auto linear = [&](int64_t n, int64_t k) {
    LinearOffsets o;
    o.n = n;
    o.k = k;
    if (gs == 0) {
      o.dense = take(std::size_t(n * k) * 2);
      fills.push_back({o.dense, n * k, 0});
    } else {
      o.w4 = true;
      o.group_size = gs;
      const int64_t np = kc::w4_padded_rows(n);
      o.codes = take(std::size_t(np * k) / 2);
      fills.push_back({o.codes, np * k / 2, 2});
      o.meta = take(std::size_t(np * (k / gs)) * 4);
      fills.push_back({o.meta, np * (k / gs), 3});
    }
    return o;
  };
  auto norm = [&] {
    const std::size_t off = take(std::size_t(H) * 4);
    fills.push_back({off, H, 1});
    return off;
  };
  const std::size_t embed_off = take(std::size_t(s.vocab * H) * 2);
  fills.push_back({embed_off, s.vocab * H, 0});
  std::vector<LayerOffsets> offs;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerOffsets o{};
    o.in = norm();
    o.post = norm();
    o.qkv = linear((s.heads + 2 * s.kv_heads) * D, H);
    o.o = linear(H, s.heads * D);
    o.gate_up = linear(2 * s.ffn, H);
    o.down = linear(H, s.ffn);
    offs.push_back(o);
  }
  const std::size_t norm_off = norm();
  std::size_t head_off = embed_off;
  if (!c.tie_word_embeddings) {
    head_off = take(std::size_t(s.vocab * H) * 2);
    fills.push_back({head_off, s.vocab * H, 0});
  }
  total = align_up(total);
  check_fits(total, "random weights", s);
  storage_ = kc::DeviceBuffer(total, "model weights (random)");
  auto* base = static_cast<std::byte*>(storage_.data());
  uint64_t seed = spec.seed << 32;
  // Scales keep activations O(1): a weight ~ scale * 8 over k inputs.
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(H));
  for (const Fill& f : fills) {
    seed += uint64_t{1} << 40;
    switch (f.kind) {
      case 0: kc::fill_random_bf16(reinterpret_cast<bf16*>(base + f.off), f.count, w_scale, 0, seed, nullptr); break;
      case 1: kc::fill_random_f32(reinterpret_cast<float*>(base + f.off), f.count, 0.05f, 1.0f, seed, nullptr); break;
      case 2: kc::fill_random_bytes(base + f.off, std::size_t(f.count), seed, nullptr); break;
      default: kc::fill_random_w4_meta(reinterpret_cast<uint32_t*>(base + f.off), f.count, w_scale / 8, seed, nullptr); break;
    }
  }
  SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  resolve(embed_off, head_off, norm_off, offs);
}

}  // namespace shardserve::worker::cuda
