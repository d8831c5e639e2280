// The tokenizers themselves, on the committed fixtures (llama3-bpe: tokenizer.json byte-level
// BPE; llama2-sp: SentencePiece). The input is text to encode, and also (2 bytes each) token ids
// to decode, some outside the vocabulary. Invariants: encode throws only shardserve::Error
// (invalid UTF-8) and gives ids inside the vocabulary; byte-level BPE decodes its own encoding
// back to the text; decode never fails; the streaming detokenizer gives exactly what decode()
// gives.
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "model/tokenizer/incremental_detokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace shardserve;

void stream_matches_decode(const model::Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (bool skip : {false, true}) {
    const std::string whole = tok.decode(ids, skip);
    model::IncrementalDetokenizer stream(tok, skip);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    FUZZ_CHECK(streamed == whole, whole);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto bpe = model::load_tokenizer(fuzz::fixture("llama3-bpe"));
  static const auto sp = model::load_tokenizer(fuzz::fixture("llama2-sp"));
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid = !model::find_invalid_utf8(text).has_value();
  for (const model::Tokenizer* tok : {bpe.get(), sp.get()}) {
    const int32_t vocab = tok->vocab_size();
    for (bool special : {false, true}) {
      std::vector<int32_t> ids;
      try {
        ids = tok->encode(text, special);
      } catch (const Error& e) {
        FUZZ_CHECK(!valid, e.what());
        continue;
      }
      FUZZ_CHECK(valid, "invalid UTF-8 was encoded");
      for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab, text);
      if (tok == bpe.get() && !special) FUZZ_CHECK(tok->decode(ids, false) == text, text);
      stream_matches_decode(*tok, ids);
    }
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 1 < size; i += 2) {
      const int32_t raw = static_cast<int16_t>(data[i] | (data[i + 1] << 8));
      ids.push_back(raw % (vocab + 8));  // mostly inside, some past the end, some negative
    }
    stream_matches_decode(*tok, ids);
  }
  return 0;
}
