// The ZeroMQ front end's decoder: one frame -> decode_client_message (strict) and, when it is a
// submit, validate_submit against the llama3-bpe fixture (tokenizer, chat template); the same
// bytes through peek_request_id and decode_server_message (lenient, what clients run).
// Invariants: only ProtocolError escapes; an error has a message; a decoded message re-encodes
// to a frame that decodes to the same message; a validated request fits the context.
#include <cstdint>
#include <string_view>

#include "api/protocol.h"
#include "api/validate.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace shardserve;

struct Service {
  std::unique_ptr<model::Tokenizer> tokenizer = model::load_tokenizer(fuzz::fixture("llama3-bpe"));
  api::ModelInfo model;
  api::ValidationContext context;
  Service() {
    model.name = "fuzz";
    model.vocab_size = tokenizer->vocab_size();
    model.max_model_len = 256;
    model.block_size = 16;
    model.kv_blocks_per_replica = 8;
    model.max_num_seqs = 4;
    model.text = true;
    context.model = &model;
    context.tokenizer = tokenizer.get();
    context.chat_format = api::resolve_chat_format(*tokenizer, std::nullopt);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Service service;
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  try {
    const api::ClientMessage m = api::decode_client_message(frame);
    const std::string again = api::encode(m);
    FUZZ_CHECK(api::decode_client_message(again) == m, again);
    if (const auto* s = std::get_if<api::SubmitRequest>(&m)) {
      try {
        const api::ValidatedRequest v = api::validate_submit(*s, service.context);
        FUZZ_CHECK(v.prompt_tokens > 0 && v.max_tokens > 0 &&
                       v.prompt_tokens + v.max_tokens <= api::request_token_limit(service.model),
                   again);
        for (int32_t id : v.spec.prompt_token_ids)
          FUZZ_CHECK(id >= 0 && id < service.model.vocab_size, again);
      } catch (const api::ProtocolError& e) {
        FUZZ_CHECK(*e.what() != '\0', again);
      }
    }
  } catch (const api::ProtocolError& e) {
    FUZZ_CHECK(*e.what() != '\0', frame);
  }
  (void)api::peek_request_id(frame);
  try {
    const api::ServerMessage m = api::decode_server_message(frame);
    (void)api::encode(m);
  } catch (const api::ProtocolError& e) {
    FUZZ_CHECK(*e.what() != '\0', frame);
  }
  return 0;
}
