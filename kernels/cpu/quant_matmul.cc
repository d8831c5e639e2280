#include "kernels/cpu/quant_matmul.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace shardserve::kernels::cpu {

int64_t QuantMatrix::bytes() const {
  return static_cast<int64_t>(codes.size() + (scales.size() + zeros.size()) * sizeof(float) +
                              perm.size() * sizeof(int32_t));
}

QuantMatrix make_quant_matrix(int bits, int64_t n, int64_t k, const uint8_t* q,
                              const int32_t* zeros, const float* scales, const int32_t* g_idx,
                              int64_t groups) {
  require(bits == 4 || bits == 8, "quant matrix: bits {} is not 4 or 8", bits);
  require(n > 0 && k > 0 && groups > 0, "quant matrix: shape [{}, {}] with {} groups", n, k,
          groups);
  QuantMatrix w;
  w.bits = bits;
  w.n = n;
  w.k = k;
  w.perm.resize(k);
  std::iota(w.perm.begin(), w.perm.end(), 0);
  for (int64_t i = 0; i < k; ++i) {
    require(g_idx[i] >= 0 && g_idx[i] < groups, "quant matrix: g_idx[{}] = {} outside [0, {})", i,
            g_idx[i], groups);
  }
  std::stable_sort(w.perm.begin(), w.perm.end(),
                   [&](int32_t a, int32_t b) { return g_idx[a] < g_idx[b]; });
  w.group_begin.assign(groups + 1, 0);
  for (int64_t i = 0; i < k; ++i) ++w.group_begin[g_idx[i] + 1];
  for (int64_t g = 0; g < groups; ++g) w.group_begin[g + 1] += w.group_begin[g];
  w.codes.assign(n * w.row_bytes(), 0);
  const int32_t max = (1 << bits) - 1;
  for (int64_t j = 0; j < n; ++j) {
    uint8_t* row = w.codes.data() + j * w.row_bytes();
    for (int64_t c = 0; c < k; ++c) {
      const uint8_t v = q[j * k + w.perm[c]];
      require(v <= max, "quant matrix: code {} exceeds {} bits", v, bits);
      if (bits == 8) {
        row[c] = v;
      } else {
        row[c / 2] |= static_cast<uint8_t>(c % 2 == 0 ? v : v << 4);
      }
    }
  }
  w.scales.resize(n * groups);
  w.zeros.resize(n * groups);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < n; ++j) {
      w.scales[j * groups + g] = scales[g * n + j];
      w.zeros[j * groups + g] = static_cast<float>(zeros[g * n + j]);
    }
  return w;
}

namespace {

inline float code_at(const uint8_t* row, int bits, int64_t c) {
  if (bits == 8) return row[c];
  return static_cast<float>(c % 2 == 0 ? row[c / 2] & 0xf : row[c / 2] >> 4);
}

// sum over stored columns [b, e) of code * x, for a 4-bit row: two columns per byte.
inline float dot4(const uint8_t* row, const float* x, int64_t b, int64_t e) {
  float acc = 0;
  int64_t c = b;
  if (c % 2 == 1 && c < e) acc += static_cast<float>(row[c / 2] >> 4) * x[c], ++c;
  const int64_t pairs_end = c + (e - c) / 2 * 2;
#pragma omp simd reduction(+ : acc)
  for (int64_t p = c; p < pairs_end; p += 2) {
    const uint8_t byte = row[p / 2];
    acc += static_cast<float>(byte & 0xf) * x[p] + static_cast<float>(byte >> 4) * x[p + 1];
  }
  if (pairs_end < e) acc += static_cast<float>(row[pairs_end / 2] & 0xf) * x[pairs_end];
  return acc;
}

inline float dot8(const uint8_t* row, const float* x, int64_t b, int64_t e) {
  float acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t c = b; c < e; ++c) acc += static_cast<float>(row[c]) * x[c];
  return acc;
}

}  // namespace

void quant_matmul_nt(const float* x, const QuantMatrix& w, float* y, int64_t m) {
  const int64_t G = w.groups(), k = w.k, n = w.n;
  std::vector<float> xp(m * k), sums(m * G);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < k; ++c) xp[r * k + c] = x[r * k + w.perm[c]];
    for (int64_t g = 0; g < G; ++g) {
      float s = 0;
      for (int64_t c = w.group_begin[g]; c < w.group_begin[g + 1]; ++c) s += xp[r * k + c];
      sums[r * G + g] = s;
    }
  }
#pragma omp parallel for schedule(static) if (m * n * k > (1 << 18))
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = w.codes.data() + j * w.row_bytes();
    const float* sc = w.scales.data() + j * G;
    const float* zr = w.zeros.data() + j * G;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = xp.data() + r * k;
      float acc = 0;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t b = w.group_begin[g], e = w.group_begin[g + 1];
        const float d = w.bits == 4 ? dot4(row, xr, b, e) : dot8(row, xr, b, e);
        acc += sc[g] * (d - zr[g] * sums[r * G + g]);
      }
      y[r * n + j] = acc;
    }
  }
}

std::vector<float> dequantize(const QuantMatrix& w) {
  std::vector<float> out(w.n * w.k);
  const int64_t G = w.groups();
  for (int64_t j = 0; j < w.n; ++j) {
    const uint8_t* row = w.codes.data() + j * w.row_bytes();
    for (int64_t g = 0; g < G; ++g)
      for (int64_t c = w.group_begin[g]; c < w.group_begin[g + 1]; ++c)
        out[j * w.k + w.perm[c]] =
            w.scales[j * G + g] * (code_at(row, w.bits, c) - w.zeros[j * G + g]);
  }
  return out;
}

}  // namespace shardserve::kernels::cpu
