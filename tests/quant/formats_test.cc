// The published bit layouts, checked by hand: a few known integer weights packed as AutoGPTQ
// (qweight along the input dimension, qzeros along the output dimension, v1 zero - 1) and
// AutoAWQ GEMM (along the output dimension in the order 0 2 4 6 1 3 5 7) pack them, the words
// compared with values worked out below, then read back through a safetensors file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/half.h"
#include "model/model_config.h"
#include "model/quant/formats.h"
#include "model/quant/quantized_checkpoint.h"
#include "model/safetensors_writer.h"

namespace shardserve::quant {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

int32_t word(uint32_t bits) { return static_cast<int32_t>(bits); }

TEST(GptqPacking, FourBitRowsLowestBitsFirst) {
  // values [8 rows (input features), 2 columns (outputs)]. Column 0 holds 1..8 down the rows,
  // column 1 holds 15 at rows 0, 2, 7. Row r goes to bits 4r..4r+3 of word (0, column):
  //   column 0: 1 | 2<<4 | 3<<8 | 4<<12 | 5<<16 | 6<<20 | 7<<24 | 8<<28 = 0x87654321
  //   column 1: 0xF | 0xF<<8 | 0xF<<28                                  = 0xF0000F0F
  const std::vector<int32_t> v = {1, 15, 2, 0, 3, 15, 4, 0, 5, 0, 6, 0, 7, 0, 8, 15};
  const auto packed = pack_rows(v, 8, 2, 4);
  EXPECT_THAT(packed, ElementsAre(word(0x87654321u), word(0xF0000F0Fu)));
  EXPECT_EQ(packed[0], -2023406815);  // as the int32 a file stores
  EXPECT_EQ(unpack_rows(packed, 8, 2, 4), v);
}

TEST(GptqPacking, EightBitRows) {
  // 4 rows per word: rows 1, 0x80, 0xFF, 0x7F -> 0x7F | ... read from the top: 0x7FFF8001.
  const std::vector<int32_t> v = {1, 0x80, 0xFF, 0x7F};
  const auto packed = pack_rows(v, 4, 1, 8);
  EXPECT_THAT(packed, ElementsAre(word(0x7FFF8001u)));
  EXPECT_EQ(unpack_rows(packed, 4, 1, 8), v);
}

TEST(GptqPacking, ZerosAlongOutputsAndTheV1Offset) {
  // Symmetric 4-bit GPTQ puts every zero at 8; v1 stores 8 - 1 = 7 in each nibble: 0x77777777,
  // the word every AutoGPTQ sym checkpoint's qzeros is full of. 8-bit sym: 128 - 1 = 0x7F.
  EXPECT_THAT(pack_cols(std::vector<int32_t>(8, 7), 1, 8, 4), ElementsAre(2004318071));
  EXPECT_THAT(pack_cols(std::vector<int32_t>(4, 127), 1, 4, 8), ElementsAre(word(0x7F7F7F7Fu)));
  // Outputs 0..7 with zeros 0..7: output c at bits 4c: 0x76543210.
  const std::vector<int32_t> z = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_THAT(pack_cols(z, 1, 8, 4), ElementsAre(word(0x76543210u)));
  EXPECT_EQ(unpack_cols(pack_cols(z, 1, 8, 4), 1, 8, 4), z);
}

TEST(AwqPacking, OutputOrder02461357) {
  // One input row, outputs 0..7 holding 0..7. Nibble j holds output kAwqOrder[j]:
  //   nibbles (low to high) = v0 v2 v4 v6 v1 v3 v5 v7 = 0 2 4 6 1 3 5 7 -> 0x75316420.
  const std::vector<int32_t> v = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_THAT(pack_awq(v, 1, 8), ElementsAre(word(0x75316420u)));
  // Outputs 8..15 of a 16-wide row go to the second word; 15 at output 9 (k = 1) sits in nibble
  // kAwqReverse[1] = 4, bits 16..19: 0x000F0000.
  std::vector<int32_t> w(16, 0);
  w[9] = 15;
  EXPECT_THAT(pack_awq(w, 1, 16), ElementsAre(0, word(0x000F0000u)));
  EXPECT_EQ(unpack_awq(pack_awq(v, 1, 8), 1, 8), v);
  for (int k = 0; k < 8; ++k) EXPECT_EQ(kAwqOrder[kAwqReverse[k]], k);
}

TEST(Packing, RefusesValuesThatDoNotFit) {
  EXPECT_THROW(pack_rows({16, 0, 0, 0, 0, 0, 0, 0}, 8, 1, 4), Error);
  EXPECT_THROW(pack_awq({-1, 0, 0, 0, 0, 0, 0, 0}, 1, 8), Error);
  EXPECT_THROW(pack_rows({1, 2, 3}, 3, 1, 4), Error);  // 3 rows: not a multiple of 8
}

// A hand-made 4-bit linear [out 8, in 16], 2 groups of 8, written in each format and read back.
struct HandLinear {
  QuantizedLinear l = QuantizedLinear::empty(4, 8, 16, 8);
  HandLinear() {
    for (int64_t o = 0; o < 8; ++o)
      for (int64_t i = 0; i < 16; ++i) l.q[o * 16 + i] = static_cast<uint8_t>((o * 3 + i) % 16);
    for (int64_t g = 0; g < 2; ++g)
      for (int64_t o = 0; o < 8; ++o) {
        l.zeros[g * 8 + o] = static_cast<int32_t>(1 + (o + g) % 15);  // >= 1: v1-storable
        l.scales[g * 8 + o] = 0.25f * static_cast<float>(1 + o + 8 * g);  // exact in fp16
      }
  }
};

model::TensorData raw_i32(std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  model::TensorData t;
  t.dtype = model::DType::kI32;
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * 4);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}
model::TensorData raw_f16(std::vector<int64_t> shape, const std::vector<uint16_t>& v) {
  model::TensorData t;
  t.dtype = model::DType::kF16;
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * 2);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// Group size 8 keeps the example small; config.json allows 32/64/128/-1 only, so the config is
// built directly rather than parsed.
model::QuantizationConfig config_of(model::QuantizationConfig::Method method, int64_t group) {
  model::QuantizationConfig q;
  q.method = method;
  q.bits = 4;
  q.group_size = group;
  q.zero_minus_one = method == model::QuantizationConfig::Method::kGptq;
  return q;
}

