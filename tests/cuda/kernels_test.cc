// Every CUDA op against its CPU reference (kernels/cpu/) on fresh random inputs of several
// shapes, the output poisoned with NaN before each run. Inputs are rounded to bf16 on the host
// first, so the reference computes in float32 on exactly the values the GPU reads; the
// remaining error is the GPU's float32 accumulation order and its bf16 output rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <random>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace shardserve::kernels::cuda {
namespace {

using namespace shardserve::kernels::cuda::testing;

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    SHARDSERVE_REQUIRE_GPU();
    stream_.emplace();  // only once a device is known to exist
    seed_ = input_seed();
    rng_.seed(seed_);
  }
  void sync() { stream_->synchronize(); }
  cudaStream_t s() { return stream_->get(); }
  uint32_t seed_ = 0;
  std::mt19937 rng_;

 private:
  std::optional<Stream> stream_;
};

TEST_F(CudaKernels, EmbeddingLookupMatchesCpu) {
  struct Case { int64_t tokens, dim, rows, begin; };
  for (const Case c : {Case{1, 8, 61, 0}, Case{37, 4096, 1000, 500}, Case{5, 100, 50, 10}}) {
    auto table = random_floats(c.rows * c.dim, rng_);
    round_to_bf16(table);
    std::vector<int32_t> ids(c.tokens);
    for (auto& id : ids) id = static_cast<int32_t>(rng_() % (c.begin + c.rows + 20));
    std::vector<float> want(c.tokens * c.dim);
    cpu::embedding_lookup(table.data(), c.begin, c.rows, c.dim, ids.data(), c.tokens, want.data());
    auto d_table = upload_bf16(table);
    auto d_ids = upload(ids);
    DeviceBuffer d_out(want.size() * 4, "out");
    poison(d_out);
    embedding_lookup(d_table.as<bf16>(), c.begin, c.rows, c.dim, d_ids.as<int32_t>(), c.tokens,
                     d_out.as<float>(), s());
    sync();
    EXPECT_EQ(relative_error(download<float>(d_out, want.size()), want), 0.0) << c.dim;
  }
}

TEST_F(CudaKernels, RmsNormAndAddRmsNormMatchCpu) {
  for (int64_t rows : {1, 7, 64}) {
    for (int64_t dim : {32, 100, 4096}) {
      const float eps = 1e-5f;
      auto x = random_floats(rows * dim, rng_, 2.0f);
      auto delta = random_floats(rows * dim, rng_);
      round_to_bf16(delta);
      auto weight = random_floats(dim, rng_, 0.2f);
      for (auto& w : weight) w += 1.0f;
      // Plain norm.
      std::vector<float> want(rows * dim);
      cpu::rms_norm(x.data(), weight.data(), want.data(), rows, dim, eps);
      auto d_x = upload(x);
      auto d_w = upload(weight);
      DeviceBuffer d_out(rows * dim * 2, "out");
      poison(d_out);
      rms_norm(d_x.as<float>(), d_w.as<float>(), d_out.as<bf16>(), rows, dim, eps, s());
      sync();
      EXPECT_LT(relative_error(download_bf16(d_out, want.size()), want), kBf16Tolerance)
          << rows << "x" << dim;
      // Fused add, with a bf16 delta and with a float32 one (the all-reduced projection): the
      // residual must be updated in float32 and the output normalised.
      for (bool f32_delta : {false, true}) {
        std::vector<float> d = delta;
        if (f32_delta) d = random_floats(rows * dim, rng_);
        std::vector<float> residual = x;
        cpu::add_rms_norm(residual.data(), d.data(), weight.data(), want.data(), rows, dim, eps);
        auto d_res = upload(x);
        auto d_delta = f32_delta ? upload(d) : upload_bf16(d);
        poison(d_out);
        if (f32_delta) {
          add_rms_norm(d_res.as<float>(), d_delta.as<float>(), d_w.as<float>(), d_out.as<bf16>(),
                       rows, dim, eps, s());
        } else {
          add_rms_norm(d_res.as<float>(), d_delta.as<bf16>(), d_w.as<float>(), d_out.as<bf16>(),
                       rows, dim, eps, s());
        }
        sync();
        EXPECT_LT(relative_error(download<float>(d_res, residual.size()), residual), kF32Tolerance);
        EXPECT_LT(relative_error(download_bf16(d_out, want.size()), want), kBf16Tolerance)
            << rows << "x" << dim << " f32 delta " << f32_delta;
      }
    }
  }
}

