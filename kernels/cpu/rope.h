#pragma once
// Rotary position embedding as LLaMA applies it: the "rotate half" form (dimension i pairs with
// i + head_dim/2), frequencies base^(-2i/d), optionally rescaled by the llama3 or linear rule.
#include <cstdint>
#include <vector>

namespace shardserve::kernels::cpu {

struct RopeParams {
  int64_t head_dim = 0;
  double theta = 10000.0;
  enum class Scaling { kNone, kLlama3, kLinear } scaling = Scaling::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

// The head_dim/2 inverse frequencies after scaling, in float32 as the reference keeps them.
std::vector<float> rope_inverse_frequencies(const RopeParams& params);

// Rotates x in place. x: [tokens, heads, head_dim]; positions: [tokens];
// inv_freq: [head_dim / 2].
void apply_rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads,
                int64_t head_dim, const float* inv_freq);

}  // namespace shardserve::kernels::cpu
