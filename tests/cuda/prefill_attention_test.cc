// The tensor-core prefill attention (kernels/cuda/prefill_attention.cu) against the CPU
// reference (kernels/cpu/paged_attention) and against the decode kernel, on fresh random
// inputs: batches of several sequences, chunks with and without a cached prefix, chunk lengths
// on and off the 64-row tile, contexts over many blocks of a shuffled block table, GQA groups
// 1, 4, 6, 8 (6 does not divide the tile), head_dim 64 and 128, block sizes 8 .. 256 and one
// that is not a power of two. As in the runner, the step's single-token sequences go to the
// decode kernel through AttentionBatch::rows and the chunks around them to the prefill kernel,
// into one output poisoned with NaN first: every row must be written by one of the two. Every
// pool slot that no query may see (the rest of each sequence's last block, the unused blocks)
// is NaN, so a read past a sequence's visible keys shows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <optional>
#include <random>

#include "common/error.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace shardserve::kernels::cuda {
namespace {

using namespace shardserve::kernels::cuda::testing;

struct Chunk {
  int first_pos;  // tokens already cached
  int q_len;      // new query tokens (1: a decode, to the decode kernel)
};

struct PrefillCase {
  int64_t heads, kv_heads, head_dim, block_size;
  std::vector<Chunk> seqs;
};

constexpr uint16_t kNanBits = 0xFFFF;

class CudaPrefillAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    SHARDSERVE_REQUIRE_GPU();
    stream_.emplace();
    rng_.seed(input_seed());
  }

  void run_case(const PrefillCase& c) {
    const int64_t hd = c.head_dim, kvh = c.kv_heads, row = kvh * hd;
    int64_t blocks_needed = 0, total_tokens = 0;
    for (const auto& sq : c.seqs) {
      blocks_needed += (sq.first_pos + sq.q_len + c.block_size - 1) / c.block_size;
      total_tokens += sq.q_len;
    }
    const int64_t qn = c.heads * hd, width = qn + 2 * row;
    auto [num_blocks, perm, pool_k, pool_v, qkv] =
        random_paged_step(rng_, blocks_needed + 7, c.block_size, row, total_tokens, width);

    // CPU reference, and the step's arrays: per token (all tokens; and the decode tokens'
    // sub-list with their rows) and per prefill sequence.
    std::vector<int32_t> block_ids, positions, table_offsets, slots;
    std::vector<int32_t> d_pos_h, d_tab_h, d_rows_h;
    std::vector<int32_t> p_begin_h, p_len_h, p_first_h, p_tab_h;
    std::vector<char> visible_slot(num_blocks * c.block_size, 0);
    std::vector<float> want(total_tokens * qn);
    cpu::PagedKvView view{pool_k.data(), pool_v.data(), num_blocks, c.block_size, kvh, hd};
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    int64_t next_block = 0, tok = 0, max_q_len = 0;
    for (const auto& sq : c.seqs) {
      const int64_t context = sq.first_pos + sq.q_len;
      const int64_t nb = (context + c.block_size - 1) / c.block_size;
      const int32_t offset = static_cast<int32_t>(block_ids.size());
      for (int64_t b = 0; b < nb; ++b) block_ids.push_back(perm[next_block++]);
      const int32_t* table = block_ids.data() + offset;
      for (int64_t p = 0; p < context; ++p) {
        visible_slot[table[p / c.block_size] * c.block_size + p % c.block_size] = 1;
      }
      std::vector<float> k(sq.q_len * row), v(sq.q_len * row), q(sq.q_len * qn);
      std::vector<int32_t> pos(sq.q_len);
      for (int i = 0; i < sq.q_len; ++i) {
        const float* r = qkv.data() + (tok + i) * width;
        std::copy_n(r, qn, q.begin() + i * qn);
        std::copy_n(r + qn, row, k.begin() + i * row);
        std::copy_n(r + qn + row, row, v.begin() + i * row);
        pos[i] = sq.first_pos + i;
        positions.push_back(pos[i]);
        table_offsets.push_back(offset);
        slots.push_back(table[pos[i] / c.block_size] * c.block_size + pos[i] % c.block_size);
      }
      if (sq.q_len == 1) {
        d_pos_h.push_back(sq.first_pos);
        d_tab_h.push_back(offset);
        d_rows_h.push_back(static_cast<int32_t>(tok));
      } else {
        p_begin_h.push_back(static_cast<int32_t>(tok));
        p_len_h.push_back(sq.q_len);
        p_first_h.push_back(sq.first_pos);
        p_tab_h.push_back(offset);
        max_q_len = std::max<int64_t>(max_q_len, sq.q_len);
      }
      cpu::write_kv(view, k.data(), v.data(), pos.data(), sq.q_len, table, nb);
      cpu::paged_attention(view, q.data(), want.data() + tok * qn, sq.q_len, c.heads,
                           sq.first_pos, table, nb, scale);
      tok += sq.q_len;
    }

    // GPU pool: NaN in every slot no query may read and in every slot the step writes (so a
    // read before write_kv shows too); the rest as the CPU had it before its writes.
    std::vector<uint16_t> gpu_k = to_bf16_bits(pool_k), gpu_v = to_bf16_bits(pool_v);
    for (int64_t slot = 0; slot < num_blocks * c.block_size; ++slot) {
      if (visible_slot[slot]) continue;
      std::fill_n(gpu_k.begin() + slot * row, row, kNanBits);
      std::fill_n(gpu_v.begin() + slot * row, row, kNanBits);
    }
    for (int32_t slot : slots) {
      std::fill_n(gpu_k.begin() + int64_t{slot} * row, row, kNanBits);
      std::fill_n(gpu_v.begin() + int64_t{slot} * row, row, kNanBits);
    }
    auto d_pool_k = upload(gpu_k);
    auto d_pool_v = upload(gpu_v);
    auto d_qkv = upload_bf16(qkv);
    auto d_slots = upload(slots);
    auto d_blocks = upload(block_ids);
    auto d_positions = upload(positions);
    auto d_offsets = upload(table_offsets);
    auto d_dpos = upload(d_pos_h), d_dtab = upload(d_tab_h), d_drows = upload(d_rows_h);
    auto d_pbegin = upload(p_begin_h), d_plen = upload(p_len_h), d_pfirst = upload(p_first_h),
         d_ptab = upload(p_tab_h);
    const PagedKvPool pool{d_pool_k.as<bf16>(), d_pool_v.as<bf16>(), num_blocks, c.block_size,
                           kvh, hd};
    const cudaStream_t st = stream_->get();
    write_kv(pool, d_qkv.as<bf16>() + qn, d_qkv.as<bf16>() + qn + row, width,
             d_slots.as<int32_t>(), total_tokens, st);

    // Split path: prefill kernel for the chunks, decode kernel for the single tokens.
    const int64_t out_stride = qn + 8;
    DeviceBuffer d_out(total_tokens * out_stride * 2, "out");
    poison(d_out);
    const PrefillSequences pre{d_pbegin.as<int32_t>(), d_plen.as<int32_t>(),
                               d_pfirst.as<int32_t>(), d_ptab.as<int32_t>(),
                               d_blocks.as<int32_t>(), static_cast<int64_t>(p_len_h.size()),
                               max_q_len};
    paged_prefill_attention(pool, d_qkv.as<bf16>(), width, d_out.as<bf16>(), out_stride, pre,
                            c.heads, scale, st);
    const AttentionSplit none{};
    const AttentionBatch decodes{d_dpos.as<int32_t>(), d_dtab.as<int32_t>(),
                                 d_blocks.as<int32_t>(), static_cast<int64_t>(d_pos_h.size()),
                                 d_drows.as<int32_t>()};
    paged_attention(pool, d_qkv.as<bf16>(), width, d_out.as<bf16>(), out_stride, decodes, c.heads,
                    scale, none, nullptr, 0, st);
    // The decode kernel alone on every token (rows null), the path the runner had before.
    DeviceBuffer d_ref(total_tokens * out_stride * 2, "decode-kernel out");
    poison(d_ref);
    const AttentionBatch all{d_positions.as<int32_t>(), d_offsets.as<int32_t>(),
                             d_blocks.as<int32_t>(), total_tokens};
    paged_attention(pool, d_qkv.as<bf16>(), width, d_ref.as<bf16>(), out_stride, all, c.heads,
                    scale, none, nullptr, 0, st);
    stream_->synchronize();

    auto unpad = [&](const DeviceBuffer& buf) {
      const auto padded = download_bf16(buf, total_tokens * out_stride);
      std::vector<float> got(total_tokens * qn);
      for (int64_t t = 0; t < total_tokens; ++t) {
        std::copy_n(padded.begin() + t * out_stride, qn, got.begin() + t * qn);
      }
      return got;
    };
    const auto got = unpad(d_out), ref = unpad(d_ref);
    // Per sequence, so that a wrong short sequence cannot hide in the norm of a long one.
    double worst = 0, worst_decode_kernel = 0, worst_vs_decode_kernel = 0;
    tok = 0;
    for (std::size_t i = 0; i < c.seqs.size(); ++i) {
      const auto b = (tok) * qn, e = (tok + c.seqs[i].q_len) * qn;
      const std::vector<float> g(got.begin() + b, got.begin() + e), w(want.begin() + b, want.begin() + e),
          r(ref.begin() + b, ref.begin() + e);
      const double err = relative_error(g, w);
      EXPECT_LT(err, kBf16Tolerance) << "sequence " << i << " (first_pos " << c.seqs[i].first_pos
                                     << ", q_len " << c.seqs[i].q_len << ")";
      worst = std::max(worst, err);
      worst_decode_kernel = std::max(worst_decode_kernel, relative_error(r, w));
      worst_vs_decode_kernel = std::max(worst_vs_decode_kernel, relative_error(g, r));
      tok += c.seqs[i].q_len;
    }
    std::printf("prefill attention heads %lld/%lld hd %lld block %lld: worst error %.3g vs CPU, "
                "decode kernel %.3g vs CPU, prefill vs decode kernel %.3g\n",
                (long long)c.heads, (long long)kvh, (long long)hd, (long long)c.block_size, worst,
                worst_decode_kernel, worst_vs_decode_kernel);
    EXPECT_LT(worst_decode_kernel, kBf16Tolerance);
    EXPECT_LT(worst_vs_decode_kernel, kBf16Tolerance);
  }

  std::mt19937 rng_;

 private:
  std::optional<Stream> stream_;
};

