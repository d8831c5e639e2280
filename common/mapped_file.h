#pragma once
// A read-only memory map of a whole file (RAII). Checkpoints are mapped, not read, so that a
// rank touches only the pages of the tensor slices it uses.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace shardserve {

class MappedFile {
 public:
  // Maps `path`; throws Error naming the path and errno text on failure. An empty file maps
  // to an empty span.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release() noexcept;
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace shardserve
