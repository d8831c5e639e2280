// Full token sampling on the GPU (sample_rows in ops.h): the exact semantics of
// kernels/cpu/sampling.cc (penalties, greedy or temperature / top-k / top-p / min-p, inverse-CDF
// draw in id order with a caller-supplied uniform), so that a seeded request draws the same token
// whichever side samples it.
//
// Layout: logits float32 [rows, row_stride], the first `vocab` columns valid; per-row parameters
// SamplingRowParams [rows]; uniforms double [rows]; penalty histories in CSR form (ops.h:
// SamplingHistory); outputs tokens int32 [rows], logprobs float [rows]. The workspace (caller's,
// sampling_workspace_bytes) is carved as below, each part 256-byte aligned:
//   offsets        int32 [rows + 1]      segment r = [r * vocab, (r + 1) * vocab)
//   scores         float [rows, vocab]   penalised logits, id order (the sort's keys)
//   ids            int32 [rows, vocab]   0 .. vocab - 1 per row (the sort's values)
//   sorted_scores  float [rows, vocab]   scores, descending per row
//   sorted_ids     int32 [rows, vocab]   their ids (ties in ascending id: the sort is stable)
//   cub temp       the segmented sort's temporary storage
//
// Pipeline (three launches on one stream, nothing synchronised or allocated):
//   1. prepare: one block per row copies the logits into `scores` (-0 made +0, so that the radix
//      sort's key order equals float comparison), writes the ids and offsets, then applies the
//      penalties exactly as the CPU: the CTRL rule over the seen tokens, then (after a block
//      barrier) frequency / presence over the output counts, in float32 without contraction.
//      Each list must hold a token at most once (worker::Sampler's histories do): the tokens are
//      updated in parallel.
//   2. cub::DeviceSegmentedRadixSort::SortPairsDescending of (scores, ids) per row: stable, so
//      the order is the CPU's std::stable_sort by descending score, ties by ascending id.
//   3. select: one block per row. Raw log-softmax denominator of the unpenalised logits (double,
//      as cpu::describe_token). Greedy: argmax of the penalised scores, lowest id on ties.
//      Otherwise, in sorted order, with weight(s) = exp(s/T - max/T) in double: keep = top_k;
//      top_p: block scan of weight/total in tiles, the first prefix reaching top_p; min_p: the
//      first position whose weight is below min_p * weight0; kept_total = sum of the kept weights.
//      The kept set is then "ranks before the last kept (score, id)", a test on a token's own
//      score and id, so the draw needs no scatter: a block scan in id order of weight/kept_total
//      over the kept tokens gives the first token whose cumulative probability exceeds the
//      uniform (the last nonzero kept token when rounding leaves the sum under it).
//
// Differences from the CPU are only rounding: the GPU's double exp (1 ulp) and the order of its
// sums. A token can differ only when the uniform lies within ~1e-12 of a cumulative boundary.
// Not fast yet: a full sort per row and several passes over the sorted row (docs/cuda.md).
// The build's ptxas spill warning (24 bytes) is CUB's own segmented-sort kernel, not these.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <cfloat>
#include <climits>

#include "kernels/cuda/launchers.h"

namespace shardserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kItems = 4;  // per thread and scan tile
constexpr int kTile = kThreads * kItems;
constexpr std::size_t kAlign = 256;

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// The workspace's parts (layout above).
struct Workspace {
  int32_t* offsets = nullptr;
  float* scores = nullptr;
  int32_t* ids = nullptr;
  float* sorted_scores = nullptr;
  int32_t* sorted_ids = nullptr;
  void* sort_temp = nullptr;
  std::size_t sort_temp_bytes = 0;
  std::size_t total_bytes = 0;
};

cudaError_t sort_temp_bytes(int64_t rows, int64_t vocab, std::size_t& bytes) {
  bytes = 0;
  return cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(rows * vocab), static_cast<int>(rows),
      static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(nullptr));
}

// base == nullptr: only the sizes.
cudaError_t carve(void* base, int64_t rows, int64_t vocab, Workspace& ws) {
  const cudaError_t status = sort_temp_bytes(rows, vocab, ws.sort_temp_bytes);
  if (status != cudaSuccess) return status;
  const std::size_t n = static_cast<std::size_t>(rows * vocab);
  char* p = static_cast<char*>(base);
  std::size_t at = 0;
  auto take = [&](std::size_t bytes) {
    char* part = p == nullptr ? nullptr : p + at;
    at += align_up(bytes);
    return part;
  };
  ws.offsets = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * (rows + 1)));
  ws.scores = reinterpret_cast<float*>(take(sizeof(float) * n));
  ws.ids = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * n));
  ws.sorted_scores = reinterpret_cast<float*>(take(sizeof(float) * n));
  ws.sorted_ids = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * n));
  ws.sort_temp = take(ws.sort_temp_bytes);
  ws.total_bytes = at;
  return cudaSuccess;
}

