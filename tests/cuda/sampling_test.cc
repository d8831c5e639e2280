// kernels/cuda sample_rows against kernels/cpu/sampling (sample_token) on fresh random logits
// (seed printed; SHARDSERVE_TEST_SEED replays), for vocabularies from 1 to 128256, 1 .. 64 rows
// and every parameter combination per row (greedy, temperature only, top-k, top-p, min-p, all
// together, penalties with histories), with ties in the logits and outputs poisoned before the
// run. The token must equal the CPU's with the same uniform, except where the uniform lies
// within 1e-9 (relative) of a cumulative boundary of the CPU's distribution (counted and
// printed: the GPU sums in another order); the logprob within 1e-5. Also: a CUDA graph capture
// of the op replays equal to eager calls, and the host-side refusals (no GPU needed).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cuda/ops.h"
#include "messages/sampling_params.h"
#include "tests/cuda/cuda_test_util.h"

namespace shardserve::kernels::cuda {
namespace {

using namespace shardserve::kernels::cuda::testing;

// The parameter combinations every case cycles through, row by row.
enum class Mode {
  kGreedy,
  kTemperature,
  kTopK,
  kTopP,
  kMinP,
  kAll,
  kGreedyPenalties,
  kPenalties,
  kAllPenalties,
  kCount
};

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kGreedy: return "greedy";
    case Mode::kTemperature: return "temperature";
    case Mode::kTopK: return "top_k";
    case Mode::kTopP: return "top_p";
    case Mode::kMinP: return "min_p";
    case Mode::kAll: return "all";
    case Mode::kGreedyPenalties: return "greedy+penalties";
    case Mode::kPenalties: return "temperature+penalties";
    case Mode::kAllPenalties: return "all+penalties";
    case Mode::kCount: break;
  }
  return "?";
}

