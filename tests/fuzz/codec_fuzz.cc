// The coordinator<->worker msgpack codec (messages/codec.h): arbitrary bytes -> decode.
// Invariants: only shardserve::Error escapes; a decoded message re-encodes to bytes that decode
// to a message of the same kind which encodes to the same bytes again (encoding is a function
// of the value).
#include <cstdint>
#include <string_view>
#include <variant>

#include "common/error.h"
#include "messages/codec.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardserve;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const messages::Message m = messages::decode(bytes);
    const std::string once = std::visit([](const auto& v) { return messages::encode(v); }, m);
    const messages::Message m2 = messages::decode(once);
    FUZZ_CHECK(messages::kind_of(m2) == messages::kind_of(m), "kind changed");
    const std::string twice = std::visit([](const auto& v) { return messages::encode(v); }, m2);
    FUZZ_CHECK(once == twice, "re-encoding differs");
  } catch (const Error& e) {
    FUZZ_CHECK(*e.what() != '\0', "empty error");
  }
  return 0;
}
