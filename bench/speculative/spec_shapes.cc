// spec_shapes (GPU only): step costs of speculative decoding at production shapes, measured with
// random weights on the CUDA runner: the Llama-3.1-70B shape as the target, the Llama-3.1-8B
// shape as the draft. Random weights give the step costs (a GEMM costs the same whatever the
// values); the acceptance rate comes from the demo pair (--acceptance, measured by spec_bench).
//
// Neither model is loaded whole: each shape is written as a checkpoint with two layer counts,
// timed, and the costs extrapolated linearly to the full depth (t(L) = t_fixed + L t_layer; the
// fixed part is the embedding, the final norm and the LM head). For each batch size B and K:
//   t_decode      one target step of B sequences x 1 token at context C
//   t_verify(K)   one target step of B sequences x (K + 1) tokens at context C
//   t_draft       one draft step of B sequences x 1 token at context C
// and the predictions for acceptance a:
//   seed   (E + 1) / (1 + K t_draft / t_decode),   E = a + a^2 + ... + a^K
//   cost   (E + 1) t_decode / (K t_draft + t_verify(K))    (the verify's real cost)
// Writes bench/results/speculative-gpu-70b.{json,md} (or --out-json / --out-md).
#include <CLI/CLI.hpp>
#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/counter_rng.h"
#include "common/error.h"
#include "common/half.h"
#include "comm/collective.h"
#include "messages/step_plan.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/safetensors_writer.h"
#include "worker/cuda/cuda_model_runner.h"

namespace shardserve {
namespace {

namespace fs = std::filesystem;

struct Shape {
  std::string name;
  int64_t hidden, ffn, layers, heads, kv_heads, vocab;
};

const Shape kTarget{"Llama-3.1-70B", 8192, 28672, 80, 64, 8, 128256};
const Shape kDraft{"Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256};

// Random bf16 values in [-scale, scale) (norm weights: 1 + small noise), from a counter hash.
model::TensorData random_tensor(std::vector<int64_t> shape, uint64_t seed, float scale,
                                float offset) {
  model::TensorData t;
  t.dtype = model::DType::kBF16;
  int64_t n = 1;
  for (auto d : shape) n *= d;
  t.shape = std::move(shape);
  t.bytes.resize(n * 2);
  auto* out = reinterpret_cast<uint16_t*>(t.bytes.data());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t h = splitmix64(seed * 0x9e3779b97f4a7c15ull + i);
    const float u = static_cast<float>(h >> 40) * 0x1.0p-24f;  // [0, 1)
    out[i] = float_to_bf16(offset + scale * (2 * u - 1));
  }
  return t;
}

fs::path write_shape(const Shape& s, int64_t layers, const fs::path& root) {
  const fs::path dir = root / (s.name + "-" + std::to_string(layers) + "L");
  fs::create_directories(dir);
  const int64_t D = s.hidden / s.heads;
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"vocab_size", s.vocab},
                           {"hidden_size", s.hidden},
                           {"intermediate_size", s.ffn},
                           {"num_hidden_layers", layers},
                           {"num_attention_heads", s.heads},
                           {"num_key_value_heads", s.kv_heads},
                           {"max_position_embeddings", 131072},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", 500000.0},
                           {"rope_scaling",
                            {{"rope_type", "llama3"},
                             {"factor", 8.0},
                             {"low_freq_factor", 1.0},
                             {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 8192}}},
                           {"tie_word_embeddings", false},
                           {"hidden_act", "silu"},
                           {"bos_token_id", 128000},
                           {"eos_token_id", 128001}};
  std::ofstream(dir / "config.json") << config.dump(2);
  std::map<std::string, model::TensorData> t;
  uint64_t seed = 1;
  const float w = 0.02f;
  t["model.embed_tokens.weight"] = random_tensor({s.vocab, s.hidden}, seed++, w, 0);
  t["lm_head.weight"] = random_tensor({s.vocab, s.hidden}, seed++, w, 0);
  t["model.norm.weight"] = random_tensor({s.hidden}, seed++, 0.1f, 1);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t[p + "input_layernorm.weight"] = random_tensor({s.hidden}, seed++, 0.1f, 1);
    t[p + "post_attention_layernorm.weight"] = random_tensor({s.hidden}, seed++, 0.1f, 1);
    t[p + "self_attn.q_proj.weight"] = random_tensor({s.heads * D, s.hidden}, seed++, w, 0);
    t[p + "self_attn.k_proj.weight"] = random_tensor({s.kv_heads * D, s.hidden}, seed++, w, 0);
    t[p + "self_attn.v_proj.weight"] = random_tensor({s.kv_heads * D, s.hidden}, seed++, w, 0);
    t[p + "self_attn.o_proj.weight"] = random_tensor({s.hidden, s.heads * D}, seed++, w, 0);
    t[p + "mlp.gate_proj.weight"] = random_tensor({s.ffn, s.hidden}, seed++, w, 0);
    t[p + "mlp.up_proj.weight"] = random_tensor({s.ffn, s.hidden}, seed++, w, 0);
    t[p + "mlp.down_proj.weight"] = random_tensor({s.hidden, s.ffn}, seed++, w, 0);
  }
  model::write_safetensors(dir / "model.safetensors", t);
  return dir;
}