class CudaSampling : public ::testing::Test {
 protected:
  void SetUp() override {
    SHARDSERVE_REQUIRE_GPU();
    stream_.emplace();
    seed_ = input_seed();
    rng_.seed(seed_);
  }
  cudaStream_t s() { return stream_->get(); }
  double uniform01() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng_); }

  messages::SamplingParams make_params(Mode mode, int64_t vocab) {
    messages::SamplingParams p;
    const bool penalties = mode == Mode::kGreedyPenalties || mode == Mode::kPenalties ||
                           mode == Mode::kAllPenalties;
    const bool all = mode == Mode::kAll || mode == Mode::kAllPenalties;
    p.temperature = (mode == Mode::kGreedy || mode == Mode::kGreedyPenalties)
                        ? 0.0f
                        : uniform(0.2f, 1.6f);
    if (mode == Mode::kTopK || all) {
      // Sometimes more than the vocabulary (no cut), sometimes 1 (greedy through the filter).
      const int64_t choice = rng_() % 4;
      p.top_k = static_cast<int32_t>(choice == 0 ? 1 : choice == 1 ? vocab + 5
                                                                   : 1 + rng_() % 64);
    }
    if (mode == Mode::kTopP || all) p.top_p = uniform(0.05f, 0.99f);
    if (mode == Mode::kMinP || all) p.min_p = uniform(0.001f, 0.3f);
    if (penalties) {
      p.repetition_penalty = rng_() % 4 == 0 ? uniform(0.7f, 0.99f) : uniform(1.05f, 1.8f);
      p.frequency_penalty = uniform(-0.5f, 1.5f);
      p.presence_penalty = uniform(-0.5f, 1.5f);
    }
    return p;
  }

  // Unique seen tokens (the row's largest logits among them, so the penalties matter) and
  // output counts for a subset of them.
  cpu::PenaltyHistory make_history(const float* row, int64_t vocab) {
    cpu::PenaltyHistory h;
    const int64_t n = std::min<int64_t>(vocab, 1 + rng_() % 300);
    std::vector<int32_t> ids(vocab);
    std::iota(ids.begin(), ids.end(), 0);
    const int64_t top = std::min<int64_t>(vocab, 8);
    std::partial_sort(ids.begin(), ids.begin() + top, ids.end(),
                      [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    std::shuffle(ids.begin() + top, ids.end(), rng_);
    h.seen_tokens.assign(ids.begin(), ids.begin() + n);
    std::shuffle(h.seen_tokens.begin(), h.seen_tokens.end(), rng_);
    for (int32_t t : h.seen_tokens) {
      if (rng_() % 2 == 0) h.output_counts.emplace_back(t, static_cast<int32_t>(1 + rng_() % 6));
    }
    return h;
  }

  uint32_t seed_ = 0;
  std::mt19937 rng_;

 private:
  std::optional<Stream> stream_;
};

// Whether u lies within 1e-9 (relative) of a cumulative boundary of the CPU's distribution
// (cumulated in id order, as the draw does).
bool near_boundary(const std::vector<double>& probs, double u) {
  double cumulative = 0;
  for (double p : probs) {
    if (p == 0.0) continue;
    cumulative += p;
    if (std::abs(u - cumulative) <= 1e-9 * cumulative) return true;
  }
  return false;
}

struct CaseCounts {
  int64_t rows = 0;
  int64_t near_boundary = 0;     // rows whose uniform lies at a boundary
  int64_t excused_mismatch = 0;  // of those, rows whose token differed
};

TEST_F(CudaSampling, SampleRowsMatchesCpuSampleToken) {
  struct Case {
    int64_t vocab, rows;
  };
  const Case cases[] = {{1, 1},    {2, 3},     {7, 64},    {61, 17},     {1000, 64},
                        {4099, 33}, {32000, 9}, {50257, 2}, {128256, 1}, {128256, 64}};
  CaseCounts total;
  int case_index = 0;
  for (const Case c : cases) {
    const int64_t stride = c.vocab + static_cast<int64_t>(rng_() % 5);
    std::vector<float> logits = random_floats(c.rows * stride, rng_, 3.0f);
    std::vector<messages::SamplingParams> params(c.rows);
    std::vector<cpu::PenaltyHistory> histories(c.rows);
    std::vector<double> uniforms(c.rows);
    std::vector<Mode> modes(c.rows);
    for (int64_t r = 0; r < c.rows; ++r) {
      float* row = logits.data() + r * stride;
      // Ties: every fourth row is quantised to steps of 0.5 (many equal scores, so the sorted
      // order inside a tie and the top-k / top-p cut through one matter); every seventh row is
      // constant; others get an exact tie at the top.
      if (r % 4 == 1) {
        for (int64_t t = 0; t < c.vocab; ++t) row[t] = std::round(row[t] * 2.0f) / 2.0f;
      } else if (r % 7 == 3) {
        std::fill(row, row + c.vocab, 0.25f);
      } else if (r % 4 == 2 && c.vocab > 2) {
        const float top = *std::max_element(row, row + c.vocab) + 1.0f;
        row[c.vocab / 2] = row[c.vocab - 1] = row[1] = top;
      }
      // Padding columns (row_stride > vocab) hold huge values that must be ignored.
      for (int64_t t = c.vocab; t < stride; ++t) row[t] = 1e4f;
      modes[r] = static_cast<Mode>((r + case_index) % static_cast<int>(Mode::kCount));
      params[r] = make_params(modes[r], c.vocab);
      if (params[r].repetition_penalty != 1.0f) histories[r] = make_history(row, c.vocab);
      uniforms[r] = r % 11 == 5 ? 0.0 : r % 11 == 6 ? std::nextafter(1.0, 0.0) : uniform01();
    }
    ++case_index;

    // CSR histories and device inputs.
    std::vector<int32_t> seen_offsets{0}, seen, count_offsets{0}, count_tokens, counts;
    std::vector<SamplingRowParams> row_params;
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int32_t t : histories[r].seen_tokens) seen.push_back(t);
      for (auto [t, n] : histories[r].output_counts) {
        count_tokens.push_back(t);
        counts.push_back(n);
      }
      seen_offsets.push_back(static_cast<int32_t>(seen.size()));
      count_offsets.push_back(static_cast<int32_t>(count_tokens.size()));
      row_params.push_back(sampling_row_params(params[r]));
    }
    auto d_logits = upload(logits);
    auto d_params = upload(row_params);
    auto d_uniforms = upload(uniforms);
    auto d_seen_offsets = upload(seen_offsets), d_seen = upload(seen);
    auto d_count_offsets = upload(count_offsets), d_count_tokens = upload(count_tokens),
         d_counts = upload(counts);
    SamplingHistory history;
    history.seen_offsets = d_seen_offsets.as<int32_t>();
    history.seen_tokens = d_seen.as<int32_t>();
    history.count_offsets = d_count_offsets.as<int32_t>();
    history.count_tokens = d_count_tokens.as<int32_t>();
    history.counts = d_counts.as<int32_t>();
    const std::size_t ws_bytes = sampling_workspace_bytes(c.rows, c.vocab);
    DeviceBuffer d_ws(ws_bytes, "sampling workspace");
    DeviceBuffer d_tokens(c.rows * 4, "tokens"), d_logprobs(c.rows * 4, "logprobs");
    poison(d_tokens);
    poison(d_logprobs);
    poison(d_ws);
    // The memsets run on the legacy stream, which a non-blocking stream does not wait for.
    SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());
    sample_rows(d_logits.as<float>(), c.rows, c.vocab, stride, d_params.as<SamplingRowParams>(),
                history, d_uniforms.as<double>(), d_tokens.as<int32_t>(),
                d_logprobs.as<float>(), d_ws.data(), ws_bytes, s());
    SHARDSERVE_CUDA_CHECK(cudaStreamSynchronize(s()));
    const auto tokens = download<int32_t>(d_tokens, c.rows);
    const auto logprobs = download<float>(d_logprobs, c.rows);

    CaseCounts counts_here;
    for (int64_t r = 0; r < c.rows; ++r) {
      const float* row = logits.data() + r * stride;
      const auto want = cpu::sample_token(row, c.vocab, params[r], histories[r], uniforms[r]);
      const auto& p = params[r];
      const std::string where =
          "vocab " + std::to_string(c.vocab) + " row " + std::to_string(r) + " of " +
          std::to_string(c.rows) + " (" + mode_name(modes[r]) + ": T=" +
          std::to_string(p.temperature) + " top_k=" + std::to_string(p.top_k) + " top_p=" +
          std::to_string(p.top_p) + " min_p=" + std::to_string(p.min_p) + " rep=" +
          std::to_string(p.repetition_penalty) + " freq=" + std::to_string(p.frequency_penalty) +
          " pres=" + std::to_string(p.presence_penalty) + " seen " +
          std::to_string(histories[r].seen_tokens.size()) + ") u=" +
          std::to_string(uniforms[r]) + " seed " + std::to_string(seed_);
      ++counts_here.rows;
      bool excused = false;
      if (!p.greedy()) {
        const auto probs = cpu::sampling_distribution(row, c.vocab, p, histories[r]);
        if (near_boundary(probs, uniforms[r])) {
          ++counts_here.near_boundary;
          excused = true;
        }
      }
      if (tokens[r] != want.token && excused) {
        ++counts_here.excused_mismatch;
      } else {
        EXPECT_EQ(tokens[r], want.token) << where;
      }
      if (tokens[r] == want.token) {
        EXPECT_NEAR(logprobs[r], want.logprob, 1e-5) << where;
      } else if (tokens[r] >= 0 && tokens[r] < c.vocab) {
        const auto got = cpu::describe_token(row, c.vocab, tokens[r], 0);
        EXPECT_NEAR(logprobs[r], got.logprob, 1e-5) << where;
      }
    }
    std::printf("vocab %lld x %lld rows (stride %lld): %lld rows, %lld uniforms at a boundary, "
                "%lld of them a different token\n",
                static_cast<long long>(c.vocab), static_cast<long long>(c.rows),
                static_cast<long long>(stride), static_cast<long long>(counts_here.rows),
                static_cast<long long>(counts_here.near_boundary),
                static_cast<long long>(counts_here.excused_mismatch));
    total.rows += counts_here.rows;
    total.near_boundary += counts_here.near_boundary;
    total.excused_mismatch += counts_here.excused_mismatch;
  }
  RecordProperty("near_boundary", std::to_string(total.near_boundary));
  RecordProperty("excused_mismatch", std::to_string(total.excused_mismatch));
  std::printf("all cases: %lld rows, %lld uniforms at a boundary, %lld a different token\n",
              static_cast<long long>(total.rows), static_cast<long long>(total.near_boundary),
              static_cast<long long>(total.excused_mismatch));
}

