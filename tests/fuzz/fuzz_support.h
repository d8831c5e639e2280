#pragma once
// What the fuzz targets share: the committed fixtures, a private temporary folder, and the one
// way a target reports a broken invariant (abort, which libFuzzer and the replay both catch).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace shardserve::fuzz {

inline std::filesystem::path source_dir() { return SHARDSERVE_SOURCE_DIR; }
inline std::filesystem::path fixture(std::string_view name) {
  return source_dir() / "tests" / "fixtures" / name;
}

[[noreturn]] inline void broken(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz invariant broken: %s %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}
#define FUZZ_CHECK(cond, detail) \
  ((cond) ? (void)0 : ::shardserve::fuzz::broken("(" #cond ")", (detail)))

// A folder of this process's own (removed at exit), for targets whose parser reads files.
class TempDir {
 public:
  TempDir() {
    const std::filesystem::path base =
        std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    std::string templ = (base / "shardserve-fuzz-XXXXXX").string();
    if (!mkdtemp(templ.data())) broken("mkdtemp failed", templ);
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

  void write(const std::string& name, std::string_view bytes) const {
    std::ofstream out(path_ / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) broken("cannot write", (path_ / name).string());
  }

 private:
  std::filesystem::path path_;
};

}  // namespace shardserve::fuzz
