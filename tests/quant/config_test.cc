// quantization_config as AutoGPTQ / GPTQModel / AutoAWQ write it: the supported variants are
// read, every other one is refused with a message naming the field and its value.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/model_config.h"

namespace shardserve::model {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json llama_with(const json& q) {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
          {"vocab_size", 64},   {"hidden_size", 32},
          {"intermediate_size", 64}, {"num_hidden_layers", 1},
          {"num_attention_heads", 4}, {"quantization_config", q}};
}

std::string refusal(const json& q) {
  try {
    parse_model_config(llama_with(q), "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

const json kGptq = {{"quant_method", "gptq"}, {"bits", 4},  {"group_size", 128},
                    {"desc_act", false},      {"sym", true}, {"checkpoint_format", "gptq"}};
const json kAwq = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128},
                   {"zero_point", true},    {"version", "gemm"}};

json with(json base, const char* key, const json& value) {
  base[key] = value;
  return base;
}

TEST(QuantizationConfig, ReadsGptqVariants) {
  const ModelConfig c = parse_model_config(llama_with(kGptq), "config.json");
  ASSERT_TRUE(c.quantization.has_value());
  EXPECT_EQ(c.quantization->method, QuantizationConfig::Method::kGptq);
  EXPECT_EQ(c.quantization->bits, 4);
  EXPECT_EQ(c.quantization->group_size, 128);
  EXPECT_TRUE(c.quantization->zero_minus_one);
  for (int bits : {4, 8})
    for (int group : {32, 64, 128, -1})
      for (bool desc : {false, true})
        for (bool sym : {false, true}) {
          json q = kGptq;
          q["bits"] = bits;
          q["group_size"] = group;
          q["desc_act"] = desc;
          q["sym"] = sym;
          const auto qc = parse_model_config(llama_with(q), "config.json").quantization;
          EXPECT_EQ(qc->bits, bits);
          EXPECT_EQ(qc->group_size, group);
          EXPECT_EQ(qc->desc_act, desc);
        }
  // gptq_v2 (GPTQModel) stores zeros without the -1; newer GPTQModel spells the key "format".
  EXPECT_FALSE(parse_model_config(llama_with(with(kGptq, "checkpoint_format", "gptq_v2")), "c")
                   .quantization->zero_minus_one);
  json v2 = kGptq;
  v2.erase("checkpoint_format");
  v2["format"] = "gptq_v2";
  EXPECT_FALSE(parse_model_config(llama_with(v2), "c").quantization->zero_minus_one);
  json old = kGptq;  // AutoGPTQ before checkpoint_format existed
  old.erase("checkpoint_format");
  EXPECT_TRUE(parse_model_config(llama_with(old), "c").quantization->zero_minus_one);
}

TEST(QuantizationConfig, ReadsAwqGemm) {
  const auto q = parse_model_config(llama_with(kAwq), "config.json").quantization;
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->method, QuantizationConfig::Method::kAwq);
  EXPECT_FALSE(q->zero_minus_one);
  EXPECT_EQ(q->checkpoint_format, "gemm");
  EXPECT_EQ(parse_model_config(llama_with(with(kAwq, "version", "GEMM")), "c")
                .quantization->checkpoint_format,
            "gemm");
  const auto skip =
      parse_model_config(llama_with(with(kAwq, "modules_to_not_convert", {"down_proj"})), "c")
          .quantization;
  EXPECT_EQ(skip->modules_to_not_convert, std::vector<std::string>{"down_proj"});
}

TEST(QuantizationConfig, RefusesBits3) {
  EXPECT_THAT(refusal(with(kGptq, "bits", 3)),
              HasSubstr("config.json: quantization_config.bits 3 is not supported for gptq "
                        "(supported: 4, 8)"));
  EXPECT_THAT(refusal(with(kAwq, "bits", 8)),
              HasSubstr("quantization_config.bits 8 is not supported for awq (supported: 4)"));
}

TEST(QuantizationConfig, RefusesGroupSize48) {
  EXPECT_THAT(refusal(with(kGptq, "group_size", 48)),
              HasSubstr("quantization_config.group_size 48 is not supported (supported: 32, 64, "
                        "128, -1)"));
  EXPECT_THAT(refusal(with(kAwq, "group_size", 48)),
              HasSubstr("quantization_config.group_size 48 is not supported"));
}

TEST(QuantizationConfig, RefusesAwqGemvAndOtherVersions) {
  for (const char* version : {"gemv", "gemv_fast", "marlin", "exllama", "ipex"}) {
    EXPECT_THAT(refusal(with(kAwq, "version", version)),
                HasSubstr(std::string("quantization_config.version '") + version +
                          "' is not supported (supported: gemm)"));
  }
  EXPECT_THAT(refusal(with(kAwq, "zero_point", false)),
              HasSubstr("quantization_config.zero_point false is not supported"));
}

TEST(QuantizationConfig, RefusesUnknownQuantMethod) {
  for (const char* m : {"bitsandbytes", "fp8", "exl2", "gguf"}) {
    EXPECT_THAT(refusal(with(kGptq, "quant_method", m)),
                HasSubstr(std::string("quantization_config.quant_method '") + m +
                          "' is not supported (supported: gptq, awq)"));
  }
  json none = kGptq;
  none.erase("quant_method");
  EXPECT_THAT(refusal(none), HasSubstr("quantization_config.quant_method is missing"));
}

TEST(QuantizationConfig, RefusesOtherGptqLayouts) {
  EXPECT_THAT(refusal(with(kGptq, "checkpoint_format", "marlin")),
              HasSubstr("quantization_config.checkpoint_format 'marlin' is not supported "
                        "(supported: gptq, gptq_v2)"));
  EXPECT_THAT(refusal(with(kGptq, "is_marlin_format", true)),
              HasSubstr("quantization_config.is_marlin_format true is not supported"));
  EXPECT_THAT(refusal(with(kGptq, "lm_head", true)),
              HasSubstr("quantization_config.lm_head true"));
  EXPECT_THAT(refusal(with(kGptq, "bits", "4")), HasSubstr("field 'bits' must be an integer"));
  EXPECT_THAT(refusal(with(kGptq, "pack_dtype", "int16")),
              HasSubstr("quantization_config.pack_dtype 'int16' is not supported"));
}

}  // namespace
}  // namespace shardserve::model
