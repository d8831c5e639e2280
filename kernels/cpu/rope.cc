#include "kernels/cpu/rope.h"

#include <cmath>
#include <numbers>

namespace shardserve::kernels::cpu {

std::vector<float> rope_inverse_frequencies(const RopeParams& p) {
  const int64_t half = p.head_dim / 2;
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    // float32 exponent, as transformers computes arange(0, d, 2).float() / d
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.head_dim);
    inv[i] = static_cast<float>(1.0 / std::pow(p.theta, static_cast<double>(exponent)));
  }
  if (p.scaling == RopeParams::Scaling::kLinear) {
    for (auto& f : inv) f = static_cast<float>(f / p.factor);
  } else if (p.scaling == RopeParams::Scaling::kLlama3) {
    // Llama 3.1: wavelengths longer than original_max/low_freq_factor are slowed by `factor`,
    // shorter than original_max/high_freq_factor kept, and the band between interpolated.
    const double low_wavelen = p.original_max_position / p.low_freq_factor;
    const double high_wavelen = p.original_max_position / p.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / p.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (p.original_max_position / wavelen - p.low_freq_factor) /
                              (p.high_freq_factor - p.low_freq_factor);
        f = static_cast<float>((1 - smooth) * f / p.factor + smooth * f);
      }
    }
  }
  return inv;
}

void apply_rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads,
                int64_t head_dim, const float* inv_freq) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_v(half), sin_v(half);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_v[i] - b * sin_v[i];
        v[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

}  // namespace shardserve::kernels::cpu
