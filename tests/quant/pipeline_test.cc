// The quantize tool's pipeline: its calibration forward computes the engine's logits, and
// quantize -> write -> load -> dequantize gives back every weight within the quantization step
// (RTN), or exactly the quantizer's own result (GPTQ, AWQ).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "model/quant/quantized_checkpoint.h"
#include "model/quant/writer.h"
#include "tests/quant/quant_fixture.h"
#include "tools/quantize/calibration.h"
#include "tools/quantize/pipeline.h"

namespace shardserve::quantize {
namespace {

namespace fs = std::filesystem;
using testing_support::engine_logits;
using testing_support::random_ids;
using testing_support::temp_path;
using testing_support::tiny_model_dir;
using ::testing::HasSubstr;

const char* kLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                          "mlp.down_proj"};

TEST(CalibrationForward, ComputesTheEngineLogits) {
  const fs::path dir = tiny_model_dir("calib_forward", 21);
  const auto config = model::load_model_config(dir);
  const auto ckpt = model::Checkpoint::open(dir);
  auto w = worker::load_llama_weights(ckpt, config, worker::make_shard(config, 0, 1));
  const int64_t T = 13;
  const auto tokens = random_ids(3 * T, 22, config.vocab_size);  // 3 sequences
  CalibrationForward fwd(config, w, T);
  auto x = fwd.embed(tokens);
  int calls = 0;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    fwd.layer(l, x, [&](int64_t, Stage, const std::vector<float>&) {
      ++calls;
      return false;
    });
  }
  EXPECT_EQ(calls, 4 * config.num_hidden_layers);
  const auto logits = fwd.logits(x);
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> seq(tokens.begin() + s * T, tokens.begin() + (s + 1) * T);
    const auto want = engine_logits(dir, seq);
    const std::vector<float> got(logits.begin() + s * T * config.vocab_size,
                                 logits.begin() + (s + 1) * T * config.vocab_size);
    EXPECT_LT(testing_support::max_abs_diff(got, want), 1e-5) << "sequence " << s;
  }
}

Options tiny_options(Method m, quant::WriteOptions::Format f) {
  Options o;
  o.method = m;
  o.format = f;
  o.group_size = 32;
  o.seq_len = 16;
  o.awq_tokens = 64;
  return o;
}

quant::WriteOptions write_options(const Options& o) {
  quant::WriteOptions w;
  w.format = o.format;
  w.gptq_v1 = o.gptq_v1;
  w.sym = o.sym;
  w.desc_act = o.desc_act;
  return w;
}

TEST(RoundTrip, RtnWeightsComeBackWithinHalfAStep) {
  const fs::path src = tiny_model_dir("rt_src", 31);
  const auto src_ckpt = model::Checkpoint::open(src);
  struct Case {
    quant::WriteOptions::Format format;
    int bits;
    int64_t group;
    bool sym;
    bool v1;
  };
  for (const Case c : {Case{quant::WriteOptions::Format::kGptq, 4, 32, true, true},
                       Case{quant::WriteOptions::Format::kGptq, 4, 32, false, true},
                       Case{quant::WriteOptions::Format::kGptq, 8, -1, false, false},
                       Case{quant::WriteOptions::Format::kAwq, 4, 32, false, false}}) {
    Options o = tiny_options(Method::kRtn, c.format);
    o.bits = c.bits;
    o.group_size = c.group;
    o.sym = c.sym;
    o.gptq_v1 = c.v1;
    const Result r = quantize_model(src, {}, o);
    const fs::path out = temp_path(("rt_" + std::to_string(c.bits) + (c.sym ? "s" : "a") +
                          std::to_string(static_cast<int>(c.format))));
    quant::write_quantized_model(src, out, r.linears, r.overrides, write_options(o));
    const auto config = model::load_model_config(out);
    const auto ckpt = model::Checkpoint::open(out);
    for (int l = 0; l < 2; ++l)
      for (const char* name : kLinears) {
        const std::string p = "model.layers." + std::to_string(l) + "." + name;
        const auto& orig = src_ckpt.tensor(p + ".weight");
        const auto w = quant::read_float_tensor(orig);
        const int64_t out_f = orig.shape[0], in_f = orig.shape[1];
        const quant::QuantizedLinearView v(ckpt, *config.quantization, p, out_f, in_f);
        for (int64_t oi = 0; oi < out_f; ++oi)
          for (int64_t i = 0; i < in_f; ++i) {
            const float step = v.scale(v.group_of(i), oi);
            ASSERT_LE(std::abs(w[oi * in_f + i] - v.weight(oi, i)), 0.5f * step * 1.001f + 1e-7f)
                << p << " [" << oi << ", " << i << "] bits " << c.bits;
          }
        // and the file holds exactly what the quantizer produced
        EXPECT_EQ(v.read().dequantize(), r.linears.at(p).dequantize());
      }
  }
}