TEST(GptqLayout, WrittenTensorsReadBackByHand) {
  HandLinear h;
  const GptqTensors g = to_gptq(h.l, /*zero_minus_one=*/true);
  // qweight [16 / 8, 8]: word (0, o) holds rows 0..7 of output o. Output 0: codes 0..7 ->
  // 0x76543210; output 1: codes 3..10 -> nibbles 3 4 5 6 7 8 9 10 -> 0xA9876543.
  EXPECT_EQ(g.qweight[0], word(0x76543210u));
  EXPECT_EQ(g.qweight[1], word(0xA9876543u));
  // Row block 1 (inputs 8..15) of output 0: codes 8..15 -> 0xFEDCBA98.
  EXPECT_EQ(g.qweight[8], word(0xFEDCBA98u));
  // qzeros [2, 1]: group 0 zeros 1..8 stored as 0..7 (v1) -> 0x76543210.
  EXPECT_EQ(g.qzeros[0], word(0x76543210u));
  EXPECT_EQ(g.scales[1], 0x3800);  // scale[0][1] = 0.5, in fp16 0x3800
  const auto dir = std::filesystem::path(testing::TempDir()) / "hand_gptq";
  std::filesystem::create_directories(dir);
  model::write_safetensors(dir / "model.safetensors",
                           {{"lin.qweight", raw_i32({2, 8}, g.qweight)},
                            {"lin.qzeros", raw_i32({2, 1}, g.qzeros)},
                            {"lin.scales", raw_f16({2, 8}, g.scales)},
                            {"lin.g_idx", raw_i32({16}, g.g_idx)}});
  const auto ckpt = model::Checkpoint::open(dir);
  const QuantizedLinearView view(ckpt, config_of(model::QuantizationConfig::Method::kGptq, 8), "lin", 8, 16);
  EXPECT_EQ(view.code(1, 0), 3);
  EXPECT_EQ(view.zero(0, 0), 1);  // stored 0, plus one
  // w[1][9] = scale[1][1] * (q - zero) = 0.25 * 10 * ((3 + 9) - (1 + 2)) = 2.5 * 9 = 22.5
  EXPECT_EQ(view.weight(1, 9), 22.5f);
  EXPECT_EQ(view.read().dequantize(), h.l.dequantize());
  const QuantizedLinear back = view.read();
  EXPECT_EQ(back.q, h.l.q);
  EXPECT_EQ(back.zeros, h.l.zeros);
}