__device__ __forceinline__ float plus_zero(float v) { return v == 0.0f ? 0.0f : v; }

// logits: [rows, row_stride]; params: [rows]; offsets: [rows + 1]; scores, ids: [rows, vocab].
// grid.x = rows.
__global__ void __launch_bounds__(kThreads)
    prepare_kernel(const float* __restrict__ logits, int vocab, int64_t row_stride,
                   const SamplingRowParams* __restrict__ params, SamplingHistory history,
                   int32_t* __restrict__ offsets, float* __restrict__ scores,
                   int32_t* __restrict__ ids) {
  const int r = blockIdx.x;
  const float* in = logits + static_cast<int64_t>(r) * row_stride;
  float* out = scores + static_cast<int64_t>(r) * vocab;
  int32_t* row_ids = ids + static_cast<int64_t>(r) * vocab;
  for (int c = threadIdx.x; c < vocab; c += kThreads) {
    out[c] = plus_zero(in[c]);
    row_ids[c] = c;
  }
  if (threadIdx.x == 0) {
    offsets[r] = r * vocab;
    if (r == static_cast<int>(gridDim.x) - 1) offsets[r + 1] = (r + 1) * vocab;
  }
  const SamplingRowParams p = params[r];  // the same for the whole block: uniform branches
  if (p.repetition_penalty != 1.0f && history.seen_offsets != nullptr) {
    __syncthreads();  // the copy above is visible to the block
    const int begin = history.seen_offsets[r], end = history.seen_offsets[r + 1];
    for (int i = begin + threadIdx.x; i < end; i += kThreads) {
      const int t = history.seen_tokens[i];
      if (t < 0 || t >= vocab) continue;
      const float v = out[t];
      // CTRL / transformers rule, rounded as the CPU (no contraction).
      out[t] = plus_zero(v < 0 ? __fmul_rn(v, p.repetition_penalty)
                               : __fdiv_rn(v, p.repetition_penalty));
    }
  }
  if ((p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) &&
      history.count_offsets != nullptr) {
    __syncthreads();  // the repetition penalty comes first, as on the CPU
    const int begin = history.count_offsets[r], end = history.count_offsets[r + 1];
    for (int i = begin + threadIdx.x; i < end; i += kThreads) {
      const int t = history.count_tokens[i];
      if (t < 0 || t >= vocab) continue;
      const int count = history.counts[i];
      // out[t] -= f * count + p * (count > 0), each operation rounded as the CPU's.
      const float penalty = __fadd_rn(__fmul_rn(p.frequency_penalty, __int2float_rn(count)),
                                      __fmul_rn(p.presence_penalty, count > 0 ? 1.0f : 0.0f));
      out[t] = plus_zero(__fsub_rn(out[t], penalty));
    }
  }
}

using BlockReduceD = cub::BlockReduce<double, kThreads>;
using BlockReduceF = cub::BlockReduce<float, kThreads>;
using BlockReduceI = cub::BlockReduce<int, kThreads>;
using BlockScanD = cub::BlockScan<double, kThreads>;

struct ScoreId {
  float score;
  int id;
};
using BlockReduceArg = cub::BlockReduce<ScoreId, kThreads>;

struct SelectShared {
  union {
    BlockReduceD::TempStorage reduce_d;
    BlockReduceF::TempStorage reduce_f;
    BlockReduceI::TempStorage reduce_i;
    BlockReduceArg::TempStorage reduce_arg;
    BlockScanD::TempStorage scan;
  } temp;  // one CUB primitive at a time
  double d;
  float f;
  int i;
};

// Block-wide reductions whose result every thread gets. Each ends with a barrier, so the next
// one may reuse the shared storage.
__device__ double block_sum(SelectShared& sh, double v) {
  const double total = BlockReduceD(sh.temp.reduce_d).Sum(v);
  if (threadIdx.x == 0) sh.d = total;
  __syncthreads();
  const double out = sh.d;
  __syncthreads();
  return out;
}