TEST_F(CudaKernels, RopeMatchesCpuWithLlama3Scaling) {
  for (int64_t head_dim : {8, 64, 128}) {
    for (bool llama3 : {false, true}) {
      cpu::RopeParams p;
      p.head_dim = head_dim;
      p.theta = llama3 ? 500000.0 : 10000.0;
      if (llama3) {
        p.scaling = cpu::RopeParams::Scaling::kLlama3;
        p.factor = 8.0;
        p.original_max_position = 8192;
      }
      const auto inv_freq = cpu::rope_inverse_frequencies(p);
      const int64_t tokens = 37, heads = 6, pad = 16, stride = heads * head_dim + pad;
      std::vector<int32_t> positions(tokens);
      for (auto& pos : positions) pos = static_cast<int32_t>(rng_() % 100000);
      auto rows = random_floats(tokens * stride, rng_);
      round_to_bf16(rows);
      // CPU reference on the contiguous heads; the pad columns must stay untouched.
      std::vector<float> heads_only(tokens * heads * head_dim);
      for (int64_t t = 0; t < tokens; ++t) {
        std::copy_n(rows.begin() + t * stride, heads * head_dim,
                    heads_only.begin() + t * heads * head_dim);
      }
      cpu::apply_rope(heads_only.data(), positions.data(), tokens, heads, head_dim,
                      inv_freq.data());
      std::vector<float> want = rows;
      for (int64_t t = 0; t < tokens; ++t) {
        std::copy_n(heads_only.begin() + t * heads * head_dim, heads * head_dim,
                    want.begin() + t * stride);
      }
      auto d_x = upload_bf16(rows);
      auto d_pos = upload(positions);
      auto d_inv = upload(inv_freq);
      apply_rope(d_x.as<bf16>(), stride, d_pos.as<int32_t>(), tokens, heads, head_dim,
                 d_inv.as<float>(), s());
      sync();
      const auto got = download_bf16(d_x, rows.size());
      EXPECT_LT(relative_error(got, want), kBf16Tolerance) << head_dim << " llama3 " << llama3;
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t i = heads * head_dim; i < stride; ++i) {
          ASSERT_EQ(got[t * stride + i], rows[t * stride + i]) << "pad column overwritten";
        }
      }
    }
  }
}

TEST_F(CudaKernels, SiluMulMatchesCpu) {
  for (int64_t rows : {1, 33}) {
    for (int64_t width : {13, 48, 14336}) {
      auto gate_up = random_floats(rows * 2 * width, rng_, 2.0f);
      round_to_bf16(gate_up);
      std::vector<float> want(rows * width);
      cpu::silu_mul(gate_up.data(), want.data(), rows, width);
      auto d_in = upload_bf16(gate_up);
      DeviceBuffer d_out(want.size() * 2, "out");
      poison(d_out);
      silu_mul(d_in.as<bf16>(), d_out.as<bf16>(), rows, width, s());
      sync();
      EXPECT_LT(relative_error(download_bf16(d_out, want.size()), want), kBf16Tolerance)
          << rows << "x" << width;
    }
  }
}

TEST_F(CudaKernels, GemmMatchesCpu) {
  GemmBf16 gemm;
  struct Case { int64_t m, n, k; };
  for (const Case c : {Case{1, 61, 32}, Case{7, 512, 4096}, Case{128, 4096, 512},
                       Case{300, 1000, 64}}) {
    auto x = random_floats(c.m * c.k, rng_);
    auto w = random_floats(c.n * c.k, rng_, 0.05f);
    round_to_bf16(x);
    round_to_bf16(w);
    std::vector<float> want(c.m * c.n);
    cpu::matmul_nt(x.data(), w.data(), want.data(), c.m, c.n, c.k);
    auto d_x = upload_bf16(x);
    auto d_w = upload_bf16(w);
    // float32 output (the LM head): exact inputs, float32 accumulation.
    DeviceBuffer d_y(c.m * c.n * 4, "y");
    poison(d_y);
    gemm.run(d_x.as<bf16>(), d_w.as<bf16>(), d_y.data(),
             {.m = c.m, .n = c.n, .k = c.k, .out = GemmOut::kFloat}, s());
    sync();
    EXPECT_LT(relative_error(download<float>(d_y, want.size()), want), kF32Tolerance * 10)
        << c.m << "x" << c.n << "x" << c.k;
    // bf16 output with a padded row stride (ldy = n + 8).
    const int64_t ldy = c.n + 8;
    DeviceBuffer d_yb(c.m * ldy * 2, "y");
    poison(d_yb);
    gemm.run(d_x.as<bf16>(), d_w.as<bf16>(), d_yb.data(),
             {.m = c.m, .n = c.n, .k = c.k, .ldy = ldy, .out = GemmOut::kBf16}, s());
    sync();
    const auto padded = download_bf16(d_yb, c.m * ldy);
    std::vector<float> got(c.m * c.n);
    for (int64_t r = 0; r < c.m; ++r) std::copy_n(padded.begin() + r * ldy, c.n, got.begin() + r * c.n);
    EXPECT_LT(relative_error(got, want), kBf16Tolerance) << c.m << "x" << c.n << "x" << c.k;
  }
}