TEST(AwqLayout, WrittenTensorsReadBackByHand) {
  HandLinear h;
  const AwqTensors a = to_awq(h.l);
  // qweight [16, 1]: input 0, outputs 0..7 have codes 0 3 6 9 12 15 2 5 (o * 3 % 16). In AWQ
  // order the nibbles are outputs 0 2 4 6 1 3 5 7 = 0 6 12 2 3 9 15 5 -> 0x5F932C60.
  EXPECT_EQ(a.qweight[0], word(0x5F932C60u));
  // qzeros [2, 1]: group 0 zeros 1..8 in AWQ order: 1 3 5 7 2 4 6 8 -> 0x86427531.
  EXPECT_EQ(a.qzeros[0], word(0x86427531u));
  const auto dir = std::filesystem::path(testing::TempDir()) / "hand_awq";
  std::filesystem::create_directories(dir);
  model::write_safetensors(dir / "model.safetensors",
                           {{"lin.qweight", raw_i32({16, 1}, a.qweight)},
                            {"lin.qzeros", raw_i32({2, 1}, a.qzeros)},
                            {"lin.scales", raw_f16({2, 8}, a.scales)}});
  const auto ckpt = model::Checkpoint::open(dir);
  const QuantizedLinearView view(ckpt, config_of(model::QuantizationConfig::Method::kAwq, 8), "lin", 8, 16);
  EXPECT_EQ(view.code(2, 0), 6);
  EXPECT_EQ(view.zero(0, 7), 8);  // no offset in AWQ
  EXPECT_EQ(view.weight(1, 9), 22.5f);
  EXPECT_EQ(view.read().dequantize(), h.l.dequantize());
}

TEST(GptqLayout, V1CannotStoreAZeroOfZero) {
  HandLinear h;
  h.l.zeros[3] = 0;
  EXPECT_THAT([&] { to_gptq(h.l, true); },
              ::testing::ThrowsMessage<Error>(HasSubstr("cannot store a zero point of 0")));
  EXPECT_NO_THROW(to_gptq(h.l, false));  // gptq_v2 stores it as is
}

TEST(QuantizedLinear, RowsSplitKeepsGroupsAndCodes) {
  HandLinear h;
  const QuantizedLinear top = h.l.rows(2, 3);
  ASSERT_EQ(top.out_features, 3);
  for (int64_t o = 0; o < 3; ++o)
    for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(top.weight(o, i), h.l.weight(o + 2, i));
}

TEST(Fp16, RoundsToNearestEven) {
  EXPECT_EQ(fp16_bits(1.0f), 0x3C00);
  EXPECT_EQ(round_to_fp16(1.0f + 1.0f / 4096), 1.0f);  // below half an ulp (2^-10)
  EXPECT_EQ(round_to_fp16(0.1f), fp16_to_float(0x2E66));
}

}  // namespace
}  // namespace shardserve::quant
