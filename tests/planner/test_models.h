#pragma once
// Model shapes written out by hand for the planner's tests, so that the expected numbers in
// the tests do not come from the code (presets, parsing) under test.
#include <cstdint>

#include "model/model_config.h"

namespace shardserve::planner::testing {

inline model::ModelConfig llama_shape(int64_t layers, int64_t hidden, int64_t intermediate,
                                      int64_t heads, int64_t kv_heads, int64_t vocab,
                                      bool tied = false) {
  model::ModelConfig c;
  c.model_type = "llama";
  c.num_hidden_layers = layers;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.vocab_size = vocab;
  c.max_position_embeddings = 131072;
  c.tie_word_embeddings = tied;
  return c;
}

// Llama-3.1-70B: 80 layers, hidden 8192, MLP 28672, 64 heads, 8 KV heads, vocab 128256.
inline model::ModelConfig llama31_70b() { return llama_shape(80, 8192, 28672, 64, 8, 128256); }

// A small GQA model whose sums fit in a comment: 2 layers, hidden 256, MLP 512, 4 heads of 64,
// 2 KV heads, vocab 1000.
inline model::ModelConfig tiny() { return llama_shape(2, 256, 512, 4, 2, 1000); }

}  // namespace shardserve::planner::testing
