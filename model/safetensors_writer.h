#pragma once
// Writes a safetensors file (the format model/safetensors.h reads): an 8-byte little-endian
// header length, the JSON header (tensors sorted by name, 8-byte aligned as the reference
// implementation pads it), then the data. Used by tools that produce checkpoints and by tests.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "model/safetensors.h"

namespace shardserve::model {

struct TensorData {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;  // numel * dtype_size(dtype) bytes, row-major
};

// Helpers to build TensorData from float values in a given storage dtype (F32, F16, BF16).
TensorData make_tensor(DType dtype, std::vector<int64_t> shape, const std::vector<float>& values);

void write_safetensors(const std::filesystem::path& path,
                       const std::map<std::string, TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace shardserve::model
