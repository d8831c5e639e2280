// The gateway's request parsing: an HTTP body -> JSON -> parse_request, for /v1/completions
// (first byte even) or /v1/chat/completions (odd). Invariants: only OpenAIException escapes
// parse_request, with a 4xx status and a message; a parsed request has n * prompts submits, and
// every submit encodes to a frame the coordinator's strict decoder accepts.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "api/protocol.h"
#include "gateway/openai.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardserve;
  if (size == 0) return 0;
  const auto endpoint =
      data[0] % 2 == 0 ? gateway::Endpoint::kCompletions : gateway::Endpoint::kChatCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  static const api::ModelInfo model = [] {
    api::ModelInfo m;
    m.name = "fuzz";
    m.vocab_size = 1000;
    m.max_model_len = 256;
    m.text = true;
    return m;
  }();
  nlohmann::json j;
  try {
    j = gateway::parse_json_body(body);
  } catch (const gateway::OpenAIException& e) {
    FUZZ_CHECK(e.error().status == 400 && !e.error().message.empty(), body);
    return 0;
  }
  try {
    gateway::ParsedRequest r = gateway::parse_request(endpoint, j, model, /*random_seed=*/7);
    FUZZ_CHECK(r.n >= 1 && r.num_prompts >= 1 &&
                   r.submits.size() == static_cast<size_t>(r.n) * r.num_prompts,
               body);
    for (std::size_t i = 0; i < r.submits.size(); ++i) {
      r.submits[i].id = "x-" + std::to_string(i);
      const std::string frame = api::encode(api::ClientMessage{r.submits[i]});
      try {
        (void)api::decode_client_message(frame);
      } catch (const api::ProtocolError& e) {
        fuzz::broken("the gateway made a submit the coordinator cannot decode", e.what());
      }
    }
  } catch (const gateway::OpenAIException& e) {
    FUZZ_CHECK(e.error().status >= 400 && e.error().status < 500 && !e.error().message.empty(),
               body);
  }
  return 0;
}