TEST_F(CudaKernels, ArgmaxMatchesCpuIncludingTies) {
  for (int64_t vocab : {61, 1000, 128256}) {
    const int64_t rows = 5, stride = vocab + 3;
    auto logits = random_floats(rows * stride, rng_, 3.0f);
    // Row 1: a tie between two ids (the lower must win); row 2: the maximum at the last id.
    const int64_t a = vocab / 3, b = vocab / 2;
    logits[1 * stride + a] = logits[1 * stride + b] = 100.0f;
    logits[2 * stride + vocab - 1] = 100.0f;
    logits[3 * stride + vocab] = 1000.0f;  // in the padding: must be ignored
    auto d_logits = upload(logits);
    DeviceBuffer d_tokens(rows * 4, "tokens"), d_max(rows * 4, "max");
    poison(d_tokens);
    poison(d_max);
    argmax_rows(d_logits.as<float>(), rows, vocab, stride, d_tokens.as<int32_t>(),
                d_max.as<float>(), s());
    sync();
    const auto tokens = download<int32_t>(d_tokens, rows);
    const auto maxes = download<float>(d_max, rows);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = logits.data() + r * stride;
      const int64_t want = std::max_element(row, row + vocab) - row;
      EXPECT_EQ(tokens[r], want) << "row " << r << " vocab " << vocab;
      EXPECT_EQ(maxes[r], row[want]);
    }
    EXPECT_EQ(tokens[1], a);
  }
}

// ---- paged KV ----------------------------------------------------------------------------

struct SeqSpec {
  int start_pos;  // tokens already cached
  int tokens;     // new query tokens
};

struct PagedCase {
  int64_t heads, kv_heads, head_dim, block_size;
  std::vector<SeqSpec> seqs;
  AttentionSplit split;  // {1 << 30, 1}: no split
};

