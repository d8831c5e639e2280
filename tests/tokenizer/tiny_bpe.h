#pragma once
// A hand-made byte-level BPE tokenizer.json, small enough to check merges by hand:
//   ids 0..255: the byte-level alphabet in byte order (so 'a' = 97, 'Ġ' (space) = 32);
//   merges, best first: Ġ t -> Ġt (256), h e -> he (257), Ġt he -> Ġthe (258),
//                       a a -> aa (259), aa aa -> aaaa (260);
//   Ġxyz (261): in the vocabulary, but no merge makes it;
//   added (ids follow the vocabulary, as HF requires): <|begin_of_text|> 262 and <|eot_id|> 263
//          (special), <|im|> 264 (special), <|im|>end 265 (not special), <mask> 266 (special,
//          lstrip + rstrip).
// The expected ids in the tests were checked against HuggingFace tokenizers 0.22.
#include <nlohmann/json.hpp>

#include "model/tokenizer/byte_level_alphabet.h"

namespace shardserve::model::testing {

constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

inline nlohmann::json tiny_bpe_json(bool ignore_merges = true) {
  const ByteLevelAlphabet alphabet;
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    vocab[std::string(alphabet.char_for(static_cast<unsigned char>(b)))] = b;
  }
  vocab["Ġt"] = 256;
  vocab["he"] = 257;
  vocab["Ġthe"] = 258;
  vocab["aa"] = 259;
  vocab["aaaa"] = 260;
  vocab["Ġxyz"] = 261;
  const auto added = [](int id, const char* content, bool special, bool strip = false) {
    return nlohmann::json{{"id", id},          {"content", content}, {"single_word", false},
                          {"lstrip", strip},   {"rstrip", strip},    {"normalized", false},
                          {"special", special}};
  };
  return nlohmann::json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {added(262, "<|begin_of_text|>", true), added(263, "<|eot_id|>", true),
        added(264, "<|im|>", true), added(265, "<|im|>end", false), added(266, "<mask>", true, true)}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kLlama3Pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "Sequence"},
        {"processors",
         {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
          {{"type", "TemplateProcessing"},
           {"single",
            {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
           {"pair", nlohmann::json::array()},
           {"special_tokens",
            {{"<|begin_of_text|>",
              {{"id", "<|begin_of_text|>"}, {"ids", {262}}, {"tokens", {"<|begin_of_text|>"}}}}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", ignore_merges},
        {"vocab", vocab},
        {"merges", {"Ġ t", "h e", "Ġt he", "a a", "aa aa"}}}}};
}

}  // namespace shardserve::model::testing
