// Loading quantized checkpoints: the CPU engine computes the same logits from a GPTQ / AWQ
// checkpoint as from its dequantized twin (exactly, with an F32 twin; closely with a BF16 one),
// tensor-parallel ranks dequantize exactly their slices, and broken checkpoints are refused with
// messages naming the tensor.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/quant/quantized_checkpoint.h"
#include "model/quant/writer.h"
#include "model/safetensors_writer.h"
#include "tests/quant/quant_fixture.h"
#include "tools/quantize/pipeline.h"

namespace shardserve::quant {
namespace {

namespace fs = std::filesystem;
using testing_support::engine_logits;
using testing_support::max_abs_diff;
using testing_support::random_ids;
using testing_support::temp_path;
using testing_support::tiny_model_dir;
using ::testing::HasSubstr;

struct Variant {
  const char* name;
  quantize::Method method;
  WriteOptions::Format format;
  int bits;
  int64_t group;
  bool sym;
  bool desc_act;
  bool v1;
};

const Variant kVariants[] = {
    {"rtn_gptq4_g32_sym_v1", quantize::Method::kRtn, WriteOptions::Format::kGptq, 4, 32, true, false, true},
    {"rtn_gptq4_gall_asym_v1", quantize::Method::kRtn, WriteOptions::Format::kGptq, 4, -1, false, false, true},
    {"rtn_gptq8_g32_asym_v2", quantize::Method::kRtn, WriteOptions::Format::kGptq, 8, 32, false, false, false},
    {"gptq4_g32_descact", quantize::Method::kGptq, WriteOptions::Format::kGptq, 4, 32, true, true, true},
    {"gptq8_g32", quantize::Method::kGptq, WriteOptions::Format::kGptq, 8, 32, true, false, true},
    {"rtn_awq4_g32", quantize::Method::kRtn, WriteOptions::Format::kAwq, 4, 32, false, false, false},
    {"awq4_g32", quantize::Method::kAwq, WriteOptions::Format::kAwq, 4, 32, false, false, false},
};

struct Written {
  fs::path source, quantized, twin, twin_bf16;
  quantize::Result result;
};

Written make_variant(const Variant& v, bool tied = false) {
  Written w;
  w.source = tiny_model_dir(std::string("src_") + v.name, 11, tied);
  quantize::Options o;
  o.method = v.method;
  o.format = v.format;
  o.bits = v.bits;
  o.group_size = v.group;
  o.sym = v.sym;
  o.desc_act = v.desc_act;
  o.gptq_v1 = v.v1;
  o.seq_len = 16;
  o.awq_tokens = 64;
  const auto calib = quantize::calibration_windows(random_ids(8 * 15, 3, 61), 1, 16, 8);
  w.result = quantize::quantize_model(w.source, calib, o);
  WriteOptions wo;
  wo.format = v.format;
  wo.gptq_v1 = v.v1;
  wo.sym = v.sym;
  wo.desc_act = v.desc_act;
  const fs::path base = temp_path(v.name);
  w.quantized = base / "quantized";
  w.twin = base / "twin";
  w.twin_bf16 = base / "twin_bf16";
  write_quantized_model(w.source, w.quantized, w.result.linears, w.result.overrides, wo);
  write_dequantized_model(w.source, w.twin, w.result.linears, w.result.overrides,
                          model::DType::kF16, model::DType::kF32);
  write_dequantized_model(w.source, w.twin_bf16, w.result.linears, w.result.overrides,
                          model::DType::kF16, model::DType::kBF16);
  return w;
}

TEST(QuantizedCheckpoint, LogitsEqualTheDequantizedTwin) {
  const auto tokens = random_ids(19, 5, 61);
  for (const Variant& v : kVariants) {
    SCOPED_TRACE(v.name);
    const Written w = make_variant(v);
    const auto config = model::load_model_config(w.quantized);
    ASSERT_TRUE(config.quantization.has_value());
    EXPECT_EQ(config.quantization->bits, v.bits);
    const auto q = engine_logits(w.quantized, tokens);
    const auto twin = engine_logits(w.twin, tokens);
    ASSERT_EQ(q.size(), twin.size());
    EXPECT_EQ(q, twin);  // bit for bit: the same float32 weights reach the same kernels
    const auto bf16 = engine_logits(w.twin_bf16, tokens);
    double scale = 0;
    for (float x : q) scale = std::max(scale, std::abs(double(x)));
    EXPECT_LT(max_abs_diff(q, bf16), 0.03 * scale);  // bf16 rounds the dequantized weights
  }
}

TEST(QuantizedCheckpoint, TiedEmbeddingsStayInFloat) {
  const Written w = make_variant(kVariants[0], /*tied=*/true);
  const auto tokens = random_ids(9, 6, 61);
  EXPECT_EQ(engine_logits(w.quantized, tokens), engine_logits(w.twin, tokens));
  const auto ckpt = model::Checkpoint::open(w.quantized);
  EXPECT_TRUE(ckpt.contains("model.embed_tokens.weight"));
  EXPECT_FALSE(ckpt.contains("lm_head.weight"));
  EXPECT_FALSE(ckpt.contains("model.layers.0.self_attn.q_proj.weight"));
}

TEST(QuantizedCheckpoint, TensorParallelRanksReadTheirSlices) {
  for (const Variant& v : {kVariants[3], kVariants[6]}) {  // act-order GPTQ, AWQ
    SCOPED_TRACE(v.name);
    const Written w = make_variant(v);
    const auto config = model::load_model_config(w.quantized);
    const auto qckpt = model::Checkpoint::open(w.quantized);
    const auto tckpt = model::Checkpoint::open(w.twin);
    const auto twin_config = model::load_model_config(w.twin);
    for (int rank = 0; rank < 2; ++rank) {
      const auto shard = worker::make_shard(config, rank, 2);
      const auto a = worker::load_llama_weights(qckpt, config, shard);
      const auto b = worker::load_llama_weights(tckpt, twin_config, shard);
      for (std::size_t l = 0; l < a.layers.size(); ++l) {
        EXPECT_EQ(a.layers[l].qkv, b.layers[l].qkv);
        EXPECT_EQ(a.layers[l].o, b.layers[l].o);
        EXPECT_EQ(a.layers[l].gate_up, b.layers[l].gate_up);
        EXPECT_EQ(a.layers[l].down, b.layers[l].down);
      }
    }
  }
}

TEST(QuantizedCheckpoint, WritesTheConfigOtherEnginesRead) {
  const Written g = make_variant(kVariants[3]);
  std::ifstream in(g.quantized / "config.json");
  const auto config = nlohmann::json::parse(in);
  const auto& q = config["quantization_config"];
  EXPECT_EQ(q["quant_method"], "gptq");
  EXPECT_EQ(q["bits"], 4);
  EXPECT_EQ(q["group_size"], 32);
  EXPECT_EQ(q["desc_act"], true);
  EXPECT_EQ(q["sym"], true);
  EXPECT_EQ(q["checkpoint_format"], "gptq");
  EXPECT_EQ(config["torch_dtype"], "float16");
  EXPECT_TRUE(fs::exists(g.quantized / "quantize_config.json"));
  const auto ckpt = model::Checkpoint::open(g.quantized);
  const auto& qw = ckpt.tensor("model.layers.0.mlp.down_proj.qweight");
  EXPECT_EQ(qw.dtype, model::DType::kI32);
  EXPECT_EQ(qw.shape, (std::vector<int64_t>{64 / 8, 32}));  // [in / 8, out]
  EXPECT_EQ(ckpt.tensor("model.layers.0.mlp.down_proj.scales").dtype, model::DType::kF16);
  EXPECT_EQ(ckpt.tensor("model.layers.0.mlp.down_proj.g_idx").shape, std::vector<int64_t>{64});

  const Written a = make_variant(kVariants[6]);
  std::ifstream ain(a.quantized / "config.json");
  const auto aq = nlohmann::json::parse(ain)["quantization_config"];
  EXPECT_EQ(aq["quant_method"], "awq");
  EXPECT_EQ(aq["version"], "gemm");
  EXPECT_EQ(aq["zero_point"], true);
  const auto ackpt = model::Checkpoint::open(a.quantized);
  EXPECT_EQ(ackpt.tensor("model.layers.0.mlp.down_proj.qweight").shape,
            (std::vector<int64_t>{64, 32 / 8}));  // [in, out / 8]
  EXPECT_FALSE(ackpt.contains("model.layers.0.mlp.down_proj.g_idx"));
}

// Rewrites `dir`'s model.safetensors with `edit` applied to its tensor map.
template <typename Edit>
void rewrite(const fs::path& dir, Edit edit) {
  std::map<std::string, model::TensorData> tensors;
  {
    const auto ckpt = model::Checkpoint::open(dir);
    for (const auto& name : ckpt.names()) {
      const auto& t = ckpt.tensor(name);
      model::TensorData d;
      d.dtype = t.dtype;
      d.shape = t.shape;
      d.bytes.assign(t.data.begin(), t.data.end());
      tensors[name] = std::move(d);
    }
  }
  edit(tensors);
  model::write_safetensors(dir / "model.safetensors", tensors);
}

std::string load_error(const fs::path& dir) {
  try {
    const auto config = model::load_model_config(dir);
    const auto ckpt = model::Checkpoint::open(dir);
    worker::load_llama_weights(ckpt, config, worker::make_shard(config, 0, 1));
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(QuantizedCheckpoint, RefusesMissingQzeros) {
  const Written w = make_variant(kVariants[0]);
  rewrite(w.quantized, [](auto& t) { t.erase("model.layers.1.self_attn.k_proj.qzeros"); });
  EXPECT_THAT(load_error(w.quantized),
              HasSubstr("quantized linear 'model.layers.1.self_attn.k_proj' has no qzeros (gptq "
                        "needs qweight, qzeros, scales and g_idx)"));
  const Written a = make_variant(kVariants[5]);
  rewrite(a.quantized, [](auto& t) { t.erase("model.layers.0.mlp.up_proj.scales"); });
  EXPECT_THAT(load_error(a.quantized),
              HasSubstr("quantized linear 'model.layers.0.mlp.up_proj' has no scales (awq needs "
                        "qweight, qzeros and scales)"));
}

TEST(QuantizedCheckpoint, RefusesWrongShapesDtypesAndGroups) {
  const Written w = make_variant(kVariants[0]);
  {
    const fs::path dir = temp_path("bad_dtype");
    fs::remove_all(dir);
    fs::copy(w.quantized, dir);
    rewrite(dir, [](auto& t) {
      auto& qw = t.at("model.layers.0.mlp.gate_proj.qweight");
      qw.dtype = model::DType::kF32;
    });
    EXPECT_THAT(load_error(dir), HasSubstr("tensor 'model.layers.0.mlp.gate_proj.qweight' has "
                                           "dtype F32; gptq packs it in I32"));
  }
  {
    const fs::path dir = temp_path("bad_gidx");
    fs::remove_all(dir);
    fs::copy(w.quantized, dir);
    rewrite(dir, [](auto& t) {
      auto& g = t.at("model.layers.0.mlp.down_proj.g_idx");
      const int32_t big = 7;
      std::memcpy(g.bytes.data() + 4 * 5, &big, 4);
    });
    EXPECT_THAT(load_error(dir), HasSubstr("tensor 'model.layers.0.mlp.down_proj.g_idx' maps "
                                           "input 5 to group 7, outside [0, 2)"));
  }
  {
    // The same tensors declared as group size 64: qzeros/scales then have the wrong shape.
    const fs::path dir = temp_path("bad_group");
    fs::remove_all(dir);
    fs::copy(w.quantized, dir);
    std::ifstream in(dir / "config.json");
    auto config = nlohmann::json::parse(in);
    in.close();
    config["quantization_config"]["group_size"] = 64;
    std::ofstream(dir / "config.json") << config.dump();
    EXPECT_THAT(load_error(dir), HasSubstr("tensor 'model.layers.0.mlp.down_proj.qzeros' has "
                                           "shape [2, 4], expected [1, 4]"));
  }
}

TEST(QuantizedCheckpoint, AwqModulesToNotConvertStayFloat) {
  // An AWQ checkpoint whose down_proj was left in fp16 (modules_to_not_convert).
  const Written a = make_variant(kVariants[5]);
  const fs::path dir = temp_path("awq_skip_down");
  fs::remove_all(dir);
  fs::copy(a.quantized, dir);
  const auto twin = model::Checkpoint::open(a.twin);
  rewrite(dir, [&](auto& t) {
    for (int l = 0; l < 2; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".mlp.down_proj";
      for (const char* s : {".qweight", ".qzeros", ".scales"}) t.erase(p + s);
      const auto& w = twin.tensor(p + ".weight");
      model::TensorData d;
      d.dtype = w.dtype;
      d.shape = w.shape;
      d.bytes.assign(w.data.begin(), w.data.end());
      t[p + ".weight"] = std::move(d);
    }
  });
  std::ifstream in(dir / "config.json");
  auto config = nlohmann::json::parse(in);
  in.close();
  config["quantization_config"]["modules_to_not_convert"] = {"down_proj"};
  std::ofstream(dir / "config.json") << config.dump();
  const auto tokens = random_ids(7, 8, 61);
  EXPECT_EQ(engine_logits(dir, tokens), engine_logits(a.twin, tokens));
}

}  // namespace
}  // namespace shardserve::quant
