#include "model/safetensors_writer.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/half.h"

namespace shardserve::model {
namespace {

uint16_t float_to_fp16(float f) {
  // Round-to-nearest-even via the hardware-independent bit route; inputs are finite weights.
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exponent = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mantissa = x & 0x7fffffu;
  if (((x >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u : 0));
  if (exponent >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exponent <= 0) {
    if (exponent < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000u;
    const int shift = 14 - exponent;
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t midpoint = 1u << (shift - 1);
    if (rest > midpoint || (rest == midpoint && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | static_cast<uint32_t>(exponent) << 10 | mantissa >> 13;
  const uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1))) ++half;  // may carry into exponent
  return static_cast<uint16_t>(half);
}

}  // namespace

TensorData make_tensor(DType dtype, std::vector<int64_t> shape, const std::vector<float>& values) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  require(numel == static_cast<int64_t>(values.size()),
          "make_tensor: {} values for a shape of {} elements", values.size(), numel);
  TensorData t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * dtype_size(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::kF32:
        std::memcpy(t.bytes.data() + i * 4, &values[i], 4);
        break;
      case DType::kBF16: {
        const uint16_t h = float_to_bf16(values[i]);
        std::memcpy(t.bytes.data() + i * 2, &h, 2);
        break;
      }
      case DType::kF16: {
        const uint16_t h = float_to_fp16(values[i]);
        std::memcpy(t.bytes.data() + i * 2, &h, 2);
        break;
      }
      default:
        fail("make_tensor: dtype {} is not a float storage type", dtype_name(dtype));
    }
  }
  return t;
}

void write_safetensors(const std::filesystem::path& path,
                       const std::map<std::string, TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    require(t.bytes.size() == numel * dtype_size(t.dtype),
            "write_safetensors: tensor '{}' has {} bytes for shape of {} elements of {}", name,
            t.bytes.size(), numel, dtype_name(t.dtype));
    header[name] = {{"dtype", dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t length = text.size();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  require(out.good(), "cannot write {}", path.string());
  out.write(reinterpret_cast<const char*>(&length), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors) {
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  }
  require(out.good(), "error while writing {}", path.string());
}

}  // namespace shardserve::model
