#pragma once
// The BPE model of a byte-level tokenizer.json: a vocabulary and ranked merges over raw bytes
// (the tokenizer.json spells them in the byte-level alphabet; see ByteLevelAlphabet). Turns one
// pre-tokenized piece into token ids exactly as HuggingFace's BPE model does.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace shardserve::model {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  // A piece that is itself in the vocabulary becomes that token without merging (Llama 3).
  bool ignore_merges = false;
  // A byte with no token of its own becomes <0xNN> tokens for the alphabet character's bytes.
  bool byte_fallback = false;
  std::optional<int32_t> unk_id;
  bool fuse_unk = false;
};

class BpeModel {
 public:
  // `vocab` maps raw bytes to ids; `merges` are (left, right) raw-byte pairs, best first; each
  // side and their concatenation must be in `vocab` (checked by the caller, which knows where
  // in the file each came from). `fallback_vocab` maps spelled tokens such as "<0x41>".
  BpeModel(StringIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           const StringIdMap& fallback_vocab, BpeOptions options);

  // Appends the ids of one pre-tokenized piece (raw bytes) to `ids`.
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  StringIdMap vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_;
  // byte_fallback: the <0xNN> ids for each byte's alphabet character, empty if incomplete.
  std::array<std::vector<int32_t>, 256> fallback_ids_;
  BpeOptions options_;
};

}  // namespace shardserve::model
