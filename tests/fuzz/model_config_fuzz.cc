// config.json (model/model_config.h): arbitrary bytes -> JSON -> parse_model_config.
// Invariants: only shardserve::Error escapes (a type mismatch is named, never a nlohmann
// exception); a config that parses has positive sizes, GQA groups that divide, an even head_dim,
// token ids inside the vocabulary, and the derived sizes (q_size, kv_size) do not overflow.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/error.h"
#include "model/model_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardserve;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const model::ModelConfig c = model::parse_model_config(j, "config.json");
    FUZZ_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 &&
                   c.num_hidden_layers > 0 && c.num_attention_heads > 0 &&
                   c.num_key_value_heads > 0 && c.head_dim > 0 && c.head_dim % 2 == 0 &&
                   c.max_position_embeddings > 0 && c.rms_norm_eps > 0,
               text);
    FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, text);
    FUZZ_CHECK(c.q_size() > 0 && c.kv_size() > 0 && c.gqa_group() > 0, text);
    for (int32_t id : c.eos_token_ids) FUZZ_CHECK(id >= 0 && id < c.vocab_size, text);
    if (c.bos_token_id) FUZZ_CHECK(*c.bos_token_id >= 0 && *c.bos_token_id < c.vocab_size, text);
  } catch (const Error& e) {
    FUZZ_CHECK(*e.what() != '\0', text);
  }
  return 0;
}
