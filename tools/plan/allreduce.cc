#include "tools/plan/allreduce.h"

#include "common/error.h"

namespace shardserve::planner {

int64_t allreduce_bytes_per_token(const model::ModelConfig& config, int64_t activation_bytes) {
  require(activation_bytes > 0, "activation bytes must be positive, got {}", activation_bytes);
  constexpr int64_t kAllReducesPerLayer = 2;  // after attention, after the MLP
  return kAllReducesPerLayer * config.num_hidden_layers * config.hidden_size * activation_bytes;
}

double ring_allreduce_bytes_per_gpu(double message_bytes, int64_t tp) {
  require(tp >= 1, "tensor-parallel size must be at least 1, got {}", tp);
  require(message_bytes >= 0, "all-reduce message must not be negative, got {} bytes",
          message_bytes);
  const double n = static_cast<double>(tp);
  return 2.0 * (n - 1.0) / n * message_bytes;
}

}  // namespace shardserve::planner