struct MaxF {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct MinI {
  __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};
struct MaxI {
  __device__ int operator()(int a, int b) const { return a > b ? a : b; }
};
// The larger score, the lower id on ties (torch.argmax, std::max_element). NaN never wins.
struct BetterScore {
  __device__ ScoreId operator()(const ScoreId& a, const ScoreId& b) const {
    if (b.score > a.score || (b.score == a.score && b.id < a.id)) return b;
    return a;
  }
};

__device__ float block_max(SelectShared& sh, float v) {
  const float m = BlockReduceF(sh.temp.reduce_f).Reduce(v, MaxF{});
  if (threadIdx.x == 0) sh.f = m;
  __syncthreads();
  const float out = sh.f;
  __syncthreads();
  return out;
}

template <typename Op>
__device__ int block_reduce_int(SelectShared& sh, int v, Op op) {
  const int m = BlockReduceI(sh.temp.reduce_i).Reduce(v, op);
  if (threadIdx.x == 0) sh.i = m;
  __syncthreads();
  const int out = sh.i;
  __syncthreads();
  return out;
}

// Inclusive scan of one tile (blocked: thread k holds items k*kItems ..); returns the tile's sum.
// Ends with a barrier.
__device__ double tile_scan(SelectShared& sh, double (&v)[kItems], double (&cum)[kItems]) {
  double aggregate;
  BlockScanD(sh.temp.scan).InclusiveSum(v, cum, aggregate);
  __syncthreads();
  return aggregate;
}

// The weight of a score as the CPU computes it: exp(s / T - max / T) in double.
__device__ __forceinline__ double weight_of(float s, double temperature, double max_scaled) {
  return exp(static_cast<double>(s) / temperature - max_scaled);
}

// logits: [rows, row_stride]; params, uniforms, tokens, logprobs: [rows];
// scores, sorted_scores, sorted_ids: [rows, vocab]. grid.x = rows.
__global__ void __launch_bounds__(kThreads)
    select_kernel(const float* __restrict__ logits, int vocab, int64_t row_stride,
                  const SamplingRowParams* __restrict__ params,
                  const double* __restrict__ uniforms, const float* __restrict__ all_scores,
                  const float* __restrict__ all_sorted, const int32_t* __restrict__ all_sorted_ids,
                  int32_t* __restrict__ tokens, float* __restrict__ logprobs) {
  __shared__ SelectShared sh;
  const int r = blockIdx.x;
  const float* raw = logits + static_cast<int64_t>(r) * row_stride;
  const float* scores = all_scores + static_cast<int64_t>(r) * vocab;
  const float* sorted = all_sorted + static_cast<int64_t>(r) * vocab;
  const int32_t* sorted_ids = all_sorted_ids + static_cast<int64_t>(r) * vocab;
  const SamplingRowParams p = params[r];

  // Raw log-softmax denominator (cpu::describe_token): max in float, sum of exp in double.
  float local_max = -INFINITY;
  for (int c = threadIdx.x; c < vocab; c += kThreads) local_max = fmaxf(local_max, raw[c]);
  const float max_logit = block_max(sh, local_max);
  double local_sum = 0;
  for (int c = threadIdx.x; c < vocab; c += kThreads) {
    local_sum += exp(static_cast<double>(raw[c]) - static_cast<double>(max_logit));
  }
  const double log_denom = log(block_sum(sh, local_sum)) + static_cast<double>(max_logit);

  int token = 0;
  if (p.greedy != 0 || p.temperature == 0.0f) {
    ScoreId best{-INFINITY, INT_MAX};
    for (int c = threadIdx.x; c < vocab; c += kThreads) best = BetterScore{}(best, {scores[c], c});
    best = BlockReduceArg(sh.temp.reduce_arg).Reduce(best, BetterScore{});
    if (threadIdx.x == 0) sh.i = best.id == INT_MAX ? 0 : best.id;  // all NaN: token 0
    __syncthreads();
    token = sh.i;
    __syncthreads();
  } else {
    const double temperature = static_cast<double>(p.temperature);
    const double max_scaled = static_cast<double>(sorted[0]) / temperature;
    int keep = vocab;
    if (p.top_k > 0) keep = min(keep, p.top_k);

    if (p.top_p < 1.0f) {
      // Smallest prefix (in sorted order) whose probability reaches top_p, at least one token.
      double local = 0;
      for (int i = threadIdx.x; i < keep; i += kThreads) {
        local += weight_of(sorted[i], temperature, max_scaled);
      }
      const double total = block_sum(sh, local);
      const double top_p = static_cast<double>(p.top_p);
      double prefix = 0;
      int cut = keep;
      for (int base = 0; base < keep; base += kTile) {
        double v[kItems], cum[kItems];
#pragma unroll
        for (int j = 0; j < kItems; ++j) {
          const int i = base + threadIdx.x * kItems + j;
          v[j] = i < keep ? weight_of(sorted[i], temperature, max_scaled) / total : 0.0;
        }
        const double aggregate = tile_scan(sh, v, cum);
        int found = INT_MAX;
#pragma unroll
        for (int j = 0; j < kItems; ++j) {
          const int i = base + threadIdx.x * kItems + j;
          if (found == INT_MAX && i < keep && prefix + cum[j] >= top_p) found = i;
        }
        found = block_reduce_int(sh, found, MinI{});
        if (found != INT_MAX) {  // the same on every thread: the block leaves together
          cut = found + 1;
          break;
        }
        prefix += aggregate;
      }
      keep = cut;
    }

    if (p.min_p > 0.0f) {
      // The first position after 0 whose weight is below min_p * weight0 ends the kept prefix.
      const double threshold =
          static_cast<double>(p.min_p) * weight_of(sorted[0], temperature, max_scaled);
      int first_below = keep;
      for (int i = 1 + threadIdx.x; i < keep; i += kThreads) {
        if (!(weight_of(sorted[i], temperature, max_scaled) >= threshold)) {
          first_below = i;
          break;
        }
      }
      keep = block_reduce_int(sh, first_below, MinI{});
    }

    double local = 0;
    for (int i = threadIdx.x; i < keep; i += kThreads) {
      local += weight_of(sorted[i], temperature, max_scaled);
    }
    const double kept_total = block_sum(sh, local);

    // Kept = ranks before or at the last kept (score, id) in (descending score, ascending id).
    const float last_score = sorted[keep - 1];
    const int last_id = sorted_ids[keep - 1];
    auto prob_of = [&](int t) -> double {
      const float s = scores[t];
      if (s > last_score || (s == last_score && t <= last_id)) {
        return weight_of(s, temperature, max_scaled) / kept_total;
      }
      return 0.0;
    };

    // Inverse CDF in id order.
    const double u = uniforms[r];
    double prefix = 0;
    int chosen = INT_MAX;
    for (int base = 0; base < vocab; base += kTile) {
      double v[kItems], cum[kItems];
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        const int t = base + threadIdx.x * kItems + j;
        v[j] = t < vocab ? prob_of(t) : 0.0;
      }
      const double aggregate = tile_scan(sh, v, cum);
      int found = INT_MAX;
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        const int t = base + threadIdx.x * kItems + j;
        if (found == INT_MAX && v[j] != 0.0 && u < prefix + cum[j]) found = t;
      }
      found = block_reduce_int(sh, found, MinI{});
      if (found != INT_MAX) {
        chosen = found;
        break;
      }
      prefix += aggregate;
    }
    if (chosen == INT_MAX) {
      // Rounding left the sum just under the draw: the last token of nonzero probability.
      int last = 0;
      for (int t = threadIdx.x; t < vocab; t += kThreads) {
        if (prob_of(t) != 0.0) last = max(last, t);
      }
      chosen = block_reduce_int(sh, last, MaxI{});
    }
    token = chosen;
  }

  if (threadIdx.x == 0) {
    tokens[r] = token;
    logprobs[r] = static_cast<float>(static_cast<double>(raw[token]) - log_denom);
  }
}

}  // namespace

