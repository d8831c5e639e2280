#pragma once
// Memory-mapped safetensors checkpoints: one file, or shards listed by
// model.safetensors.index.json. The header of every file is validated when it is opened
// (size, JSON, dtypes, shapes, offsets inside the file, sizes matching shapes, no overlap), so a
// tensor handed out is always safe to read. Errors name the file and the tensor.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/mapped_file.h"

namespace shardserve::model {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // the safetensors spelling: "BF16", "I32", ...

// A tensor inside a mapped file. Valid while its SafetensorsFile / Checkpoint lives.
struct TensorView {
  std::string name;
  std::string file;              // the file it came from, for messages
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;

  int64_t numel() const;
  // Throws unless the shape equals `expected` exactly; the message shows both.
  void expect_shape(const std::vector<int64_t>& expected) const;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json (every listed file must exist and hold the tensors the index
// assigns to it).
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& model_dir);
  static Checkpoint open_file(const std::filesystem::path& file);

  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  // Throws "tensor 'name' not found in <dir>" when absent.
  const TensorView& tensor(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::filesystem::path& source() const { return source_; }

 private:
  std::filesystem::path source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

}  // namespace shardserve::model
