#pragma once
// Tensor-parallel communication per token: the row-parallel o_proj and down_proj each leave a
// partial sum of the hidden state on every rank, so each layer all-reduces the token's hidden
// vector twice (after attention, after the MLP).
#include <cstdint>

#include "model/model_config.h"

namespace shardserve::planner {

// 2 * num_hidden_layers * hidden_size * activation_bytes: the data one token's forward pass
// all-reduces (the message size, not yet what crosses the wire).
int64_t allreduce_bytes_per_token(const model::ModelConfig& config, int64_t activation_bytes);

// What each GPU sends (and, symmetrically, receives) for a ring all-reduce of `message_bytes`
// over tp GPUs: a reduce-scatter and an all-gather, each moving (tp - 1) / tp of the message,
// so 2 * (tp - 1) / tp * message_bytes. Zero for tp = 1.
double ring_allreduce_bytes_per_gpu(double message_bytes, int64_t tp);

}  // namespace shardserve::planner