// Every row of a batch with the same parameters, drawn at many uniforms along the CDF: many
// draws land in the low-probability tail and in ties, where an off-by-one in the id-order scan
// or in the kept set would show.
TEST_F(CudaSampling, SampleRowsMatchesCpuAlongTheCdf) {
  for (int64_t vocab : {5, 777, 128256}) {
    const int64_t rows = 64;
    std::vector<float> one = random_floats(vocab, rng_, 2.0f);
    for (int64_t t = 0; t < vocab; t += 3) one[t] = std::round(one[t]);  // ties
    messages::SamplingParams p;
    p.temperature = 0.8f;
    p.top_k = static_cast<int32_t>(std::min<int64_t>(vocab, 40));
    p.top_p = 0.95f;
    p.min_p = 0.01f;
    std::vector<float> logits;
    std::vector<double> uniforms;
    for (int64_t r = 0; r < rows; ++r) {
      logits.insert(logits.end(), one.begin(), one.end());
      uniforms.push_back((static_cast<double>(r) + uniform01()) / rows);
    }
    std::vector<SamplingRowParams> row_params(rows, sampling_row_params(p));
    auto d_logits = upload(logits);
    auto d_params = upload(row_params);
    auto d_uniforms = upload(uniforms);
    const std::size_t ws_bytes = sampling_workspace_bytes(rows, vocab);
    DeviceBuffer d_ws(ws_bytes, "sampling workspace");
    DeviceBuffer d_tokens(rows * 4, "tokens"), d_logprobs(rows * 4, "logprobs");
    poison(d_tokens);
    poison(d_logprobs);
    SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());  // the memsets before the op's stream
    sample_rows(d_logits.as<float>(), rows, vocab, vocab, d_params.as<SamplingRowParams>(), {},
                d_uniforms.as<double>(), d_tokens.as<int32_t>(), d_logprobs.as<float>(),
                d_ws.data(), ws_bytes, s());
    SHARDSERVE_CUDA_CHECK(cudaStreamSynchronize(s()));
    const auto tokens = download<int32_t>(d_tokens, rows);
    const auto logprobs = download<float>(d_logprobs, rows);
    const auto probs = cpu::sampling_distribution(one.data(), vocab, p, {});
    int64_t at_boundary = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto want = cpu::sample_token(one.data(), vocab, p, {}, uniforms[r]);
      if (near_boundary(probs, uniforms[r]) && tokens[r] != want.token) {
        ++at_boundary;
        continue;
      }
      EXPECT_EQ(tokens[r], want.token) << "vocab " << vocab << " u=" << uniforms[r] << " seed "
                                       << seed_;
      EXPECT_NEAR(logprobs[r], want.logprob, 1e-5) << "vocab " << vocab << " seed " << seed_;
    }
    std::printf("vocab %lld: %lld draws at a boundary differed\n", static_cast<long long>(vocab),
                static_cast<long long>(at_boundary));
  }
}

