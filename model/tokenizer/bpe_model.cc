#include "model/tokenizer/bpe_model.h"

#include <fmt/format.h>

#include <queue>

#include "model/tokenizer/byte_level_alphabet.h"

namespace shardserve::model {

BpeModel::BpeModel(StringIdMap vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   const StringIdMap& fallback_vocab, BpeOptions options)
    : vocab_(std::move(vocab)), options_(options) {
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t l = vocab_.find(left)->second;
    const int32_t r = vocab_.find(right)->second;
    const int32_t id = vocab_.find(left + right)->second;
    // A repeated pair takes its later rank, as HF's merge map (built by insertion) does.
    merges_[pair_key(l, r)] = Merge{static_cast<int32_t>(rank), id};
  }
  const ByteLevelAlphabet alphabet;
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
    if (options_.byte_fallback) {
      std::vector<int32_t> ids;
      for (const char c : alphabet.char_for(static_cast<unsigned char>(b))) {
        const auto f = fallback_vocab.find(fmt::format("<0x{:02X}>", static_cast<unsigned char>(c)));
        if (f == fallback_vocab.end()) {
          ids.clear();
          break;
        }
        ids.push_back(f->second);
      }
      fallback_ids_[b] = std::move(ids);
    }
  }
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  if (options_.ignore_merges) {
    const auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  // Symbols form a linked list over the piece; a merged-away symbol gets len 0.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  const auto add = [&](int32_t id, uint32_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, n + 1, len});
  };
  bool last_was_unk = false;
  for (const char c : piece) {
    const auto b = static_cast<unsigned char>(c);
    if (byte_ids_[b] >= 0) {
      add(byte_ids_[b], 1);
      last_was_unk = false;
    } else if (!fallback_ids_[b].empty()) {
      for (const int32_t id : fallback_ids_[b]) add(id, 1);
      last_was_unk = false;
    } else if (options_.unk_id) {
      if (options_.fuse_unk && last_was_unk) {
        symbols.back().len += 1;
      } else {
        add(*options_.unk_id, 1);
      }
      last_was_unk = true;
    }
    // Without a token, a fallback or an unknown token the byte is dropped, as in HF.
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // Lowest rank first; among equal ranks the leftmost (HF's Word::merge_all).
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t id;
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  const auto consider = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    const auto it = merges_.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push(Candidate{it->second.rank, pos, it->second.id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Stale entry: one side has merged since it was queued.
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.id != top.id) continue;
    left.id = top.id;
    left.len += right.len;
    left.next = right.next;
    right.len = 0;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids.push_back(s.id);
  }
}

}  // namespace shardserve::model
