// Model and GPU presets, model files, and the benchmark JSON reader.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/memory_plan.h"
#include "tools/plan/benchmark_result.h"
#include "tools/plan/gpu_spec.h"
#include "tools/plan/model_presets.h"

namespace shardserve::planner {
namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelPresets, EveryPresetParses) {
  for (const std::string& name : model_preset_names()) {
    EXPECT_NO_THROW(load_model_spec(name)) << name;
  }
  EXPECT_EQ(model_preset_names().size(), 6u);
}

TEST(ModelPresets, ShapesMatchThePublishedConfigs) {
  struct Expected {
    const char* name;
    int64_t layers, hidden, mlp, heads, kv_heads, vocab, max_pos;
  };
  const Expected expected[] = {
      {"llama-2-7b", 32, 4096, 11008, 32, 32, 32000, 4096},
      {"llama-2-13b", 40, 5120, 13824, 40, 40, 32000, 4096},
      {"llama-2-70b", 80, 8192, 28672, 64, 8, 32000, 4096},
      {"llama-3.1-8b", 32, 4096, 14336, 32, 8, 128256, 131072},
      {"llama-3.1-70b", 80, 8192, 28672, 64, 8, 128256, 131072},
      {"llama-3.1-405b", 126, 16384, 53248, 128, 8, 128256, 131072},
  };
  for (const Expected& e : expected) {
    const model::ModelConfig c = load_model_spec(e.name).config;
    EXPECT_EQ(c.num_hidden_layers, e.layers) << e.name;
    EXPECT_EQ(c.hidden_size, e.hidden) << e.name;
    EXPECT_EQ(c.intermediate_size, e.mlp) << e.name;
    EXPECT_EQ(c.num_attention_heads, e.heads) << e.name;
    EXPECT_EQ(c.num_key_value_heads, e.kv_heads) << e.name;
    EXPECT_EQ(c.vocab_size, e.vocab) << e.name;
    EXPECT_EQ(c.max_position_embeddings, e.max_pos) << e.name;
    EXPECT_EQ(c.head_dim, 128) << e.name;
    EXPECT_FALSE(c.tie_word_embeddings) << e.name;
  }
  EXPECT_EQ(load_model_spec("llama-3.1-8b").config.rope_scaling.type,
            model::RopeScaling::Type::kLlama3);
}

TEST(ModelPresets, NamesAreCaseInsensitive) {
  EXPECT_EQ(load_model_spec("Llama-3.1-70B").name, "meta-llama/Llama-3.1-70B");
}

TEST(ModelPresets, UnknownNameListsThePresets) {
  const std::string message = error_of([] { load_model_spec("llama-4-9000b"); });
  EXPECT_NE(message.find("llama-4-9000b"), std::string::npos) << message;
  EXPECT_NE(message.find("llama-3.1-405b"), std::string::npos) << message;
}

TEST(ModelPresets, ReadsADirectoryOrAFile) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "planner_model_dir";
  std::filesystem::create_directories(dir);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"vocab_size", 1000},
                           {"hidden_size", 256},
                           {"intermediate_size", 512},
                           {"num_hidden_layers", 2},
                           {"num_attention_heads", 4},
                           {"num_key_value_heads", 2},
                           {"quantization_config",
                            {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}}}};
  std::ofstream(dir / "config.json") << config.dump();
  const ModelSpec from_dir = load_model_spec(dir.string());
  EXPECT_EQ(from_dir.config.num_key_value_heads, 2);
  EXPECT_EQ(from_dir.config.head_dim, 64);
  ASSERT_TRUE(from_dir.config.quantization.has_value());
  EXPECT_EQ(model::weight_format_of(*from_dir.config.quantization).name(), "int4-g128");
  EXPECT_EQ(load_model_spec((dir / "config.json").string()).config.vocab_size, 1000);
}