// sample_rows allocates nothing and never synchronises: captured into a CUDA graph, a replay
// with new uniforms in the same buffer gives what an eager call with those uniforms gives.
TEST_F(CudaSampling, SampleRowsCapturesIntoAGraph) {
  const int64_t rows = 16, vocab = 32000;
  auto logits = random_floats(rows * vocab, rng_, 3.0f);
  std::vector<SamplingRowParams> row_params(rows);
  for (int64_t r = 0; r < rows; ++r) {
    messages::SamplingParams p;
    p.temperature = r % 4 == 0 ? 0.0f : 0.9f;
    p.top_k = r % 3 == 0 ? 50 : 0;
    p.top_p = 0.9f;
    p.min_p = r % 2 == 0 ? 0.05f : 0.0f;
    row_params[r] = sampling_row_params(p);
  }
  std::vector<double> first(rows), second(rows);
  for (auto& u : first) u = uniform01();
  for (auto& u : second) u = uniform01();
  auto d_logits = upload(logits);
  auto d_params = upload(row_params);
  auto d_uniforms = upload(first);
  const std::size_t ws_bytes = sampling_workspace_bytes(rows, vocab);
  DeviceBuffer d_ws(ws_bytes, "sampling workspace");
  DeviceBuffer d_tokens(rows * 4, "tokens"), d_logprobs(rows * 4, "logprobs");
  auto enqueue = [&] {
    sample_rows(d_logits.as<float>(), rows, vocab, vocab, d_params.as<SamplingRowParams>(), {},
                d_uniforms.as<double>(), d_tokens.as<int32_t>(), d_logprobs.as<float>(),
                d_ws.data(), ws_bytes, s());
  };
  auto run = [&](bool graph, const std::vector<double>& u, const CudaGraph* g) {
    copy_to_device(d_uniforms.data(), u.data(), u.size() * sizeof(double));
    poison(d_tokens);
    poison(d_logprobs);
    SHARDSERVE_CUDA_CHECK(cudaDeviceSynchronize());  // the memsets before the op's stream
    if (graph) {
      g->launch(s());
    } else {
      enqueue();
    }
    SHARDSERVE_CUDA_CHECK(cudaStreamSynchronize(s()));
    return std::make_pair(download<int32_t>(d_tokens, rows), download<float>(d_logprobs, rows));
  };
  const auto eager_first = run(false, first, nullptr);
  const auto eager_second = run(false, second, nullptr);
  const CudaGraph graph = CudaGraph::capture(s(), enqueue);
  EXPECT_EQ(run(true, second, &graph), eager_second);
  EXPECT_EQ(run(true, first, &graph), eager_first);
}

