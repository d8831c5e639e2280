// tokenizer.json (model/tokenizer/bpe_tokenizer.h): arbitrary bytes -> JSON -> BpeTokenizer.
// Invariants: only shardserve::Error escapes (an unsupported or malformed part is named); a
// tokenizer that loads encodes a few fixed texts to ids inside its vocabulary, decodes any ids
// without failing, and streams (IncrementalDetokenizer) exactly what decode() gives.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/error.h"
#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/incremental_detokenizer.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardserve;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  std::unique_ptr<model::BpeTokenizer> tok;
  try {
    tok = std::make_unique<model::BpeTokenizer>(j, "tokenizer.json", model::TokenizerConfig{});
  } catch (const Error& e) {
    FUZZ_CHECK(*e.what() != '\0', text);
    return 0;
  }
  const int32_t vocab = tok->vocab_size();
  for (const char* sample : {"Hello world", " the  aaaa\n\n12345 <|eot_id|>", "\xc3\xa9t\xc3\xa9"}) {
    std::vector<int32_t> ids;
    try {
      ids = tok->encode(sample, true);
    } catch (const Error&) {
      continue;  // e.g. a byte the vocabulary has no token for
    }
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab, sample);
    for (bool skip : {false, true}) {
      const std::string whole = tok->decode(ids, skip);
      model::IncrementalDetokenizer stream(*tok, skip);
      std::string streamed;
      for (int32_t id : ids) streamed += stream.push(id);
      streamed += stream.flush();
      FUZZ_CHECK(streamed == whole, sample);
    }
  }
  const std::vector<int32_t> odd = {-1, 0, vocab - 1, vocab, vocab + 5, 1 << 30};
  (void)tok->decode(odd, false);
  for (int32_t id : odd) (void)tok->token_text(id);
  return 0;
}