TEST(GpuPresets, DatasheetFigures) {
  const GpuSpec h200 = gpu_preset("H200");
  EXPECT_EQ(h200.memory_bytes, int64_t{141} << 30);
  EXPECT_DOUBLE_EQ(h200.bandwidth_bytes_per_s, 4.8e12);
  EXPECT_DOUBLE_EQ(h200.flops_per_s, 989e12);
  EXPECT_EQ(h200.source, "datasheet");
  EXPECT_DOUBLE_EQ(gpu_preset("h100").bandwidth_bytes_per_s, 3.35e12);
  EXPECT_DOUBLE_EQ(gpu_preset("a100").flops_per_s, 312e12);
  EXPECT_EQ(gpu_preset("l40s").memory_bytes, int64_t{48} << 30);
  EXPECT_DOUBLE_EQ(gpu_preset("l40s").bandwidth_bytes_per_s, 0.864e12);
}

TEST(GpuPresets, MeasuredCeilingsOnlyForTheH200) {
  const GpuSpec m = with_measured_ceilings(gpu_preset("h200"));
  EXPECT_DOUBLE_EQ(m.bandwidth_bytes_per_s, 4.24e12);
  EXPECT_DOUBLE_EQ(m.flops_per_s, 790e12);
  EXPECT_NE(m.source.find("measured"), std::string::npos);
  EXPECT_NE(error_of([] { with_measured_ceilings(gpu_preset("a100")); }).find("A100"),
            std::string::npos);
}

TEST(GpuPresets, UnknownGpuListsThePresets) {
  const std::string message = error_of([] { gpu_preset("b200"); });
  EXPECT_NE(message.find("b200"), std::string::npos) << message;
  EXPECT_NE(message.find("l40s"), std::string::npos) << message;
}

TEST(GpuPresets, ValidationRejectsNonPositiveFigures) {
  GpuSpec s = gpu_preset("h100");
  s.memory_bytes = -1;
  EXPECT_NE(error_of([&] { validate_gpu_spec(s); }).find("-1"), std::string::npos);
  s = gpu_preset("h100");
  s.bandwidth_bytes_per_s = 0;
  EXPECT_THROW(validate_gpu_spec(s), Error);
}

TEST(BenchmarkResult, ReadsTheExample) {
  const BenchmarkResult r =
      load_benchmark_result(std::filesystem::path(SHARDSERVE_SOURCE_DIR) /
                            "tests/planner/data/llama70b-h200-tp1-example.json");
  EXPECT_EQ(r.gpu, "H200");
  EXPECT_EQ(r.tp, 1);
  EXPECT_DOUBLE_EQ(*r.copy_tbps, 4.24);
  EXPECT_DOUBLE_EQ(*r.bf16_tflops, 790.0);
  EXPECT_DOUBLE_EQ(r.decode_ms_per_token.at(8192), 10.5);
  EXPECT_DOUBLE_EQ(r.roofline_ms_per_token.at(2048), 7.99);
  EXPECT_DOUBLE_EQ(r.step_ms_by_batch.at(32), 16.0);
  EXPECT_DOUBLE_EQ(r.prefill_tokens_per_s.at(0), 5000.0);  // a bare number: key 0
  EXPECT_EQ(r.step_context, 2048);
  EXPECT_EQ(r.prefill_prompt_tokens, 2048);
}

TEST(BenchmarkResult, RejectsMalformedInput) {
  using nlohmann::json;
  EXPECT_NE(error_of([] { parse_benchmark_result(json{{"tp", 1}}, "f.json"); }).find("gpu"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_benchmark_result(json{{"gpu", "H200"}}, "f.json"); }).find("tp"),
            std::string::npos);
  const json bad_key = {{"gpu", "H200"}, {"tp", 1}, {"decode_ms_per_token", {{"8k", 1.0}}}};
  EXPECT_NE(error_of([&] { parse_benchmark_result(bad_key, "f.json"); }).find("'8k'"),
            std::string::npos);
  const json negative = {{"gpu", "H200"}, {"tp", 1}, {"step_ms_by_batch", {{"4", -2.0}}}};
  EXPECT_NE(error_of([&] { parse_benchmark_result(negative, "f.json"); }).find("positive"),
            std::string::npos);
  EXPECT_THROW(load_benchmark_result("/nonexistent/bench.json"), Error);
}

}  // namespace
}  // namespace shardserve::planner