// The host-side checks run before anything touches the device: no GPU needed.
TEST(CudaSamplingArgs, RefusesBadArgumentsNamingThem) {
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const float* fake = reinterpret_cast<const float*>(uintptr_t{256});
  EXPECT_NE(message([&] {
              sample_rows(fake, 2, 0, 0, nullptr, {}, nullptr, nullptr, nullptr, nullptr, 0,
                          nullptr);
            }).find("rows=2 vocab=0"),
            std::string::npos);
  EXPECT_NE(message([&] {
              sample_rows(fake, 2, 100, 99, nullptr, {}, nullptr, nullptr, nullptr, nullptr, 0,
                          nullptr);
            }).find("row_stride 99 < vocab 100"),
            std::string::npos);
  EXPECT_NE(message([&] {
              sample_rows(fake, 20000, 128256, 128256, nullptr, {}, nullptr, nullptr, nullptr,
                          nullptr, 0, nullptr);
            }).find("rows=20000 x vocab=128256"),
            std::string::npos);
  EXPECT_NE(message([&] {
              sample_rows(fake, 2, 100, 100, nullptr, {}, nullptr, nullptr, nullptr, nullptr, 0,
                          nullptr);
            }).find("null pointer"),
            std::string::npos);
  SamplingHistory half;
  half.seen_offsets = reinterpret_cast<const int32_t*>(uintptr_t{256});
  EXPECT_NE(message([&] {
              sample_rows(fake, 2, 100, 100, nullptr, half, nullptr, nullptr, nullptr, nullptr,
                          0, nullptr);
            }).find("seen_offsets and seen_tokens"),
            std::string::npos);
  messages::SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_NE(message([&] { sampling_row_params(p); }).find("top_p 0"), std::string::npos);
  p = {};
  p.temperature = -1.0f;
  EXPECT_NE(message([&] { sampling_row_params(p); }).find("temperature -1"), std::string::npos);
  p = {};
  p.min_p = 1.0f;
  EXPECT_NE(message([&] { sampling_row_params(p); }).find("min_p 1"), std::string::npos);
  p = {};
  p.temperature = 0.0f;
  EXPECT_EQ(sampling_row_params(p).greedy, 1);
}

}  // namespace
}  // namespace shardserve::kernels::cuda