namespace launch {

cudaError_t sampling_workspace_bytes(int64_t rows, int64_t vocab, std::size_t& bytes) {
  Workspace ws;
  const cudaError_t status = carve(nullptr, rows, vocab, ws);
  bytes = ws.total_bytes;
  return status;
}

cudaError_t sample_rows(const float* logits, int64_t rows, int64_t vocab, int64_t row_stride,
                        const SamplingRowParams* params, const SamplingHistory& history,
                        const double* uniforms, int32_t* tokens, float* logprobs,
                        void* workspace, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  Workspace ws;
  cudaError_t status = carve(workspace, rows, vocab, ws);
  if (status != cudaSuccess) return status;
  const int v = static_cast<int>(vocab);
  const unsigned grid = static_cast<unsigned>(rows);
  prepare_kernel<<<grid, kThreads, 0, stream>>>(logits, v, row_stride, params, history,
                                                ws.offsets, ws.scores, ws.ids);
  status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  std::size_t temp_bytes = ws.sort_temp_bytes;
  status = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      ws.sort_temp, temp_bytes, ws.scores, ws.sorted_scores, ws.ids, ws.sorted_ids,
      static_cast<int>(rows * vocab), static_cast<int>(rows),
      static_cast<const int32_t*>(ws.offsets), static_cast<const int32_t*>(ws.offsets + 1), 0,
      static_cast<int>(sizeof(float) * 8), stream);
  if (status != cudaSuccess) return status;
  select_kernel<<<grid, kThreads, 0, stream>>>(logits, v, row_stride, params, uniforms,
                                               ws.scores, ws.sorted_scores, ws.sorted_ids,
                                               tokens, logprobs);
  return cudaGetLastError();
}

}  // namespace launch
}  // namespace shardserve::kernels::cuda
