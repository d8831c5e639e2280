#pragma once
// A tiny random LLaMA written to disk as a HuggingFace directory (config.json +
// model.safetensors in bf16), and an independent dense float64 forward pass over the same
// (bf16-rounded) weights: no paging, no fusing, no sharding. The worker's paged, batched,
// chunked, sharded forward must agree with it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "model/safetensors_writer.h"

namespace shardserve::testing_support {

// A directory for `name` under the test temp dir, unique to this process. ctest runs each test
// case as its own process, two at a time, and two cases writing one model directory at once
// read each other's half-written files (seen: "data offsets out of bounds").
inline std::filesystem::path process_temp_dir(const std::string& name) {
  return std::filesystem::path(::testing::TempDir()) / (name + "-" + std::to_string(::getpid()));
}

struct TinyLlama {
  int64_t vocab = 61, hidden = 32, ffn = 48, layers = 2, heads = 4, kv_heads = 2, head_dim = 8;
  double theta = 10000.0, eps = 1e-5;
  // llama3 scaling chosen so the 4 frequencies fall in all three bands (kept, smoothed, scaled).
  double factor = 8.0, low = 1.0, high = 4.0;
  int64_t original_max = 128;
  int64_t max_positions = 256;
  bool tied = false;
  std::map<std::string, std::vector<double>> w;  // bf16-rounded values, row-major
  std::map<std::string, std::vector<int64_t>> shapes;

