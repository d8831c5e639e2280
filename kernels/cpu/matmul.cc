#include "kernels/cpu/matmul.h"

#include "kernels/cpu/lanes.h"

// Blocking. The output is cut into tiles of 4 x rows (the last tile takes the 1-3 left; lanes.h:
// row_tiles) by kTileCols weight rows (dot_tile); a tile's 16 accumulators stay in registers
// while k is walked once, so each weight vector loaded feeds 4 products and each x vector
// kTileCols (the old one-row kernel did 5 loads per 4 products and was load-bound as soon as a
// step had more than one sequence). 4 x 4 measured faster than 2 x 4 and 4 x 2 at 4 and 16 rows
// (docs/PERF.md, "The CPU projections, tiled"). Threads split the weight rows; a thread's 4
// weight rows (4 x k floats) stay in L1 while every x row passes by. The summation order, and
// so the bits, are lanes.h's: the same for any m, tile position, thread count or machine.

namespace shardserve::kernels::cpu {
namespace {

constexpr int kTileCols = 4;

// Weight rows [j, j + C) against every x row. The first tile waits on memory for these weights
// (the later ones find them in L1), so it fetches the next block's meanwhile: without that, at
// 16 rows the step spent as long waiting as computing.
template <int C>
[[gnu::always_inline]] inline void column_block(const float* x, const float* w, float* y,
                                                int64_t m, int64_t n, int64_t k, int64_t j) {
  const float* next = j + 2 * C <= n ? w + (j + C) * k : nullptr;
  const float* wj = w + j * k;
  lanes::row_tiles(m, [&]<int R>(int64_t r) __attribute__((always_inline)) {
    lanes::dot_tile<R, C>(x + r * k, k, wj, k, k, y + r * n + j, n, r == 0 ? next : nullptr);
  });
}

// Weight rows [j0, j1): blocks of kTileCols, then single rows for what is left.
[[gnu::always_inline]] inline void columns(const float* x, const float* w, float* y, int64_t m,
                                           int64_t n, int64_t k, int64_t j0, int64_t j1) {
  int64_t j = j0;
  for (; j + kTileCols <= j1; j += kTileCols) column_block<kTileCols>(x, w, y, m, n, k, j);
  for (; j < j1; ++j) column_block<1>(x, w, y, m, n, k, j);
}

}  // namespace

void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k) {
  const int64_t blocks = n / kTileCols;
#pragma omp parallel for schedule(static) if (m * n * k > (1 << 18))
  for (int64_t b = 0; b < blocks; ++b)
    lanes::dispatch([&]() __attribute__((always_inline)) {
      columns(x, w, y, m, n, k, b * kTileCols, (b + 1) * kTileCols);
    });
  if (blocks * kTileCols < n)
    lanes::dispatch([&]() __attribute__((always_inline)) {
      columns(x, w, y, m, n, k, blocks * kTileCols, n);
    });
}

}  // namespace shardserve::kernels::cpu