TEST(RoundTrip, GptqAndAwqCheckpointsHoldTheQuantizersResult) {
  const fs::path src = tiny_model_dir("rt2_src", 41);
  const auto calib = calibration_windows(random_ids(6 * 15, 42, 61), 1, 16, 6);
  for (Method m : {Method::kGptq, Method::kAwq}) {
    for (bool desc : {false, true}) {
      if (m == Method::kAwq && desc) continue;
      Options o = tiny_options(m, m == Method::kAwq ? quant::WriteOptions::Format::kAwq
                                                    : quant::WriteOptions::Format::kGptq);
      o.desc_act = desc;
      const Result r = quantize_model(src, calib, o);
      ASSERT_EQ(r.linears.size(), 14u);
      EXPECT_EQ(r.report["layers"].size(), 2u);
      const fs::path out = temp_path((std::string("rt2_") + method_name(m) + (desc ? "_desc" : "")));
      quant::write_quantized_model(src, out, r.linears, r.overrides, write_options(o));
      const auto config = model::load_model_config(out);
      const auto ckpt = model::Checkpoint::open(out);
      for (const auto& [p, l] : r.linears) {
        const quant::QuantizedLinearView v(ckpt, *config.quantization, p, l.out_features,
                                           l.in_features);
        EXPECT_EQ(v.read().dequantize(), l.dequantize()) << p;
        EXPECT_EQ(v.read().g_idx, l.g_idx) << p;
      }
      if (m == Method::kAwq) {
        // The folded RMSNorm weights are stored (in fp16) in place of the originals.
        EXPECT_EQ(r.overrides.size(), 4u);
        EXPECT_TRUE(r.report["layers"][0]["o"].contains("skipped"));  // GQA: no v -> o scale
        EXPECT_TRUE(r.report["layers"][0]["qkv"].contains("alpha"));
      }
    }
  }
}