// B sequences, each `tokens` new tokens at start_pos, every one sampling its last `logits`.
messages::StepPlan make_plan(int batch, int32_t start_pos, int32_t tokens, int32_t logits,
                             int32_t blocks_per_seq, int32_t vocab) {
  messages::StepPlan plan;
  plan.step_id = 1;
  messages::SamplingParams greedy;
  greedy.temperature = 0;
  for (int b = 0; b < batch; ++b) {
    messages::SequenceWork w;
    w.seq_id = b + 1;
    w.start_pos = start_pos;
    w.num_tokens = tokens;
    w.num_logits = logits;
    w.prompt_len = start_pos;
    w.token_offset = plan.total_tokens();
    for (int32_t i = 0; i < tokens; ++i)
      plan.token_ids.push_back(static_cast<int32_t>(splitmix64(b * 7919 + i + start_pos) % vocab));
    w.block_offset = static_cast<int32_t>(plan.block_ids.size());
    w.num_blocks = blocks_per_seq;
    for (int32_t i = 0; i < blocks_per_seq; ++i) plan.block_ids.push_back(b * blocks_per_seq + i);
    if (logits > 0) {
      w.sampling_index = static_cast<int32_t>(plan.sampling.size());
      plan.sampling.push_back(greedy);
    }
    plan.seqs.push_back(w);
  }
  return plan;
}

double time_forward(worker::StepRunner& r, const messages::StepPlan& plan, int iters) {
  for (int i = 0; i < 3; ++i) r.forward(plan);  // warm-up (cuBLASLt heuristics, caches)
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) r.forward(plan);  // forward() returns host logits: synchronous
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

// Step times of one shape at `layers` layers: decode, and verify for each K.
struct Costs {
  std::map<int, double> decode;                 // batch -> s
  std::map<std::pair<int, int>, double> verify;  // (batch, K) -> s
};