  void make(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.3f);
    auto add = [&](const std::string& name, std::vector<int64_t> shape, bool norm) {
      int64_t n = 1;
      for (auto d : shape) n *= d;
      std::vector<double> v(n);
      for (auto& x : v) {
        const float f = norm ? 1.0f + 0.2f * normal(rng) : normal(rng);
        x = bf16_to_float(float_to_bf16(f));
      }
      w[name] = v;
      shapes[name] = shape;
    };
    add("model.embed_tokens.weight", {vocab, hidden}, false);
    for (int64_t l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {hidden}, true);
      add(p + "post_attention_layernorm.weight", {hidden}, true);
      add(p + "self_attn.q_proj.weight", {heads * head_dim, hidden}, false);
      add(p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden}, false);
      add(p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden}, false);
      add(p + "self_attn.o_proj.weight", {hidden, heads * head_dim}, false);
      add(p + "mlp.gate_proj.weight", {ffn, hidden}, false);
      add(p + "mlp.up_proj.weight", {ffn, hidden}, false);
      add(p + "mlp.down_proj.weight", {hidden, ffn}, false);
    }
    add("model.norm.weight", {hidden}, true);
    if (!tied) add("lm_head.weight", {vocab, hidden}, false);
  }

  void write(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    nlohmann::json config = {
        {"architectures", {"LlamaForCausalLM"}},
        {"model_type", "llama"},
        {"vocab_size", vocab},
        {"hidden_size", hidden},
        {"intermediate_size", ffn},
        {"num_hidden_layers", layers},
        {"num_attention_heads", heads},
        {"num_key_value_heads", kv_heads},
        {"max_position_embeddings", max_positions},
        {"rms_norm_eps", eps},
        {"rope_theta", theta},
        {"rope_scaling",
         {{"rope_type", "llama3"},
          {"factor", factor},
          {"low_freq_factor", low},
          {"high_freq_factor", high},
          {"original_max_position_embeddings", original_max}}},
        {"tie_word_embeddings", tied},
        {"hidden_act", "silu"},
        {"bos_token_id", 1},
        {"eos_token_id", 2}};
    std::ofstream(dir / "config.json") << config.dump(2);
    std::map<std::string, model::TensorData> tensors;
    for (const auto& [name, values] : w) {
      tensors[name] = model::make_tensor(model::DType::kBF16, shapes.at(name),
                                         std::vector<float>(values.begin(), values.end()));
    }
    model::write_safetensors(dir / "model.safetensors", tensors);
  }

  // Logits [tokens.size(), vocab] for every position of one sequence.
  std::vector<std::vector<double>> dense_logits(const std::vector<int32_t>& tokens) const {
    const int64_t n = static_cast<int64_t>(tokens.size()), H = hidden, D = head_dim;
    auto matvec = [](const std::vector<double>& W, const std::vector<double>& x, int64_t rows) {
      const int64_t cols = static_cast<int64_t>(x.size());
      std::vector<double> y(rows, 0.0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) y[r] += W[r * cols + c] * x[c];
      return y;
    };
    auto norm = [&](const std::vector<double>& x, const std::vector<double>& g) {
      double ss = 0;
      for (double v : x) ss += v * v;
      const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
      std::vector<double> y(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) y[i] = g[i] * x[i] * inv;
      return y;
    };
    std::vector<double> inv_freq(D / 2);
    for (int64_t i = 0; i < D / 2; ++i) {
      double f = 1.0 / std::pow(theta, 2.0 * i / D);
      const double wl = 2 * M_PI / f, low_wl = original_max / low, high_wl = original_max / high;
      if (wl > low_wl) {
        f /= factor;
      } else if (wl >= high_wl) {
        const double s = (original_max / wl - low) / (high - low);
        f = (1 - s) * f / factor + s * f;
      }
      inv_freq[i] = f;
    }
    auto rope = [&](std::vector<double>& v, int64_t nheads, int64_t pos) {
      for (int64_t h = 0; h < nheads; ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          const double a = v[h * D + i], b = v[h * D + i + D / 2];
          const double c = std::cos(pos * inv_freq[i]), s = std::sin(pos * inv_freq[i]);
          v[h * D + i] = a * c - b * s;
          v[h * D + i + D / 2] = b * c + a * s;
        }
    };
    const auto& E = w.at("model.embed_tokens.weight");
    std::vector<std::vector<double>> x(n);
    for (int64_t t = 0; t < n; ++t) x[t].assign(E.begin() + tokens[t] * H, E.begin() + (tokens[t] + 1) * H);
    for (int64_t l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (int64_t t = 0; t < n; ++t) {
        const auto h = norm(x[t], w.at(p + "input_layernorm.weight"));
        q[t] = matvec(w.at(p + "self_attn.q_proj.weight"), h, heads * D);
        k[t] = matvec(w.at(p + "self_attn.k_proj.weight"), h, kv_heads * D);
        v[t] = matvec(w.at(p + "self_attn.v_proj.weight"), h, kv_heads * D);
        rope(q[t], heads, t);
        rope(k[t], kv_heads, t);
      }
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> attn(heads * D, 0.0);
        for (int64_t hq = 0; hq < heads; ++hq) {
          const int64_t g = hq / (heads / kv_heads);
          std::vector<double> s(t + 1);
          double mx = -1e300, den = 0;
          for (int64_t u = 0; u <= t; ++u) {
            double d = 0;
            for (int64_t i = 0; i < D; ++i) d += q[t][hq * D + i] * k[u][g * D + i];
            s[u] = d / std::sqrt(double(D));
            mx = std::max(mx, s[u]);
          }
          for (auto& e : s) den += (e = std::exp(e - mx));
          for (int64_t u = 0; u <= t; ++u)
            for (int64_t i = 0; i < D; ++i) attn[hq * D + i] += s[u] / den * v[u][g * D + i];
        }
        const auto o = matvec(w.at(p + "self_attn.o_proj.weight"), attn, H);
        for (int64_t i = 0; i < H; ++i) x[t][i] += o[i];
        const auto h = norm(x[t], w.at(p + "post_attention_layernorm.weight"));
        const auto gate = matvec(w.at(p + "mlp.gate_proj.weight"), h, ffn);
        const auto up = matvec(w.at(p + "mlp.up_proj.weight"), h, ffn);
        std::vector<double> a(ffn);
        for (int64_t i = 0; i < ffn; ++i) a[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
        const auto down = matvec(w.at(p + "mlp.down_proj.weight"), a, H);
        for (int64_t i = 0; i < H; ++i) x[t][i] += down[i];
      }
    }
    const auto& head = tied ? E : w.at("lm_head.weight");
    std::vector<std::vector<double>> logits(n);
    for (int64_t t = 0; t < n; ++t) logits[t] = matvec(head, norm(x[t], w.at("model.norm.weight")), vocab);
    return logits;
  }
};

}  // namespace shardserve::testing_support
