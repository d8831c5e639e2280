#pragma once
// The ceilings of one GPU that the roofline divides by: memory capacity, HBM bandwidth, dense
// bf16 tensor-core rate and the GPU-to-GPU link that carries tensor-parallel all-reduces.
// Presets are vendor datasheet figures (peaks no kernel reaches); the one measured set is our
// own H200 measurement. Every report says which it used.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shardserve::planner {

struct GpuSpec {
  std::string name;                  // "H200 141GB"
  int64_t memory_bytes = 0;          // device memory as the driver reports its total
  double bandwidth_bytes_per_s = 0;  // HBM
  double flops_per_s = 0;            // dense bf16 tensor core, no sparsity
  double link_bytes_per_s = 0;       // per direction, to a peer GPU (NVLink or PCIe)
  std::string source;                // where the numbers come from, printed with every report
};

// Case-insensitive: h100 (H100 SXM 80GB), h200 (H200 141GB), a100 (A100 SXM 80GB), l40s.
// Throws naming the presets when `name` is none of them.
GpuSpec gpu_preset(std::string_view name);
std::vector<std::string> gpu_preset_names();

// The preset with our own measured ceilings in place of the datasheet's. Only the H200 has
// been measured; any other GPU throws.
GpuSpec with_measured_ceilings(const GpuSpec& preset);

// Validates a spec given or overridden by the user: every figure positive.
void validate_gpu_spec(const GpuSpec& spec);

}  // namespace shardserve::planner