TEST_F(CudaPrefillAttention, ChunksAndDecodesMatchCpuHeadDim128) {
  // Decodes between chunks; chunks without prefix, with a prefix ending inside the first key
  // tile, exactly one tile, one row past it, and a long one behind a 1000-token prefix.
  const std::vector<Chunk> mixed = {{0, 100}, {300, 1}, {200, 37}, {1000, 130},
                                    {5, 1},   {63, 64}, {0, 64},   {64, 65}};
  run_case({32, 8, 128, 16, mixed});  // GQA 4 (Llama-3 8B)
  run_case({8, 8, 128, 16, mixed});   // MHA
  run_case({64, 8, 128, 16, {{0, 300}, {1, 1}, {1500, 50}, {17, 2}}});  // GQA 8 (70B)
  run_case({24, 4, 128, 16, {{0, 77}, {129, 45}, {3, 1}}});             // GQA 6: heads straddle tiles
}

TEST_F(CudaPrefillAttention, ChunksAndDecodesMatchCpuHeadDim64) {
  const std::vector<Chunk> mixed = {{0, 100}, {40, 1}, {200, 37}, {777, 70}, {0, 2}, {31, 33}};
  run_case({16, 2, 64, 16, mixed});  // GQA 8
  run_case({8, 8, 64, 16, mixed});   // MHA
  run_case({16, 4, 64, 16, mixed});  // GQA 4
}