class CudaPagedKv : public CudaKernels {
 protected:
  // Runs write_kv of every sequence's new tokens and then attention, on the GPU and with the
  // CPU reference, and compares both the pool and the attention output.
  void run_case(const PagedCase& c) {
    const int64_t hd = c.head_dim, kvh = c.kv_heads, row = kvh * hd;
    int64_t blocks_needed = 0, total_tokens = 0;
    for (const auto& sq : c.seqs) {
      blocks_needed += (sq.start_pos + sq.tokens + c.block_size - 1) / c.block_size;
      total_tokens += sq.tokens;
    }
    const int64_t qn = c.heads * hd, width = qn + 2 * row;
    auto [num_blocks, perm, pool_k, pool_v, qkv] =
        random_paged_step(rng_, blocks_needed + 5, c.block_size, row, total_tokens, width);

    std::vector<int32_t> block_ids, positions, table_offsets, slots;
    std::vector<float> want(total_tokens * qn);
    cpu::PagedKvView view{pool_k.data(), pool_v.data(), num_blocks, c.block_size, kvh, hd};
    int64_t next_block = 0, tok = 0;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (const auto& sq : c.seqs) {
      const int64_t nb = (sq.start_pos + sq.tokens + c.block_size - 1) / c.block_size;
      const int32_t offset = static_cast<int32_t>(block_ids.size());
      for (int64_t b = 0; b < nb; ++b) block_ids.push_back(perm[next_block++]);
      const int32_t* table = block_ids.data() + offset;
      std::vector<float> k(sq.tokens * row), v(sq.tokens * row), q(sq.tokens * qn);
      std::vector<int32_t> pos(sq.tokens);
      for (int i = 0; i < sq.tokens; ++i) {
        const float* r = qkv.data() + (tok + i) * width;
        std::copy_n(r, qn, q.begin() + i * qn);
        std::copy_n(r + qn, row, k.begin() + i * row);
        std::copy_n(r + qn + row, row, v.begin() + i * row);
        pos[i] = sq.start_pos + i;
        positions.push_back(pos[i]);
        table_offsets.push_back(offset);
        slots.push_back(table[pos[i] / c.block_size] * c.block_size + pos[i] % c.block_size);
      }
      cpu::write_kv(view, k.data(), v.data(), pos.data(), sq.tokens, table, nb);
      cpu::paged_attention(view, q.data(), want.data() + tok * qn, sq.tokens, c.heads,
                           sq.start_pos, table, nb, scale);
      tok += sq.tokens;
    }
    // GPU: the pool as the CPU left it, with every slot the step writes poisoned (NaN), so an
    // unwritten slot or a read of one before its write shows in both comparisons below.
    std::vector<uint16_t> gpu_k = to_bf16_bits(pool_k), gpu_v = to_bf16_bits(pool_v);
    for (int32_t slot : slots) {
      std::fill_n(gpu_k.begin() + int64_t{slot} * row, row, uint16_t{0xFFFF});
      std::fill_n(gpu_v.begin() + int64_t{slot} * row, row, uint16_t{0xFFFF});
    }
    auto d_pool_k = upload(gpu_k);
    auto d_pool_v = upload(gpu_v);
    auto d_qkv = upload_bf16(qkv);
    auto d_slots = upload(slots);
    auto d_positions = upload(positions);
    auto d_offsets = upload(table_offsets);
    auto d_blocks = upload(block_ids);
    PagedKvPool pool{d_pool_k.as<bf16>(), d_pool_v.as<bf16>(), num_blocks, c.block_size, kvh, hd};
    write_kv(pool, d_qkv.as<bf16>() + qn, d_qkv.as<bf16>() + qn + row, width,
             d_slots.as<int32_t>(), total_tokens, s());
    // Output with a padded stride; workspace for the split.
    const int64_t out_stride = qn + 8;
    DeviceBuffer d_out(total_tokens * out_stride * 2, "out");
    poison(d_out);
    const std::size_t ws = attention_workspace_bytes(total_tokens, c.heads, hd, c.split.num_splits);
    DeviceBuffer d_ws(std::max<std::size_t>(ws, 16), "workspace");
    poison(d_ws);
    AttentionBatch batch{d_positions.as<int32_t>(), d_offsets.as<int32_t>(),
                         d_blocks.as<int32_t>(), total_tokens};
    paged_attention(pool, d_qkv.as<bf16>(), width, d_out.as<bf16>(), out_stride, batch, c.heads,
                    scale, c.split, d_ws.data(), d_ws.bytes(), s());
    sync();
    // The pool: every slot as the CPU left it (bit-exact copies).
    EXPECT_EQ(relative_error(download_bf16(d_pool_k, pool_k.size()), pool_k), 0.0);
    EXPECT_EQ(relative_error(download_bf16(d_pool_v, pool_v.size()), pool_v), 0.0);
    const auto padded = download_bf16(d_out, total_tokens * out_stride);
    std::vector<float> got(total_tokens * qn);
    for (int64_t t = 0; t < total_tokens; ++t) {
      std::copy_n(padded.begin() + t * out_stride, qn, got.begin() + t * qn);
    }
    const double err = relative_error(got, want);
    std::printf("attention heads %lld/%lld hd %lld block %lld splits %dx%d: error %.3g\n",
                (long long)c.heads, (long long)c.kv_heads, (long long)hd, (long long)c.block_size,
                c.split.num_splits, c.split.partition_len, err);
    EXPECT_LT(err, kBf16Tolerance) << "heads " << c.heads << "/" << c.kv_heads << " hd " << hd
                                   << " block " << c.block_size << " splits "
                                   << c.split.num_splits << "x" << c.split.partition_len;
  }
};

TEST_F(CudaPagedKv, DecodeAndPrefillMatchCpu) {
  const AttentionSplit none{};
  const std::vector<SeqSpec> mixed = {{0, 23}, {40, 1}, {17, 9}, {0, 1}, {300, 1}, {5, 3}};
  // head configurations: GQA groups 2, 1 (MHA), 4, 8, and 3 (heads per block falls back to 1).
  run_case({4, 2, 8, 4, mixed, none});
  run_case({4, 4, 16, 16, mixed, none});
  run_case({32, 8, 128, 16, mixed, none});
  run_case({16, 2, 64, 16, mixed, none});
  run_case({6, 2, 32, 8, mixed, none});
  run_case({8, 1, 256, 16, {{0, 5}, {70, 1}}, none});
}

TEST_F(CudaPagedKv, FlashDecodingSplitMatchesCpu) {
  // Long contexts cut into partitions of 64 / 256 positions; short sequences in the same batch
  // use fewer splits than the batch's maximum.
  const std::vector<SeqSpec> decode = {{1500, 1}, {2047, 1}, {10, 1}, {700, 1}};
  run_case({32, 8, 128, 16, decode, {256, 8}});
  run_case({8, 2, 64, 16, decode, {64, 32}});
  run_case({4, 4, 16, 4, {{1000, 3}, {0, 2}}, {64, 16}});
  // A plan made for shorter contexts: the last split runs to the end of the context.
  run_case({8, 2, 64, 16, {{900, 1}}, {128, 2}});
  // The planner's own choice for a small decode batch.
  const auto split = plan_attention_split(4, 32, 8, 128, 2048, 132, std::size_t{64} << 20);
  EXPECT_GT(split.num_splits, 1);
  run_case({32, 8, 128, 16, decode, split});
}

}  // namespace
}  // namespace shardserve::kernels::cuda
