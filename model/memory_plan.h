#pragma once
// The memory arithmetic of one tensor-parallel rank: the bytes its weight shards take and the
// bytes one token's keys and values take, for a model, a TP size, a weight format and a KV
// dtype. It is the single source for the planner (which predicts capacity) and the worker
// (which sizes its paged KV pool with kv_pool_bytes + kv_blocks_that_fit), so that the
// capacity an operator is promised is the capacity the worker allocates.
//
// Sharding follows the usual Megatron/vLLM layout for LLaMA:
//   q/k/v, gate/up: column-parallel (output rows split over tp)
//   o, down:        row-parallel (input columns split over tp)
//   embedding, LM head: vocab-parallel (ceil(vocab / tp) rows per rank)
//   RMSNorm weights: replicated
//   KV heads: kv_heads / tp per rank; when tp > kv_heads each head is replicated on
//             tp / kv_heads ranks, so a rank always holds at least one.
#include <cstdint>
#include <string>
#include <string_view>

#include "model/model_config.h"

namespace shardserve::model {

// How the decoder layers' linear weights (q, k, v, o, gate, up, down) are stored. Embeddings,
// norms and the LM head stay bf16 in every format, as GPTQ/AWQ checkpoints keep them.
struct WeightFormat {
  enum class Kind { kBf16, kFp16, kInt8, kInt4 };
  Kind kind = Kind::kBf16;
  // Input features sharing one scale and zero point, as GPTQ's group_size: > 0 a group width,
  // -1 one group over all input features. kInt8 with 0: symmetric per-output-channel (one
  // scale per row, no zero point). Unused for kBf16 / kFp16.
  int64_t group_size = 0;

  // "bf16", "fp16", "int8", "int8-g128", "int4-g128", "int4-g-1": what parse_weight_format reads.
  std::string name() const;
};

// Accepts bf16, fp16, int8 (per-output-channel), int4 (= int4-g128), int4-g<N> and int8-g<N>
// (GPTQ group-wise, N a positive width or -1).
WeightFormat parse_weight_format(std::string_view text);

// The format a GPTQ / AWQ checkpoint's quantization_config describes (bits and group_size).
WeightFormat weight_format_of(const QuantizationConfig& quantization);

enum class KvDtype { kBf16, kFp16, kFp32, kFp8 };

// Accepts bf16, fp16, fp32, fp8.
KvDtype parse_kv_dtype(std::string_view text);
int64_t kv_dtype_bytes(KvDtype dtype);
std::string_view kv_dtype_name(KvDtype dtype);

// The attention heads one rank computes and stores.
struct HeadLayout {
  int64_t q_heads_per_rank = 0;
  int64_t kv_heads_per_rank = 0;  // max(1, kv_heads / tp)
  int64_t kv_replicas = 1;        // ranks holding each KV head: max(1, tp / kv_heads)
};

// Throws when tp < 1 or tp does not split the heads or the MLP evenly; the message names the
// values. KV heads need kv_heads % tp == 0 (tp <= kv_heads) or tp % kv_heads == 0 (tp > kv_heads).
HeadLayout shard_heads(const ModelConfig& config, int64_t tp);

// Stored bytes of one linear layer's weight of shape [out_features, in_features]:
//   bf16/fp16:     out * in * 2
//   int8:          out * in (int8 weight) + out * 2 (one bf16 scale per output channel)
//   b-bit group g: as GPTQ stores it (b = 4 or 8, pf = 32 / b values per int32,
//                  G = in / g groups, or 1 when g = -1):
//                    qweight int32 [in / pf, out] = out * in * b / 8
//                    scales  fp16  [G, out]       = G * out * 2
//                    qzeros  int32 [G, out / pf]  = G * out * b / 8
//                  AWQ packs along the output instead (qweight [in, out / 8], qzeros
//                  [G, out / 8]) and takes the same bytes. g_idx (int32 [in]) is not counted:
//                  only act-order kernels read it.
// Group-wise formats need in % g == 0 and out % pf == 0; otherwise it throws naming the shape.
int64_t linear_weight_bytes(int64_t out_features, int64_t in_features, const WeightFormat& format);

// One rank's weight shards. Element counts are kept next to bytes because the roofline needs
// the matmul parameter count, which a quantized format's byte count no longer gives.
struct RankWeights {
  int64_t embedding_bytes = 0;   // token embedding shard, bf16
  int64_t lm_head_bytes = 0;     // LM head shard, bf16; 0 when tied (it is the embedding)
  int64_t layer_linear_bytes = 0;  // all decoder layers' linear shards, in the weight format
  int64_t norm_bytes = 0;        // every RMSNorm weight (replicated), bf16
  int64_t layer_linear_params = 0;  // elements in layer_linear_bytes
  int64_t lm_head_params = 0;    // elements of the LM head matmul (counted even when tied)
  bool tied_embeddings = false;

  int64_t total_bytes() const {
    return embedding_bytes + lm_head_bytes + layer_linear_bytes + norm_bytes;
  }
};

RankWeights rank_weights(const ModelConfig& config, int64_t tp, const WeightFormat& format);

// The shape of one rank's paged KV cache. A block holds block_size tokens of keys and values
// for every layer and for the rank's KV heads.
struct KvLayout {
  int64_t num_layers = 0;
  int64_t kv_heads_per_rank = 0;
  int64_t head_dim = 0;
  int64_t dtype_bytes = 0;
  int64_t block_size = 0;  // tokens per block
};

KvLayout kv_layout(const ModelConfig& config, int64_t tp, KvDtype dtype, int64_t block_size);

// 2 (K and V) * num_layers * kv_heads_per_rank * head_dim * dtype_bytes.
int64_t kv_bytes_per_token(const KvLayout& layout);
// block_size * kv_bytes_per_token.
int64_t kv_bytes_per_block(const KvLayout& layout);

// Bytes the KV pool may take: floor(free_bytes * fraction), where free_bytes is what is left on
// the device after weights and workspace. Throws on free_bytes < 0 or fraction outside (0, 1].
int64_t kv_pool_bytes(int64_t free_bytes, double fraction);

// Whole blocks that fit in available_bytes (usually kv_pool_bytes(...)). Throws on a negative
// size or an invalid layout; returns 0 when not even one block fits.
int64_t kv_blocks_that_fit(int64_t available_bytes, const KvLayout& layout);

// Blocks one sequence of `tokens` tokens occupies: ceil(tokens / block_size).
int64_t kv_blocks_for_tokens(int64_t tokens, const KvLayout& layout);

}  // namespace shardserve::model