Costs measure(const Shape& s, int64_t layers, const fs::path& root, const std::vector<int>& batches,
              const std::vector<int>& ks, int32_t context, int iters, bool verify) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path dir = write_shape(s, layers, root);
  const double written = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int32_t bs = 16;
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int max_k = *std::max_element(ks.begin(), ks.end());
  const int32_t blocks_per_seq = (context + max_k + 1 + bs - 1) / bs;
  comm::SingleRankCollective group;
  const auto config = model::load_model_config(dir);
  worker::cuda::CudaRunnerOptions opt;
  opt.block_size = bs;
  opt.num_kv_blocks = int64_t{blocks_per_seq} * max_batch;
  opt.max_tokens_per_step = std::max<int64_t>(int64_t{max_batch} * (max_k + 1), context);
  opt.max_logits_per_step = int64_t{max_batch} * (max_k + 1);
  Costs c;
  {
    worker::cuda::CudaModelRunner runner(config, worker::make_shard(config, 0, 1),
                                         model::Checkpoint::open(dir), opt, group);
    // Fill every sequence's KV up to the context with a prefill (one sequence per step).
    for (int b = 0; b < max_batch; ++b) {
      auto p = make_plan(1, 0, context, 1, blocks_per_seq, int32_t(s.vocab));
      p.block_ids.clear();
      for (int32_t i = 0; i < blocks_per_seq; ++i) p.block_ids.push_back(b * blocks_per_seq + i);
      runner.forward(p);
    }
    for (int b : batches) {
      c.decode[b] = time_forward(runner, make_plan(b, context, 1, 1, blocks_per_seq, s.vocab), iters);
      if (!verify) continue;
      for (int k : ks)
        c.verify[{b, k}] =
            time_forward(runner, make_plan(b, context, k + 1, k + 1, blocks_per_seq, s.vocab), iters);
    }
  }
  fs::remove_all(dir);
  std::fprintf(stderr, "%s with %lld layers: written in %.1f s; decode B=1 %.3f ms\n",
               s.name.c_str(), static_cast<long long>(layers), written,
               c.decode.begin()->second * 1e3);
  return c;
}

double extrapolate(double at_a, double at_b, int64_t a, int64_t b, int64_t full) {
  const double per_layer = (at_b - at_a) / double(b - a);
  return at_a + per_layer * double(full - a);
}

