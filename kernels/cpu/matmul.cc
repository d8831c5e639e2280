#include "kernels/cpu/matmul.h"

#include <cstring>

// Blocking. The output is cut into tiles of kTileRows x rows (the last tile takes the 1-3 left)
// by kTileCols weight rows; a tile's 16 accumulators stay in registers while k is walked once,
// so each weight vector loaded feeds kTileRows products and each x vector kTileCols (the old
// one-row kernel did 5 loads per 4 products and was load-bound as soon as a step had more than
// one sequence). 4 x 4 measured faster than 2 x 4 and 4 x 2 at 4 and 16 rows (docs/PERF.md,
// "The CPU projections, tiled"). Threads split the weight rows; a thread's 4 weight rows
// (4 x k floats) stay in L1 while every x row passes by.
//
// Summation order, the same on every machine. y[r][j] is kLanes partial sums (lane l takes
// i = l mod 8 for i < k rounded down to 8), combined by one fixed tree, then the k % 8 tail in
// order. GCC vector extensions fix that order in the code, not in the compiler's choice of
// vector width, and the file is built with -ffp-contract=off (kernels/CMakeLists.txt), so the
// AVX2 build and the baseline one give the same bits, as do any m, any tile position and any
// number of threads.

namespace shardserve::kernels::cpu {
namespace {

constexpr int kLanes = 8;
constexpr int kTileRows = 4;
constexpr int kTileCols = 4;
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));

// Lanes travel by reference: the baseline ABI has no 32-byte register to pass them in.
[[gnu::always_inline]] inline void load(Lanes& v, const float* p) { std::memcpy(&v, p, sizeof v); }

[[gnu::always_inline]] inline float finish(const Lanes& a, const float* x, const float* w,
                                           int64_t k8, int64_t k) {
  float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
  for (int64_t i = k8; i < k; ++i) s += x[i] * w[i];
  return s;
}

// x: [R, k] (row stride k); w: [C, k] (row stride k); y: [R, C] at row stride ldy.
// next: the C x k weights the following block reads (contiguous), fetched into cache while this
// tile computes, or nullptr.
template <int R, int C>
[[gnu::always_inline]] inline void tile(const float* x, const float* w, float* y, int64_t ldy,
                                        int64_t k, const float* next) {
  Lanes acc[R][C] = {};
  const int64_t k8 = k / kLanes * kLanes;
  for (int64_t i = 0; i < k8; i += kLanes) {
    if (next) {
      // C lines' worth of the next block per kLanes of this one: all of it by the loop's end.
      __builtin_prefetch(next + C * i);
      if constexpr (C * kLanes * sizeof(float) > 64) __builtin_prefetch(next + C * i + 16);
    }
    Lanes wv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) load(wv[c], w + c * k + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      Lanes xv;
      load(xv, x + r * k + i);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] += xv * wv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = finish(acc[r][c], x + r * k, w + c * k, k8, k);
}

// Weight rows [j, j + C) against every x row. The first tile waits on memory for these weights
// (the later ones find them in L1), so it fetches the next block's meanwhile: without that, at
// 16 rows the step spent as long waiting as computing.
template <int C>
[[gnu::always_inline]] inline void column_block(const float* x, const float* w, float* y,
                                                int64_t m, int64_t n, int64_t k, int64_t j) {
  const float* next = j + 2 * C <= n ? w + (j + C) * k : nullptr;
  int64_t r = 0;
  for (; r + kTileRows <= m; r += kTileRows, next = nullptr)
    tile<kTileRows, C>(x + r * k, w + j * k, y + r * n + j, n, k, next);
  switch (m - r) {  // the rest in one tile, so that each weight vector is loaded once for it
    case 3: return tile<3, C>(x + r * k, w + j * k, y + r * n + j, n, k, next);
    case 2: return tile<2, C>(x + r * k, w + j * k, y + r * n + j, n, k, next);
    case 1: return tile<1, C>(x + r * k, w + j * k, y + r * n + j, n, k, next);
  }
}

// Weight rows [j0, j1): blocks of kTileCols, then single rows for what is left.
[[gnu::always_inline]] inline void columns(const float* x, const float* w, float* y, int64_t m,
                                           int64_t n, int64_t k, int64_t j0, int64_t j1) {
  int64_t j = j0;
  for (; j + kTileCols <= j1; j += kTileCols) column_block<kTileCols>(x, w, y, m, n, k, j);
  for (; j < j1; ++j) column_block<1>(x, w, y, m, n, k, j);
}

using ColumnsFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                           int64_t);

// The same code built twice: for the x86-64 baseline (4-wide SSE, two instructions per Lanes op)
// and for AVX2 (one). The CPU's flags pick one per call rather than an ifunc at load: an ifunc
// resolver runs during relocation, before a sanitizer's runtime is up, and TSan's instrumented
// resolver crashed every binary at start.
void columns_baseline(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
                      int64_t j0, int64_t j1) {
  columns(x, w, y, m, n, k, j0, j1);
}
#if defined(__x86_64__)
[[gnu::target("avx2")]] void columns_avx2(const float* x, const float* w, float* y, int64_t m,
                                          int64_t n, int64_t k, int64_t j0, int64_t j1) {
  columns(x, w, y, m, n, k, j0, j1);
}
ColumnsFn pick_columns() { return __builtin_cpu_supports("avx2") ? columns_avx2 : columns_baseline; }
#else
ColumnsFn pick_columns() { return columns_baseline; }
#endif

}  // namespace

void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k) {
  const ColumnsFn run = pick_columns();
  const int64_t blocks = n / kTileCols;
#pragma omp parallel for schedule(static) if (m * n * k > (1 << 18))
  for (int64_t b = 0; b < blocks; ++b)
    run(x, w, y, m, n, k, b * kTileCols, (b + 1) * kTileCols);
  if (blocks * kTileCols < n) run(x, w, y, m, n, k, blocks * kTileCols, n);
}

}  // namespace shardserve::kernels::cpu
