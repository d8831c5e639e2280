#include "worker/gpu_backend.h"

#include <dlfcn.h>

#include <filesystem>

#include "common/error.h"

namespace shardserve::worker {
namespace {

std::string default_module_path() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  require(!ec, "device = \"cuda\": cannot find the worker executable (/proc/self/exe: {}) to "
          "locate {}", ec.message(), kGpuModuleFile);
  return (exe.parent_path() / kGpuModuleFile).string();
}

}  // namespace

std::unique_ptr<GpuModule> GpuModule::load(const std::string& path) {
  const std::string file = path.empty() ? default_module_path() : path;
  // RTLD_NOW: a symbol the module needs and the worker lacks fails here, by name, not mid-step.
  Handle handle(dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL), &dlclose);
  if (!handle) {
    const char* why = dlerror();
    fail("device = \"cuda\": cannot load the GPU runner module {}: {} (built with the worker in "
         "a CUDA build; the CUDA libraries must be installed on this host)",
         file, why ? why : "unknown error");
  }
  using Entry = GpuBackend* (*)();
  dlerror();
  auto entry = reinterpret_cast<Entry>(dlsym(handle.get(), kGpuBackendEntry));
  if (entry == nullptr) {
    const char* why = dlerror();
    fail("device = \"cuda\": {} has no entry point {}: {}", file, kGpuBackendEntry,
         why ? why : "null");
  }
  std::unique_ptr<GpuBackend> backend(entry());
  return std::unique_ptr<GpuModule>(new GpuModule(std::move(handle), file, std::move(backend)));
}

GpuModule::GpuModule(Handle handle, std::string path, std::unique_ptr<GpuBackend> backend)
    : handle_(std::move(handle)), path_(std::move(path)), backend_(std::move(backend)) {}

// The backend's code is in the module: it goes first (members are destroyed in reverse order).
GpuModule::~GpuModule() = default;

}  // namespace shardserve::worker