int run(int argc, char** argv) {
  CLI::App app{"Speculative decoding step costs at the 70B / 8B shapes on the GPU"};
  std::string root = "/tmp/spec_shapes";
  std::string out_json = std::string(SHARDSERVE_SOURCE_DIR) + "/bench/results/speculative-gpu-70b.json";
  std::string out_md = std::string(SHARDSERVE_SOURCE_DIR) + "/bench/results/speculative-gpu-70b.md";
  std::vector<double> acceptances = {0.6};
  std::string acceptance_source = "the demo pair (models/README.md: sum min(p, q) = 0.60 at T = 1)";
  int64_t target_a = 2, target_b = 4, draft_a = 2, draft_b = 4;
  int32_t context = 512;
  int iters = 20;
  std::vector<int> batches = {1, 8, 32};
  std::vector<int> ks = {2, 4, 6};
  app.add_option("--dir", root, "scratch folder for the random checkpoints");
  app.add_option("--acceptance", acceptances, "per-token acceptance rates a to predict for");
  app.add_option("--acceptance-source", acceptance_source);
  app.add_option("--target-layers", target_a)->description("first layer count of the target");
  app.add_option("--target-layers-b", target_b);
  app.add_option("--draft-layers", draft_a);
  app.add_option("--draft-layers-b", draft_b);
  app.add_option("--context", context);
  app.add_option("--iters", iters);
  app.add_option("--batches", batches);
  app.add_option("--ks", ks);
  app.add_option("--out-json", out_json);
  app.add_option("--out-md", out_md);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const Costs ta = measure(kTarget, target_a, root, batches, ks, context, iters, true);
  const Costs tb = measure(kTarget, target_b, root, batches, ks, context, iters, true);
  const Costs da = measure(kDraft, draft_a, root, batches, ks, context, iters, false);
  const Costs db = measure(kDraft, draft_b, root, batches, ks, context, iters, false);

  nlohmann::json rows = nlohmann::json::array();
  std::ostringstream md;
  md << "# Speculative decoding at the 70B / 8B shapes on the GPU\n\n"
     << "Generated by `bench/speculative/spec_shapes` (do not edit by hand; rerun it) on "
     << prop.name << ". Random bf16 weights of the " << kTarget.name << " shape (target) and the "
     << kDraft.name << " shape (draft) through `CudaModelRunner`, one GPU, context " << context
     << " tokens per sequence, " << iters << " timed steps after 3 warm-up steps. Each shape was "
     << "run with " << target_a << " and " << target_b << " (target), " << draft_a << " and "
     << draft_b << " (draft) layers and the step time extrapolated linearly to "
     << kTarget.layers << " and " << kDraft.layers << " layers (neither fits one GPU's memory "
     << "next to the other at full depth in bf16). Acceptance from " << acceptance_source
     << ".\n\n"
     << "- t_decode: a target step of B sequences x 1 token; t_verify(K): B x (K + 1) tokens; "
        "t_draft: a draft step of B x 1 token. c = t_draft / t_decode.\n"
     << "- seed = (E + 1) / (1 + K c), E = a + ... + a^K (the seed's formula, which takes a "
        "verify to cost one decode); cost = (E + 1) t_decode / (K t_draft + t_verify(K)) (the "
        "measured verify cost; host time left out).\n\n"
     << "| B | t_decode ms | t_draft ms | c | K | t_verify ms | t_verify / t_decode | a | seed | "
        "cost |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (int b : batches) {
    const double t_dec = extrapolate(ta.decode.at(b), tb.decode.at(b), target_a, target_b,
                                     kTarget.layers);
    const double t_draft = extrapolate(da.decode.at(b), db.decode.at(b), draft_a, draft_b,
                                       kDraft.layers);
    for (int k : ks) {
      const double t_ver = extrapolate(ta.verify.at({b, k}), tb.verify.at({b, k}), target_a,
                                       target_b, kTarget.layers);
      for (double a : acceptances) {
        double e = 0;
        for (int i = 1; i <= k; ++i) e += std::pow(a, i);
        const double c = t_draft / t_dec;
        const double seed = (e + 1) / (1 + k * c);
        const double cost = (e + 1) * t_dec / (k * t_draft + t_ver);
        rows.push_back({{"batch", b}, {"k", k}, {"acceptance", a}, {"t_decode_s", t_dec},
                        {"t_draft_s", t_draft}, {"t_verify_s", t_ver}, {"c", c},
                        {"seed_formula_speedup", seed}, {"cost_model_speedup", cost}});
        md << fmt::format("| {} | {:.2f} | {:.2f} | {:.3f} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | "
                          "{:.2f} |\n",
                          b, t_dec * 1e3, t_draft * 1e3, c, k, t_ver * 1e3, t_ver / t_dec, a,
                          seed, cost);
      }
    }
  }
  nlohmann::json raw = nlohmann::json::object();
  auto dump = [&](const Costs& c, const std::string& name) {
    for (const auto& [b, t] : c.decode) raw[name]["decode_B" + std::to_string(b)] = t;
    for (const auto& [bk, t] : c.verify)
      raw[name]["verify_B" + std::to_string(bk.first) + "_K" + std::to_string(bk.second)] = t;
  };
  dump(ta, kTarget.name + "-" + std::to_string(target_a) + "L");
  dump(tb, kTarget.name + "-" + std::to_string(target_b) + "L");
  dump(da, kDraft.name + "-" + std::to_string(draft_a) + "L");
  dump(db, kDraft.name + "-" + std::to_string(draft_b) + "L");
  nlohmann::json doc = {{"generated_by", "bench/speculative/spec_shapes"},
                        {"gpu", prop.name},
                        {"context", context},
                        {"iters", iters},
                        {"acceptance_source", acceptance_source},
                        {"rows", rows},
                        {"measured_step_seconds", raw}};
  std::ofstream(out_json) << doc.dump(2) << "\n";
  std::ofstream(out_md) << md.str();
  std::fprintf(stderr, "%s", md.str().c_str());
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  return shardserve::run_reporting_errors("spec_shapes", shardserve::run, argc, argv);
}