// The report says where the arithmetic ran and how long each stage's Numerics call took; an
// explicit CpuNumerics is the default's arithmetic exactly.
TEST(Report, RecordsTheDeviceAndTheArithmeticSeconds) {
  const fs::path src = tiny_model_dir("report_src", 51);
  const auto calib = calibration_windows(random_ids(4 * 15, 52, 61), 1, 16, 4);
  for (Method m : {Method::kGptq, Method::kAwq}) {
    const Options o = tiny_options(m, m == Method::kAwq ? quant::WriteOptions::Format::kAwq
                                                        : quant::WriteOptions::Format::kGptq);
    CpuNumerics cpu;
    const Result r = quantize_model(src, calib, o, {}, &cpu);
    EXPECT_EQ(r.report["device"], "cpu");
    double sum = 0;
    for (const auto& layer : r.report["layers"]) {
      for (const char* stage : {"qkv", "o", "gate_up", "down"}) {
        const auto& st = layer[stage];
        ASSERT_TRUE(st.contains("numerics_seconds")) << stage;
        EXPECT_GE(st["numerics_seconds"].get<double>(), 0.0) << stage;
        EXPECT_LE(st["numerics_seconds"].get<double>(), st["seconds"].get<double>()) << stage;
      }
      EXPECT_LE(layer["numerics_seconds"].get<double>(), layer["seconds"].get<double>());
      sum += layer["numerics_seconds"].get<double>();
    }
    EXPECT_NEAR(r.report["numerics_seconds"].get<double>(), sum, 1e-9);
    const Result d = quantize_model(src, calib, o);
    ASSERT_EQ(r.linears.size(), d.linears.size());
    for (const auto& [name, l] : r.linears) {
      EXPECT_EQ(l.q, d.linears.at(name).q) << name;
      EXPECT_EQ(l.scales, d.linears.at(name).scales) << name;
    }
    EXPECT_EQ(r.overrides, d.overrides);
  }
  const Result rtn =
      quantize_model(src, {}, tiny_options(Method::kRtn, quant::WriteOptions::Format::kGptq));
  EXPECT_EQ(rtn.report["device"], "cpu");  // RTN's arithmetic is always the CPU's
}

TEST(RoundTrip, QuantizedModelStaysCloseToTheOriginal) {
  // End to end on a tame tiny random model: 8-bit logits are near the original's, 4-bit
  // further (a sanity check that nothing is scrambled on the way; the real quality numbers are
  // the demo model's perplexities in docs/quantization.md).
  const fs::path src = tiny_model_dir("rt3_src", 51, false, 0.3);
  const auto calib = calibration_windows(random_ids(8 * 15, 52, 61), 1, 16, 8);
  const auto tokens = random_ids(15, 53, 61);
  const auto ref = engine_logits(src, tokens);
  double ref_scale = 0;
  for (float v : ref) ref_scale = std::max(ref_scale, std::abs(double(v)));
  for (int bits : {8, 4}) {
    for (Method m : {Method::kRtn, Method::kGptq, Method::kAwq}) {
      if (m == Method::kAwq && bits == 8) continue;
      Options o = tiny_options(m, m == Method::kAwq ? quant::WriteOptions::Format::kAwq
                                                    : quant::WriteOptions::Format::kGptq);
      o.bits = bits;
      const Result r = quantize_model(src, calib, o);
      const fs::path out = temp_path((std::string("rt3_") + method_name(m) + std::to_string(bits)));
      quant::write_quantized_model(src, out, r.linears, r.overrides, write_options(o));
      const double err = testing_support::max_abs_diff(engine_logits(out, tokens), ref);
      std::printf("%s %d-bit: max |logit error| %.4f (max |logit| %.3f)\n", method_name(m), bits,
                  err, ref_scale);
      EXPECT_LT(err, (bits == 8 ? 0.01 : 0.15) * ref_scale) << method_name(m) << " " << bits;
    }
  }
}

TEST(Options, RefusesWhatTheFormatsCannotHold) {
  Options o;
  o.format = quant::WriteOptions::Format::kAwq;
  o.bits = 8;
  EXPECT_THAT([&] { validate(o); },
              ::testing::ThrowsMessage<Error>(HasSubstr("--format awq stores 4-bit weights only")));
  o.bits = 4;
  o.desc_act = true;
  EXPECT_THAT([&] { validate(o); }, ::testing::ThrowsMessage<Error>(HasSubstr("no g_idx")));
  Options g;
  g.group_size = 48;
  EXPECT_THAT([&] { validate(g); },
              ::testing::ThrowsMessage<Error>(HasSubstr("--group-size 48 is not supported")));
  EXPECT_THAT([&] { calibration_windows({1, 2, 3}, 0, 16, 2); },
              ::testing::ThrowsMessage<Error>(HasSubstr("need 30 token ids, the text has 3")));
}

}  // namespace
}  // namespace shardserve::quantize
