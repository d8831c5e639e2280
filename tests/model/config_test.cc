#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/model_config.h"

namespace shardserve::model {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json llama3_8b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu",
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})");
}

std::string error_of(const json& j) {
  try {
    parse_model_config(j, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(ModelConfig, ParsesLlama31) {
  const ModelConfig c = parse_model_config(llama3_8b(), "config.json");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.gqa_group(), 4);
  EXPECT_EQ(c.kv_size(), 1024);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.bos_token_id.has_value());
  EXPECT_EQ(*c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
}

TEST(ModelConfig, DefaultsFollowLlamaConfig) {
  json j = json::parse(R"({"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "bos_token_id": 1, "eos_token_id": 2, "rope_scaling": null})");
  const ModelConfig c = parse_model_config(j, "config.json");
  EXPECT_EQ(c.num_key_value_heads, 32);  // MHA when absent
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});
}

TEST(ModelConfig, AcceptsTransformers5RopeParameters) {
  json j = llama3_8b();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j["rope_parameters"] = json::parse(R"({"rope_theta": 250000.0, "rope_type": "llama3",
    "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192})");
  const ModelConfig c = parse_model_config(j, "config.json");
  EXPECT_DOUBLE_EQ(c.rope_theta, 250000.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  j["rope_parameters"] = json::parse(R"({"rope_theta": 10000.0, "rope_type": "default"})");
  EXPECT_EQ(parse_model_config(j, "config.json").rope_scaling.type, RopeScaling::Type::kNone);
}

TEST(ModelConfig, RejectsWhatItCannotRun) {
  json j = llama3_8b();
  j["architectures"] = {"MixtralForCausalLM"};
  EXPECT_THAT(error_of(j), HasSubstr("architecture [\"MixtralForCausalLM\"] is not supported"));
  j = llama3_8b();
  j["rope_scaling"]["rope_type"] = "yarn";
  EXPECT_THAT(error_of(j), HasSubstr("rope_type 'yarn' is not supported"));
  j = llama3_8b();
  j["num_key_value_heads"] = 6;
  EXPECT_THAT(error_of(j), HasSubstr("num_attention_heads (32) must be a multiple of "
                                     "num_key_value_heads (6)"));
  j = llama3_8b();
  j.erase("hidden_size");
  EXPECT_THAT(error_of(j), HasSubstr("required field 'hidden_size' is missing"));
  j = llama3_8b();
  j["vocab_size"] = "128256";
  EXPECT_THAT(error_of(j), HasSubstr("field 'vocab_size' must be an integer"));
  j = llama3_8b();
  j["hidden_act"] = "gelu";
  EXPECT_THAT(error_of(j), HasSubstr("hidden_act 'gelu' is not supported"));
  j = llama3_8b();
  j["attention_bias"] = true;
  EXPECT_THAT(error_of(j), HasSubstr("attention_bias=true is not supported"));
  j = llama3_8b();
  j["eos_token_id"] = 999999;
  EXPECT_THAT(error_of(j), HasSubstr("eos_token_id 999999 is outside the vocabulary"));
  j = llama3_8b();
  j["num_hidden_layers"] = 0;
  EXPECT_THAT(error_of(j), HasSubstr("'num_hidden_layers' must be positive"));
  EXPECT_THAT(error_of(json::array()), HasSubstr("expected a JSON object"));
}

TEST(ModelConfig, LoadMergesGenerationConfigEos) {
  const auto dir = std::filesystem::path(testing::TempDir()) / "config_merge";
  std::filesystem::create_directories(dir);
  json j = llama3_8b();
  j["eos_token_id"] = 128001;
  std::ofstream(dir / "config.json") << j.dump();
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [128001, 128009]})";
  const ModelConfig c = load_model_config(dir);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128009}));
  std::ofstream(dir / "config.json") << "{ not json";
  try {
    load_model_config(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json: invalid JSON"));
  }
  EXPECT_THROW(load_model_config(dir / "missing"), Error);
}

}  // namespace
}  // namespace shardserve::model
