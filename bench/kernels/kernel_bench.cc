// Times every CUDA op of kernels/cuda/ at LLaMA-3-8B shapes (TP=1: hidden 4096, 32 query / 8 KV
// heads of 128, FFN 14336, vocabulary 128256) and reports each as a fraction of the roofline
// measured in the same run: the bytes the op must move (each input read once, each output
// written once) over the device-to-device copy bandwidth of a large cudaMemcpy (bytes read +
// written). Matrix products at prefill sizes are reported in TFLOP/s as well.
//
// Method (docs/cuda.md): random inputs (never zeros), a warm-up, then 30 timed runs with CUDA
// events around the op alone; before each run a 512 MB memset evicts the 60 MB L2, so every run
// reads from HBM; the median is reported.
//
// usage: kernel_bench [output.tsv]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/counter_rng.h"
#include "common/half.h"
#include "kernels/cpu/rope.h"
#include "bench/kernels/median_timer.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"

namespace kc = shardserve::kernels::cuda;
using kc::bf16;
using kc::DeviceBuffer;

namespace {

constexpr int kRuns = 30;

struct Row {
  std::string op, shape;
  double bytes, flops, us;
};

std::mt19937 rng(1234);

// Uniform in [-scale, scale) from a counter hash: fast enough for a billion values.
float hashed_uniform(uint64_t i, float scale) {
  const uint64_t h = shardserve::splitmix64(i * 0x9e3779b97f4a7c15ull + 17);
  return scale * (static_cast<float>(h >> 40) * 0x1.0p-23f - 1.0f);
}

uint64_t next_seed() { return static_cast<uint64_t>(rng()) << 32; }

DeviceBuffer random_bf16(std::size_t n, float scale = 1.0f) {
  std::vector<uint16_t> host(n);
  const uint64_t seed = next_seed();
  for (std::size_t i = 0; i < n; ++i) host[i] = shardserve::float_to_bf16(hashed_uniform(seed + i, scale));
  DeviceBuffer d(n * 2, "bench bf16");
  kc::copy_to_device(d.data(), host.data(), n * 2);
  return d;
}

DeviceBuffer random_f32(std::size_t n, float scale = 1.0f) {
  std::vector<float> host(n);
  const uint64_t seed = next_seed();
  for (std::size_t i = 0; i < n; ++i) host[i] = hashed_uniform(seed + i, scale);
  DeviceBuffer d(n * 4, "bench f32");
  kc::copy_to_device(d.data(), host.data(), n * 4);
  return d;
}

template <typename T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer d(v.size() * sizeof(T), "bench input");
  kc::copy_to_device(d.data(), v.data(), v.size() * sizeof(T));
  return d;
}

class Bench {
 public:
  double median_us(const std::function<void(cudaStream_t)>& op) {
    return clock_.median_us(op, kRuns);
  }

  void add(const std::string& op, const std::string& shape, double bytes, double flops,
           const std::function<void(cudaStream_t)>& fn) {
    rows_.push_back({op, shape, bytes, flops, median_us(fn)});
    const Row& r = rows_.back();
    std::printf("  %-22s %-36s %9.1f us\n", r.op.c_str(), r.shape.c_str(), r.us);
    std::fflush(stdout);
  }

  std::vector<Row>& rows() { return rows_; }

 private:
  shardserve::bench::MedianTimer clock_;
  std::vector<Row> rows_;
};

}  // namespace

