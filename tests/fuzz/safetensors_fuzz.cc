// The safetensors reader (model/safetensors.h). First byte even: the rest is a model.safetensors
// file (header length, JSON header, data). Odd: the rest is model.safetensors.index.json in a
// folder that also holds a valid shard, shard.safetensors, with tensors "a" (F32 [2, 3]) and
// "b" (BF16 [4]). Invariants: only shardserve::Error escapes; every tensor handed out lies
// inside its file and has exactly numel * dtype_size bytes (each byte is read, so ASan sees any
// view that points outside the mapping).
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "model/safetensors.h"
#include "model/safetensors_writer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace shardserve;

struct Folder {
  fuzz::TempDir dir;
  Folder() {
    model::write_safetensors(dir.path() / "shard.safetensors",
                             {{"a", model::make_tensor(model::DType::kF32, {2, 3},
                                                       {1, 2, 3, 4, 5, 6})},
                              {"b", model::make_tensor(model::DType::kBF16, {4}, {1, 2, 3, 4})}});
  }
};

// Where the bytes read go, so that the reads are not optimised away.
volatile unsigned g_sink = 0;

void check(const model::Checkpoint& c) {
  unsigned sum = 0;
  for (const auto& name : c.names()) {
    const model::TensorView& t = c.tensor(name);
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      FUZZ_CHECK(d >= 0, name);
      numel *= d;
    }
    FUZZ_CHECK(static_cast<uint64_t>(numel) * model::dtype_size(t.dtype) == t.data.size(), name);
    for (std::byte b : t.data) sum += static_cast<unsigned>(b);
  }
  g_sink = sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const Folder folder;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto& dir = folder.dir.path();
  std::filesystem::remove(dir / "model.safetensors");
  std::filesystem::remove(dir / "model.safetensors.index.json");
  folder.dir.write(data[0] % 2 == 0 ? "model.safetensors" : "model.safetensors.index.json", rest);
  try {
    check(model::Checkpoint::open(dir));
  } catch (const Error& e) {
    FUZZ_CHECK(*e.what() != '\0', "empty error");
  }
  return 0;
}
