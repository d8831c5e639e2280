#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "common/error.h"

namespace shardserve::model {
namespace {

using nlohmann::json;

// A header larger than this is certainly corrupt (real headers are a few MB at most) and would
// otherwise make us parse an arbitrary amount of garbage.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeInfo {
  const char* name;
  DType dtype;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"F64", DType::kF64, 8},   {"F32", DType::kF32, 4},         {"F16", DType::kF16, 2},
    {"BF16", DType::kBF16, 2}, {"I64", DType::kI64, 8},         {"I32", DType::kI32, 4},
    {"I16", DType::kI16, 2},   {"I8", DType::kI8, 1},           {"U8", DType::kU8, 1},
    {"BOOL", DType::kBool, 1}, {"F8_E4M3", DType::kF8E4M3, 1}, {"F8_E5M2", DType::kF8E5M2, 1},
};

const DTypeInfo* find_dtype(const std::string& name) {
  for (const auto& info : kDTypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::size_t dtype_size(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info.size;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info.name;
  }
  return "?";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void TensorView::expect_shape(const std::vector<int64_t>& expected) const {
  require(shape == expected, "{}: tensor '{}' has shape {}, expected {}", file, name,
          shape_string(shape), shape_string(expected));
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  const std::string where = path.string();
  const auto bytes = file_.bytes();
  require(bytes.size() >= 8, "{}: truncated safetensors file ({} bytes, the header length alone "
          "needs 8)", where, bytes.size());
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);  // little-endian on every platform we build for
  require(header_len <= kMaxHeaderBytes, "{}: bad safetensors header length {}", where,
          header_len);
  require(header_len <= bytes.size() - 8,
          "{}: truncated safetensors file: header claims {} bytes but only {} follow", where,
          header_len, bytes.size() - 8);
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    fail("{}: bad safetensors header (not JSON): {}", where, e.what());
  }
  require(header.is_object(), "{}: bad safetensors header: expected a JSON object", where);
  const auto data = bytes.subspan(8 + header_len);

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      require(entry.is_object(), "{}: __metadata__ must be an object", where);
      for (const auto& [k, v] : entry.items()) {
        require(v.is_string(), "{}: __metadata__ value of '{}' must be a string", where, k);
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    require(entry.is_object() && entry.contains("dtype") && entry.contains("shape") &&
                entry.contains("data_offsets"),
            "{}: tensor '{}': header entry needs dtype, shape and data_offsets", where, name);
    TensorView view;
    view.name = name;
    view.file = where;
    require(entry["dtype"].is_string(), "{}: tensor '{}': dtype must be a string", where, name);
    const DTypeInfo* info = find_dtype(entry["dtype"].get<std::string>());
    require(info != nullptr, "{}: tensor '{}': unknown dtype '{}'", where, name,
            entry["dtype"].get<std::string>());
    view.dtype = info->dtype;
    require(entry["shape"].is_array(), "{}: tensor '{}': shape must be an array", where, name);
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      require(d.is_number_integer() && d.get<int64_t>() >= 0,
              "{}: tensor '{}': bad dimension {}", where, name, d.dump());
      const auto dim = static_cast<uint64_t>(d.get<int64_t>());
      require(dim == 0 || numel <= (uint64_t{1} << 62) / dim,
              "{}: tensor '{}': shape overflows", where, name);
      numel *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offsets = entry["data_offsets"];
    require(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                offsets[1].is_number_unsigned(),
            "{}: tensor '{}': data_offsets must be two non-negative integers", where, name);
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    require(begin <= end && end <= data.size(),
            "{}: tensor '{}': data offsets [{}, {}) out of bounds (data section is {} bytes)",
            where, name, begin, end, data.size());
    require(end - begin == numel * info->size,
            "{}: tensor '{}': {} bytes stored but shape {} of {} needs {}", where, name,
            end - begin, shape_string(view.shape), info->name, numel * info->size);
    view.data = data.subspan(begin, end - begin);
    if (end > begin) ranges.emplace_back(begin, end);
    tensors_.emplace(name, std::move(view));
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    require(ranges[i].first >= ranges[i - 1].second,
            "{}: overlapping tensor data at byte offset {}", where, ranges[i].first);
  }
}

Checkpoint Checkpoint::open_file(const std::filesystem::path& file) {
  Checkpoint c;
  c.source_ = file;
  c.files_.push_back(std::make_unique<SafetensorsFile>(file));
  for (const auto& [name, view] : c.files_.back()->tensors()) c.index_[name] = &view;
  return c;
}

Checkpoint Checkpoint::open(const std::filesystem::path& model_dir) {
  const auto single = model_dir / "model.safetensors";
  const auto index_path = model_dir / "model.safetensors.index.json";
  if (!std::filesystem::exists(index_path)) {
    require(std::filesystem::exists(single), "{} has neither model.safetensors nor "
            "model.safetensors.index.json", model_dir.string());
    Checkpoint c = open_file(single);
    c.source_ = model_dir;
    return c;
  }
  std::ifstream in(index_path);
  require(in.good(), "cannot open {}", index_path.string());
  json index;
  try {
    index = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", index_path.string(), e.what());
  }
  require(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
          "{}: expected an object with a 'weight_map' object", index_path.string());
  Checkpoint c;
  c.source_ = model_dir;
  std::map<std::string, const SafetensorsFile*> opened;
  for (const auto& [name, file_json] : index["weight_map"].items()) {
    require(file_json.is_string(), "{}: weight_map['{}'] must be a file name",
            index_path.string(), name);
    const std::string file_name = file_json.get<std::string>();
    require(file_name.find('/') == std::string::npos && file_name != ".." && !file_name.empty(),
            "{}: weight_map['{}'] = '{}' must name a file in the same directory",
            index_path.string(), name, file_name);
    auto it = opened.find(file_name);
    if (it == opened.end()) {
      c.files_.push_back(std::make_unique<SafetensorsFile>(model_dir / file_name));
      it = opened.emplace(file_name, c.files_.back().get()).first;
    }
    const auto& tensors = it->second->tensors();
    auto t = tensors.find(name);
    require(t != tensors.end(), "{}: tensor '{}' is listed in the index but missing from {}",
            index_path.string(), name, it->second->path().string());
    c.index_[name] = &t->second;
  }
  return c;
}

const TensorView& Checkpoint::tensor(const std::string& name) const {
  auto it = index_.find(name);
  require(it != index_.end(), "tensor '{}' not found in {}", name, source_.string());
  return *it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, view] : index_) out.push_back(name);
  return out;
}

}  // namespace shardserve::model