TEST_F(CudaPrefillAttention, AnyBlockSize) {
  const std::vector<Chunk> mixed = {{0, 90}, {150, 1}, {333, 66}, {64, 64}};
  run_case({16, 4, 128, 8, mixed});
  run_case({16, 4, 64, 32, mixed});
  run_case({16, 4, 128, 64, mixed});
  run_case({16, 4, 64, 256, mixed});  // blocks longer than the key tile
  run_case({16, 4, 128, 48, mixed});  // not a power of two
  run_case({4, 1, 64, 1, {{0, 20}, {9, 9}}});
}

// Argument checks run on the host before any launch, so they need no device.
TEST(PrefillAttentionArgs, RefusesUnsupportedShapesBeforeLaunching) {
  EXPECT_TRUE(prefill_attention_supported(64));
  EXPECT_TRUE(prefill_attention_supported(128));
  EXPECT_FALSE(prefill_attention_supported(32));
  EXPECT_FALSE(prefill_attention_supported(256));
  alignas(16) static bf16 fake[64];
  const PrefillSequences none{};
  const PagedKvPool hd32{fake, fake, 4, 16, 2, 32};
  EXPECT_THROW(paged_prefill_attention(hd32, fake, 128, fake, 128, none, 4, 1.0f, nullptr), Error);
  try {
    paged_prefill_attention(hd32, fake, 128, fake, 128, none, 4, 1.0f, nullptr);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 32 is not 64 or 128"), std::string::npos)
        << e.what();
  }
  const PagedKvPool hd64{fake, fake, 4, 16, 2, 64};
  EXPECT_THROW(paged_prefill_attention(hd64, fake, 128, fake, 128, none, 3, 1.0f, nullptr),
               Error);  // 3 heads over 2 KV heads
  EXPECT_THROW(paged_prefill_attention(hd64, fake, 100, fake, 256, none, 2, 1.0f, nullptr),
               Error);  // q_stride below heads * head_dim
  // Nothing to do: no launch, no error.
  EXPECT_NO_THROW(paged_prefill_attention(hd64, fake, 128, fake, 128, none, 2, 1.0f, nullptr));
}

}  // namespace
}  // namespace shardserve::kernels::cuda
