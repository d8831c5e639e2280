#include "tools/plan/gpu_spec.h"

#include <algorithm>
#include <cctype>

#include "common/error.h"

namespace shardserve::planner {
namespace {

constexpr double kTera = 1e12;
constexpr double kGiga = 1e9;
constexpr int64_t kGiB = int64_t{1} << 30;

struct Preset {
  std::string_view key;
  GpuSpec spec;
};

// Datasheet capacities are printed as "GB" but match the driver's total in GiB to within 1%
// on HBM parts (our H200 reports 139.8 GiB for "141 GB"), so they are read as GiB. NVLink
// figures are the datasheet's bidirectional totals halved; the L40S has no NVLink and talks
// over PCIe Gen4 x16 (64 GB/s bidirectional).
const std::vector<Preset>& presets() {
  static const std::vector<Preset> kPresets = {
      {"h100", {"H100 SXM 80GB", 80 * kGiB, 3.35 * kTera, 989 * kTera, 450 * kGiga, "datasheet"}},
      {"h200", {"H200 141GB", 141 * kGiB, 4.8 * kTera, 989 * kTera, 450 * kGiga, "datasheet"}},
      {"a100", {"A100 SXM 80GB", 80 * kGiB, 2.0 * kTera, 312 * kTera, 300 * kGiga, "datasheet"}},
      {"l40s", {"L40S 48GB", 48 * kGiB, 0.864 * kTera, 362 * kTera, 32 * kGiga, "datasheet"}},
  };
  return kPresets;
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

GpuSpec gpu_preset(std::string_view name) {
  const std::string key = lower(name);
  for (const Preset& p : presets()) {
    if (p.key == key) return p.spec;
  }
  fail("unknown GPU preset '{}': expected one of {}", name, fmt::join(gpu_preset_names(), ", "));
}

std::vector<std::string> gpu_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : presets()) names.emplace_back(p.key);
  return names;
}

GpuSpec with_measured_ceilings(const GpuSpec& preset) {
  require(preset.name == gpu_preset("h200").name,
          "measured ceilings exist only for the H200, not for {}; give --bandwidth-tbps and "
          "--tflops instead",
          preset.name);
  GpuSpec spec = preset;
  // Measured on our H200: device-to-device copy 4.24 TB/s, bf16 cuBLAS GEMM ~790 TFLOP/s, and
  // cudaMemGetInfo's total of 150109880320 bytes (143156 MiB).
  spec.memory_bytes = 150109880320;
  spec.bandwidth_bytes_per_s = 4.24 * kTera;
  spec.flops_per_s = 790 * kTera;
  spec.source = "measured on our H200 (copy 4.24 TB/s, cuBLAS bf16 790 TFLOP/s, "
                "cudaMemGetInfo total); link is datasheet";
  return spec;
}

void validate_gpu_spec(const GpuSpec& spec) {
  require(spec.memory_bytes > 0, "GPU memory must be positive, got {} bytes", spec.memory_bytes);
  require(spec.bandwidth_bytes_per_s > 0, "GPU bandwidth must be positive, got {} B/s",
          spec.bandwidth_bytes_per_s);
  require(spec.flops_per_s > 0, "GPU FLOP rate must be positive, got {} FLOP/s",
          spec.flops_per_s);
  require(spec.link_bytes_per_s > 0, "GPU link bandwidth must be positive, got {} B/s",
          spec.link_bytes_per_s);
}

}  // namespace shardserve::planner
