// The main of a fuzz target outside libFuzzer: runs LLVMFuzzerTestOneInput once on every file
// named (or in a folder named) on the command line, so a normal build replays the seed corpus and
// every crash input kept in regressions/. A crash, sanitizer report or escaped exception fails
// the run; a folder that does not exist is skipped (a target without regressions yet).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int run_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", file.c_str());
    return 1;
  }
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::fprintf(stderr, "replay: %s (%zu bytes)\n", file.c_str(), bytes.size());
  // A copy of exactly the input's size, so that ASan sees a read past its end.
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(copy.data(), copy.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int files = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    std::vector<std::filesystem::path> inputs;
    if (std::filesystem::is_directory(arg)) {
      for (const auto& e : std::filesystem::directory_iterator(arg))
        if (e.is_regular_file() && e.path().filename() != "README.md") inputs.push_back(e.path());
    } else if (std::filesystem::exists(arg)) {
      inputs.push_back(arg);
    }
    std::sort(inputs.begin(), inputs.end());
    for (const auto& f : inputs) {
      if (run_file(f) != 0) return 1;
      ++files;
    }
  }
  std::printf("replay: %d inputs ran clean\n", files);
  return files > 0 ? 0 : 1;
}
