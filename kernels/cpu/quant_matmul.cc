#include "kernels/cpu/quant_matmul.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"
#include "kernels/cpu/lanes.h"

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

// codes of stored columns [b, b + len) of one row as floats; 4-bit: two per byte, low nibble
// first (an odd b starts on a high nibble).
[[gnu::always_inline]] inline void unpack(const uint8_t* row, int bits, int64_t b, int64_t len,
                                          float* out) {
  if (bits == 8) {
    for (int64_t i = 0; i < len; ++i) out[i] = row[b + i];
    return;
  }
  int64_t i = 0;
  if (b % 2 == 1 && len > 0) out[i++] = static_cast<float>(row[b / 2] >> 4);
  const uint8_t* bytes = row + (b + i) / 2;
  const int64_t pairs = (len - i) / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    out[i + 2 * p] = static_cast<float>(bytes[p] & 0xf);
    out[i + 2 * p + 1] = static_cast<float>(bytes[p] >> 4);
  }
  i += 2 * pairs;
  if (i < len) out[i] = static_cast<float>(row[(b + i) / 2] & 0xf);
}

constexpr int kTileCols = 4;

// Weight rows [j, j + C) against every x row, group by group: the group's codes of the C rows are
// unpacked once into floats (codes: C x len), then every x row tile takes its C x R dot products
// from them (lanes.h), each scaled into acc as scale * (codes · x_g - zero * sum(x_g)).
// xp: [m, k] permuted x; sums: [m, groups]; codes: scratch of C x the longest group; acc:
// scratch [m, C].
template <int C>
[[gnu::always_inline]] inline void quant_block(const float* xp, const float* sums,
                                               const QuantMatrix& w, float* y, int64_t m,
                                               int64_t j, float* codes, float* acc) {
  const int64_t G = w.groups(), k = w.k, n = w.n;
  for (int64_t i = 0; i < m * C; ++i) acc[i] = 0.0f;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t b = w.group_begin[g], len = w.group_begin[g + 1] - b;
    for (int c = 0; c < C; ++c)
      unpack(w.codes.data() + (j + c) * w.row_bytes(), w.bits, b, len, codes + c * len);
    lanes::row_tiles(m, [&]<int R>(int64_t r) __attribute__((always_inline)) {
      float d[R * C];
      lanes::dot_tile<R, C>(xp + r * k + b, k, codes, len, len, d, C, nullptr);
      for (int i = 0; i < R; ++i)
        for (int c = 0; c < C; ++c) {
          const float scale = w.scales[(j + c) * G + g], zero = w.zeros[(j + c) * G + g];
          acc[(r + i) * C + c] += scale * (d[i * C + c] - zero * sums[(r + i) * G + g]);
        }
    });
  }
  for (int64_t r = 0; r < m; ++r)
    for (int c = 0; c < C; ++c) y[r * n + j + c] = acc[r * C + c];
}

}  // namespace

void quant_matmul_nt(const float* x, const QuantMatrix& w, float* y, int64_t m) {
  const int64_t G = w.groups(), k = w.k, n = w.n;
  std::vector<float> xp(m * k), sums(m * G);
  int64_t longest = 0;
  for (int64_t g = 0; g < G; ++g)
    longest = std::max(longest, w.group_begin[g + 1] - w.group_begin[g]);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < k; ++c) xp[r * k + c] = x[r * k + w.perm[c]];
    for (int64_t g = 0; g < G; ++g) {
      float s = 0;
      for (int64_t c = w.group_begin[g]; c < w.group_begin[g + 1]; ++c) s += xp[r * k + c];
      sums[r * G + g] = s;
    }
  }
  const int64_t blocks = n / kTileCols;
#pragma omp parallel if (m * n * k > (1 << 18))
  {
    std::vector<float> codes(kTileCols * longest), acc(m * kTileCols);
#pragma omp for schedule(static)
    for (int64_t bl = 0; bl < blocks; ++bl)
      lanes::dispatch([&]() __attribute__((always_inline)) {
        quant_block<kTileCols>(xp.data(), sums.data(), w, y, m, bl * kTileCols, codes.data(),
                               acc.data());
      });
#pragma omp single
    for (int64_t j = blocks * kTileCols; j < n; ++j)
      lanes::dispatch([&]() __attribute__((always_inline)) {
        quant_block<1>(xp.data(), sums.data(), w, y, m, j, codes.data(), acc.data());
      });
  }
}

std::vector<float> dequantize(const QuantMatrix& w) {
  std::vector<float> out(w.n * w.k);
  const int64_t G = w.groups();
  std::vector<float> codes(w.k);
  for (int64_t j = 0; j < w.n; ++j) {
    unpack(w.codes.data() + j * w.row_bytes(), w.bits, 0, w.k, codes.data());
    for (int64_t g = 0; g < G; ++g)
      for (int64_t c = w.group_begin[g]; c < w.group_begin[g + 1]; ++c)
        out[j * w.k + w.perm[c]] = w.scales[j * G + g] * (codes[c] - w.zeros[j * G + g]);
  }
  return out;
}

}  // namespace shardserve::kernels::cpu