int main(int argc, char** argv) {
  if (!kc::cuda_device_available()) {
    std::printf("kernel_bench: no CUDA device, nothing to measure\n");
    return 0;
  }
  try {
    cudaDeviceProp prop{};
    SHARDSERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize >> 20);
    Bench bench;

    // The roofline: a 4 GiB device-to-device copy, bytes read + written.
    const std::size_t copy_bytes = std::size_t{4} << 30;
    DeviceBuffer a(copy_bytes, "copy source"), b(copy_bytes, "copy destination");
    SHARDSERVE_CUDA_CHECK(cudaMemset(a.data(), 1, copy_bytes));
    bench.add("memcpy_d2d", "4 GiB", 2.0 * copy_bytes, 0, [&](cudaStream_t s) {
      SHARDSERVE_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), copy_bytes,
                                            cudaMemcpyDeviceToDevice, s));
    });
    const double copy_bw = 2.0 * copy_bytes / (bench.rows().back().us * 1e-6);

    const int64_t H = 4096, heads = 32, kvh = 8, D = 128, F = 14336, V = 128256;
    const int64_t qn = heads * D, kvn = kvh * D, width = qn + 2 * kvn;
    const int64_t T = 4096;  // prefill-sized token batch for the element-wise ops

    {  // embedding
      auto table = random_bf16(V * H);
      std::vector<int32_t> ids(T);
      for (auto& id : ids) id = static_cast<int32_t>(rng() % V);
      auto d_ids = upload(ids);
      DeviceBuffer out(T * H * 4, "out");
      bench.add("embedding", "T=4096 H=4096", double(T) * H * (2 + 4), 0, [&](cudaStream_t s) {
        kc::embedding_lookup(table.as<bf16>(), 0, V, H, d_ids.as<int32_t>(), T, out.as<float>(), s);
      });
    }
    {  // add + RMSNorm, float32 delta (the all-reduced projection)
      auto residual = random_f32(T * H), delta = random_f32(T * H), weight = random_f32(H);
      DeviceBuffer out(T * H * 2, "out");
      bench.add("add_rms_norm", "T=4096 H=4096 f32 delta", double(T) * H * (4 + 4 + 4 + 2), 0,
                [&](cudaStream_t s) {
                  kc::add_rms_norm(residual.as<float>(), delta.as<const float>(),
                                   weight.as<float>(), out.as<bf16>(), T, H, 1e-5f, s);
                });
    }
    {  // RoPE on the q and k heads of a fused qkv row
      auto qkv = random_bf16(T * width);
      shardserve::kernels::cpu::RopeParams p;
      p.head_dim = D;
      p.theta = 500000.0;
      p.scaling = shardserve::kernels::cpu::RopeParams::Scaling::kLlama3;
      p.factor = 8.0;
      auto d_inv = upload(shardserve::kernels::cpu::rope_inverse_frequencies(p));
      std::vector<int32_t> pos(T);
      std::iota(pos.begin(), pos.end(), 0);
      auto d_pos = upload(pos);
      bench.add("rope", "T=4096 40 heads x 128", double(T) * (heads + kvh) * D * 2 * 2, 0,
                [&](cudaStream_t s) {
                  kc::apply_rope(qkv.as<bf16>(), width, d_pos.as<int32_t>(), T, heads + kvh, D,
                                 d_inv.as<float>(), s);
                });
    }
    {  // SwiGLU
      auto gate_up = random_bf16(T * 2 * F);
      DeviceBuffer out(T * F * 2, "out");
      bench.add("silu_mul", "T=4096 F=14336", double(T) * F * (4 + 2), 0, [&](cudaStream_t s) {
        kc::silu_mul(gate_up.as<bf16>(), out.as<bf16>(), T, F, s);
      });
    }
    {  // argmax over the vocabulary
      const int64_t rows = 256;
      auto logits = random_f32(rows * V, 3.0f);
      DeviceBuffer tokens(rows * 4, "tokens");
      bench.add("argmax", "256 x 128256", double(rows) * V * 4, 0, [&](cudaStream_t s) {
        kc::argmax_rows(logits.as<float>(), rows, V, V, tokens.as<int32_t>(), nullptr, s);
      });
    }
    {  // full sampling (T 0.8, top_p 0.9): the roofline counts reading the logits once
      const int64_t rows = 256;
      auto logits = random_f32(rows * V, 3.0f);
      kc::SamplingRowParams p;
      p.temperature = 0.8f;
      p.top_p = 0.9f;
      auto params = upload(std::vector<kc::SamplingRowParams>(rows, p));
      std::vector<double> u(rows);
      for (int64_t r = 0; r < rows; ++r) u[r] = (r + 0.5) / rows;
      auto uniforms = upload(u);
      DeviceBuffer tokens(rows * 4, "tokens"), logprobs(rows * 4, "logprobs");
      const std::size_t ws_bytes = kc::sampling_workspace_bytes(rows, V);
      DeviceBuffer ws(ws_bytes, "sampling workspace");
      bench.add("sample_rows top_p 0.9", "256 x 128256", double(rows) * V * 4, 0,
                [&](cudaStream_t s) {
                  kc::sample_rows(logits.as<float>(), rows, V, V,
                                  params.as<kc::SamplingRowParams>(), {}, uniforms.as<double>(),
                                  tokens.as<int32_t>(), logprobs.as<float>(), ws.data(), ws_bytes,
                                  s);
                });
    }
    {  // paged KV: write + decode attention (flash-decoding) + a prefill chunk, each through the
       // decode kernel and the tensor-core prefill kernel
      const int64_t bs = 16;
      auto run_attention = [&](const char* name, int64_t seqs, int64_t context, int64_t q_tokens) {
        const int64_t blocks_per_seq = (context + bs - 1) / bs;
        const int64_t num_blocks = seqs * blocks_per_seq;
        auto k = random_bf16(num_blocks * bs * kvn), v = random_bf16(num_blocks * bs * kvn);
        kc::PagedKvPool pool{k.as<bf16>(), v.as<bf16>(), num_blocks, bs, kvh, D};
        std::vector<int32_t> perm(num_blocks);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        const int64_t tokens = seqs * q_tokens;
        std::vector<int32_t> positions, offsets, slots;
        for (int64_t sq = 0; sq < seqs; ++sq) {
          for (int64_t i = 0; i < q_tokens; ++i) {
            const int64_t pos = context - q_tokens + i;
            positions.push_back(static_cast<int32_t>(pos));
            offsets.push_back(static_cast<int32_t>(sq * blocks_per_seq));
            slots.push_back(static_cast<int32_t>(perm[sq * blocks_per_seq + pos / bs] * bs + pos % bs));
          }
        }
        auto d_blocks = upload(perm), d_pos = upload(positions), d_off = upload(offsets),
             d_slots = upload(slots);
        auto qkv = random_bf16(tokens * width);
        DeviceBuffer out(tokens * qn * 2, "out");
        DeviceBuffer ws(std::size_t{256} << 20, "workspace");
        const auto split = kc::plan_attention_split(tokens, heads, kvh, D, context,
                                                    132, ws.bytes());
        const kc::AttentionBatch batch{d_pos.as<int32_t>(), d_off.as<int32_t>(),
                                       d_blocks.as<int32_t>(), tokens};
        const double kv_bytes = double(seqs) * context * kvn * 2 * 2;
        const double flops = 4.0 * heads * D * double(seqs) *
                             (q_tokens == 1 ? double(context)
                                            : double(q_tokens) * (2 * context - q_tokens + 1) / 2);
        const std::string shape = std::to_string(seqs) + " seq x ctx " + std::to_string(context) +
                                  " x " + std::to_string(q_tokens) + " q, splits " +
                                  std::to_string(split.num_splits);
        bench.add(name, shape, kv_bytes + double(tokens) * qn * 2 * 2, flops,
                  [&](cudaStream_t s) {
                    kc::paged_attention(pool, qkv.as<bf16>(), width, out.as<bf16>(), qn, batch,
                                        heads, 0.088f, split, ws.data(), ws.bytes(), s);
                  });
        {  // the same tokens through the tensor-core prefill kernel (decode tokens as chunks of 1)
          std::vector<int32_t> q_begin, q_len, first_pos, tables;
          for (int64_t sq = 0; sq < seqs; ++sq) {
            q_begin.push_back(static_cast<int32_t>(sq * q_tokens));
            q_len.push_back(static_cast<int32_t>(q_tokens));
            first_pos.push_back(static_cast<int32_t>(context - q_tokens));
            tables.push_back(static_cast<int32_t>(sq * blocks_per_seq));
          }
          auto d_qb = upload(q_begin), d_ql = upload(q_len), d_fp = upload(first_pos),
               d_tab = upload(tables);
          const kc::PrefillSequences chunks{d_qb.as<int32_t>(), d_ql.as<int32_t>(),
                                            d_fp.as<int32_t>(), d_tab.as<int32_t>(),
                                            d_blocks.as<int32_t>(), seqs, q_tokens};
          bench.add("prefill_attention_tc", std::to_string(seqs) + " seq x ctx " +
                        std::to_string(context) + " x " + std::to_string(q_tokens) + " q",
                    kv_bytes + double(tokens) * qn * 2 * 2, flops, [&](cudaStream_t s) {
                      kc::paged_prefill_attention(pool, qkv.as<bf16>(), width, out.as<bf16>(),
                                                  qn, chunks, heads, 0.088f, s);
                    });
        }
        if (q_tokens == 1 && seqs == 64) {
          bench.add("write_kv", std::to_string(tokens) + " tokens x 1024 x 2",
                    double(tokens) * kvn * 2 * 2 * 2, 0, [&](cudaStream_t s) {
                      kc::write_kv(pool, qkv.as<bf16>() + qn, qkv.as<bf16>() + qn + kvn, width,
                                   d_slots.as<int32_t>(), tokens, s);
                    });
        }
      };
      run_attention("decode_attention", 1, 128, 1);
      run_attention("decode_attention", 256, 128, 1);
      run_attention("decode_attention", 256, 1024, 1);
      run_attention("decode_attention", 64, 4096, 1);
      run_attention("decode_attention", 8, 8192, 1);
      run_attention("decode_attention", 1, 32768, 1);
      run_attention("prefill_attention", 1, 2048, 2048);
    }
    {  // bf16 GEMMs through cuBLASLt: decode (weight-bandwidth bound) and prefill (compute)
      kc::GemmBf16 gemm;
      struct G { const char* name; int64_t n, k; };
      for (const G g : {G{"gemm_qkv", width, H}, G{"gemm_gate_up", 2 * F, H}, G{"gemm_down", H, F}}) {
        auto w = random_bf16(g.n * g.k, 0.02f);
        for (int64_t m : {1, 16, 64, 4096}) {
          auto x = random_bf16(m * g.k);
          DeviceBuffer y(m * g.n * 2, "y");
          const double bytes = double(g.n) * g.k * 2 + double(m) * (g.k + g.n) * 2;
          bench.add(g.name, "m=" + std::to_string(m) + " n=" + std::to_string(g.n) + " k=" +
                                std::to_string(g.k),
                    bytes, 2.0 * m * g.n * g.k, [&](cudaStream_t s) {
                      gemm.run(x.as<bf16>(), w.as<bf16>(), y.data(),
                               {.m = m, .n = g.n, .k = g.k, .out = kc::GemmOut::kBf16}, s);
                    });
        }
      }
    }

    std::printf("\ncopy roofline: %.2f TB/s (bytes read + written)\n", copy_bw / 1e12);
    std::printf("%-20s %-38s %10s %10s %9s %9s %8s\n", "op", "shape", "MB", "us", "TB/s",
                "roofline", "TFLOP/s");
    FILE* tsv = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
    if (tsv) std::fprintf(tsv, "op\tshape\tbytes\tus\tTBps\tfraction_of_copy_roofline\tTFLOPs\n");
    for (const Row& r : bench.rows()) {
      const double bw = r.bytes / (r.us * 1e-6);
      const double tflops = r.flops > 0 ? r.flops / (r.us * 1e-6) / 1e12 : 0;
      std::printf("%-20s %-38s %10.1f %10.1f %9.2f %8.0f%% %8.1f\n", r.op.c_str(), r.shape.c_str(),
                  r.bytes / 1e6, r.us, bw / 1e12, 100.0 * bw / copy_bw, tflops);
      if (tsv) std::fprintf(tsv, "%s\t%s\t%.0f\t%.2f\t%.3f\t%.3f\t%.1f\n", r.op.c_str(),
                            r.shape.c_str(), r.bytes, r.us, bw / 1e12, bw / copy_bw, tflops);
    }
    if (tsv) std::fclose(tsv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
