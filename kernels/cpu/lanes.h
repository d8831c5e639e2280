#pragma once
// Internal to kernels/cpu: the register-tiled dot products that matmul.cc and quant_matmul.cc
// are built from, and the choice between their AVX2 and x86-64 baseline builds.
//
// Summation order, the same on every machine. A dot product of length len is kLanes partial
// sums (lane l takes i = l mod 8 for i < len rounded down to 8), combined by one fixed tree, then
// the len % 8 tail in order. GCC vector extensions fix that order in the code, not in the
// compiler's choice of vector width, and the files that include this are built with
// -ffp-contract=off (kernels/CMakeLists.txt), so the AVX2 build and the baseline give the same
// bits, as do any tile shape and position.
#include <cstdint>
#include <cstring>

namespace shardserve::kernels::cpu::lanes {

constexpr int kLanes = 8;
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));

// Lanes travel by reference: the baseline ABI has no 32-byte register to pass them in.
[[gnu::always_inline]] inline void load(Lanes& v, const float* p) { std::memcpy(&v, p, sizeof v); }

[[gnu::always_inline]] inline float finish(const Lanes& a, const float* x, const float* w,
                                           int64_t len8, int64_t len) {
  float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
  for (int64_t i = len8; i < len; ++i) s += x[i] * w[i];
  return s;
}

// out[r * ldo + c] = x_r · w_c over len elements, for R x rows (stride ldx) and C weight rows
// (stride ldw): a tile's R x C accumulators stay in registers while len is walked once.
// next: C x len contiguous floats another tile reads next, fetched into cache meanwhile (C lines'
// worth per kLanes elements: all of it by the loop's end), or nullptr.
template <int R, int C>
[[gnu::always_inline]] inline void dot_tile(const float* x, int64_t ldx, const float* w,
                                            int64_t ldw, int64_t len, float* out, int64_t ldo,
                                            const float* next) {
  Lanes acc[R][C] = {};
  const int64_t len8 = len / kLanes * kLanes;
  for (int64_t i = 0; i < len8; i += kLanes) {
    if (next) {
      __builtin_prefetch(next + C * i);
      if constexpr (C * kLanes * sizeof(float) > 64) __builtin_prefetch(next + C * i + 16);
    }
    Lanes wv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) load(wv[c], w + c * ldw + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      Lanes xv;
      load(xv, x + r * ldx + i);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] += xv * wv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      out[r * ldo + c] = finish(acc[r][c], x + r * ldx, w + c * ldw, len8, len);
}

// Calls tile.template operator()<R>(r) over m rows of x in tiles of R = 4 from r = 0, then once
// with R = 1, 2 or 3 for the rows left, so that every weight vector a tile loads serves all of
// them. tile: a lambda template [&]<int R>(int64_t r).
template <typename Tile>
[[gnu::always_inline]] inline void row_tiles(int64_t m, const Tile& tile) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) tile.template operator()<4>(r);
  switch (m - r) {
    case 3: return tile.template operator()<3>(r);
    case 2: return tile.template operator()<2>(r);
    case 1: return tile.template operator()<1>(r);
  }
}

// Runs f (an always_inline lambda, so that it is compiled into the caller) in the AVX2 build
// where the CPU has AVX2, else in the baseline one. Chosen per call from the CPU's flags, not by
// an ifunc at load: an ifunc resolver runs during relocation, before a sanitizer's runtime is up,
// and TSan's instrumented resolver crashed every binary at start.
template <typename F>
void baseline(const F& f) {
  f();
}
#if defined(__x86_64__)
template <typename F>
[[gnu::target("avx2")]] void avx2(const F& f) {
  f();
}
template <typename F>
void dispatch(const F& f) {
  if (__builtin_cpu_supports("avx2")) return avx2(f);
  baseline(f);
}
#else
template <typename F>
void dispatch(const F& f) {
  baseline(f);
}
#endif

}  // namespace shardserve::kernels::cpu::lanes
