#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/half.h"
#include "model/safetensors.h"
#include "model/safetensors_writer.h"

namespace shardserve::model {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  auto dir = fs::path(testing::TempDir()) / ("safetensors_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_raw(const fs::path& path, uint64_t header_len, const std::string& header,
               std::size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out << header;
  out << std::string(data_bytes, '\0');
}

std::string open_error(const fs::path& path) {
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

float read_float(const TensorView& t, int64_t i) {
  uint16_t h;
  float f;
  switch (t.dtype) {
    case DType::kF32:
      std::memcpy(&f, t.data.data() + 4 * i, 4);
      return f;
    case DType::kBF16:
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      return bf16_to_float(h);
    case DType::kF16:
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      return fp16_to_float(h);
    default:
      return NAN;
  }
}

TEST(Safetensors, RoundTripsEveryFloatDtype) {
  const auto dir = temp_dir("roundtrip");
  // Values exactly representable in all three formats, plus a subnormal-in-fp16 one.
  const std::vector<float> values = {0.0f, 1.0f, -2.5f, 0.15625f, 65504.0f, -3.0517578125e-05f};
  write_safetensors(dir / "t.safetensors",
                    {{"a.f32", make_tensor(DType::kF32, {2, 3}, values)},
                     {"b.bf16", make_tensor(DType::kBF16, {6}, values)},
                     {"c.f16", make_tensor(DType::kF16, {3, 2}, values)}},
                    {{"format", "pt"}});
  SafetensorsFile f(dir / "t.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 3u);
  const auto& a = f.tensors().at("a.f32");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.numel(), 6);
  for (const char* name : {"a.f32", "b.bf16", "c.f16"}) {
    const auto& t = f.tensors().at(name);
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (t.dtype == DType::kBF16 && i == 4) continue;  // 65504 rounds in bf16
      EXPECT_EQ(read_float(t, i), values[i]) << name << "[" << i << "]";
    }
  }
  EXPECT_EQ(read_float(f.tensors().at("b.bf16"), 4), 65536.0f);  // round-to-nearest-even
}

TEST(Safetensors, RejectsBadFilesWithTheirReason) {
  const auto dir = temp_dir("bad");
  {
    std::ofstream(dir / "short.safetensors") << "abc";
  }
  EXPECT_THAT(open_error(dir / "short.safetensors"), HasSubstr("truncated safetensors file"));

  write_raw(dir / "long_header.safetensors", 1000, "{}", 0);
  EXPECT_THAT(open_error(dir / "long_header.safetensors"),
              HasSubstr("header claims 1000 bytes but only 2 follow"));

  write_raw(dir / "huge.safetensors", uint64_t{1} << 40, "{}", 0);
  EXPECT_THAT(open_error(dir / "huge.safetensors"), HasSubstr("bad safetensors header length"));

  const std::string not_json = "{\"a\": [1, 2";
  write_raw(dir / "json.safetensors", not_json.size(), not_json, 0);
  EXPECT_THAT(open_error(dir / "json.safetensors"), HasSubstr("bad safetensors header (not JSON)"));

  const std::string oob = R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
  write_raw(dir / "oob.safetensors", oob.size(), oob, 8);
  EXPECT_THAT(open_error(dir / "oob.safetensors"),
              HasSubstr("tensor 'w': data offsets [0, 16) out of bounds (data section is 8 "
                        "bytes)"));

  const std::string size = R"({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 4]}})";
  write_raw(dir / "size.safetensors", size.size(), size, 4);
  EXPECT_THAT(open_error(dir / "size.safetensors"),
              HasSubstr("tensor 'w': 4 bytes stored but shape [4] of BF16 needs 8"));

  const std::string dtype = R"({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 4]}})";
  write_raw(dir / "dtype.safetensors", dtype.size(), dtype, 4);
  EXPECT_THAT(open_error(dir / "dtype.safetensors"), HasSubstr("tensor 'w': unknown dtype 'Q4'"));

  const std::string overlap = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  write_raw(dir / "overlap.safetensors", overlap.size(), overlap, 12);
  EXPECT_THAT(open_error(dir / "overlap.safetensors"), HasSubstr("overlapping tensor data"));

  const std::string missing = R"({"w": {"dtype": "F32", "shape": [2]}})";
  write_raw(dir / "fields.safetensors", missing.size(), missing, 8);
  EXPECT_THAT(open_error(dir / "fields.safetensors"),
              HasSubstr("needs dtype, shape and data_offsets"));

  const std::string negative = R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})";
  write_raw(dir / "neg.safetensors", negative.size(), negative, 8);
  EXPECT_THAT(open_error(dir / "neg.safetensors"), HasSubstr("bad dimension -2"));

  EXPECT_THAT(open_error(dir / "absent.safetensors"), HasSubstr("cannot open"));
  // Every message names the file.
  EXPECT_THAT(open_error(dir / "oob.safetensors"), HasSubstr("oob.safetensors"));
}

TEST(Safetensors, TruncatedDataIsCaughtBeforeAnyRead) {
  const auto dir = temp_dir("truncated");
  write_safetensors(dir / "full.safetensors",
                    {{"w", make_tensor(DType::kF32, {64}, std::vector<float>(64, 1.0f))}});
  const auto full = fs::file_size(dir / "full.safetensors");
  fs::copy_file(dir / "full.safetensors", dir / "cut.safetensors");
  fs::resize_file(dir / "cut.safetensors", full - 10);
  EXPECT_THAT(open_error(dir / "cut.safetensors"), HasSubstr("out of bounds"));
}

TEST(Checkpoint, OpensShardsThroughTheIndex) {
  const auto dir = temp_dir("sharded");
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    {{"a", make_tensor(DType::kF32, {2}, {1.0f, 2.0f})}});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {{"b", make_tensor(DType::kF16, {1}, {3.0f})}});
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata": {"total_size": 10}, "weight_map": {
            "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";
  const Checkpoint c = Checkpoint::open(dir);
  EXPECT_EQ(c.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(read_float(c.tensor("b"), 0), 3.0f);
  EXPECT_THAT(c.tensor("a").file, HasSubstr("model-00001-of-00002"));
  try {
    c.tensor("c");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tensor 'c' not found in"));
  }
  try {
    c.tensor("a").expect_shape({3});
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tensor 'a' has shape [2], expected [3]"));
  }
}

TEST(Checkpoint, IndexErrorsNameTheProblem) {
  const auto dir = temp_dir("badindex");
  write_safetensors(dir / "one.safetensors", {{"a", make_tensor(DType::kF32, {1}, {1.0f})}});
  auto expect_error = [&](const std::string& index, const std::string& message) {
    std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << index;
    try {
      Checkpoint::open(dir);
      ADD_FAILURE() << "no error for " << index;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(message));
    }
  };
  expect_error(R"({"weight_map": {"b": "one.safetensors"}})",
               "tensor 'b' is listed in the index but missing from");
  expect_error(R"({"weight_map": {"a": "two.safetensors"}})", "cannot open");
  expect_error(R"({"weight_map": {"a": "../one.safetensors"}})", "must name a file in the same");
  expect_error(R"({"nothing": 1})", "expected an object with a 'weight_map' object");
  expect_error("{", "invalid JSON");
  fs::remove(dir / "model.safetensors.index.json");
  try {
    Checkpoint::open(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("has neither model.safetensors nor"));
  }
}

}  // namespace
}  // namespace shardserve::model
