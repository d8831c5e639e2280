#pragma once
// Test stand-ins for a worker replica and a detokenizer.
//
// FakeWorker plays a replica's KV memory: every slot remembers the (token, position) last
// written to it. Executing a plan checks what a real forward pass would silently get wrong --
// that the positions a sequence attends to ([0, start_pos)) hold exactly its tokens, that the
// plan's new tokens are the sequence's, that no two sequences write one block -- and then
// writes the new tokens. The caller supplies the true token lists, kept independently of the
// scheduler.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/text_stream.h"
#include "messages/step_plan.h"

namespace shardserve::coordinator::testing {

class FakeWorker {
 public:
  FakeWorker(int32_t num_blocks, int32_t block_size)
      : block_size_(block_size), slots_(static_cast<size_t>(num_blocks) * block_size, {-1, -1}) {}

  // A speculative verify's outcome: given the sequence and its draft tokens, the tokens to
  // return (1 .. drafts.size() + 1: accepted drafts, then the target's own token).
  using Verify = std::function<std::vector<int32_t>(uint64_t, const std::vector<int32_t>&)>;
  // Fills the placeholders of draft-model drafts (DraftSource::kDraftModel).
  using Draft = std::function<int32_t(uint64_t)>;

  // Checks and "runs" the plan; returns the result with tokens drawn from sample(seq_id). A
  // speculative verify returns verify(seq_id, drafts) (default: every draft rejected); the KV of
  // every draft token is written like any token's, so a scheduler that keeps a rejected draft's
  // KV as valid is caught by the attention check of a later step.
  messages::StepResult execute(const messages::StepPlan& plan,
                               const std::function<const std::vector<int32_t>&(uint64_t)>& truth,
                               const std::function<int32_t(uint64_t)>& sample,
                               const Verify& verify = nullptr, const Draft& draft = nullptr) {
    messages::StepResult result;
    result.step_id = plan.step_id;
    result.sample_offsets.push_back(0);
    std::map<int32_t, uint64_t> writer;            // block -> the one sequence writing it
    std::map<int32_t, std::set<uint64_t>> readers;  // block -> sequences attending to it
    std::set<uint64_t> seen;
    for (const auto& w : plan.seqs) {
      EXPECT_TRUE(seen.insert(w.seq_id).second) << "sequence " << w.seq_id << " twice in a plan";
      const auto& tokens = truth(w.seq_id);
      EXPECT_GE(w.start_pos, 0);
      EXPECT_GE(w.num_draft, 0);
      const int32_t real = w.num_tokens - w.num_draft;  // the sequence's own tokens
      EXPECT_GE(real, 1);
      EXPECT_LE(w.start_pos + real, static_cast<int32_t>(tokens.size()))
          << "seq " << w.seq_id << " computes past its known tokens";
      const bool reaches_end = w.start_pos + real == static_cast<int32_t>(tokens.size());
      EXPECT_EQ(w.num_logits, reaches_end ? 1 + w.num_draft : 0)
          << "seq " << w.seq_id << ": logits exactly when the chunk reaches the last token";
      if (w.num_draft > 0) {
        EXPECT_EQ(real, 1) << "seq " << w.seq_id << " speculates outside a decode";
      }
      EXPECT_EQ(w.num_blocks, (w.start_pos + w.num_tokens + block_size_ - 1) / block_size_);
      const int32_t* table = plan.block_ids.data() + w.block_offset;
      const int32_t num_blocks = static_cast<int32_t>(slots_.size()) / block_size_;
      for (int32_t i = 0; i < w.num_blocks; ++i)
        EXPECT_TRUE(table[i] >= 0 && table[i] < num_blocks) << "block id " << table[i];
      for (int32_t p = 0; p < w.start_pos; ++p) {
        const auto& slot = slot_at(table, p);
        EXPECT_EQ(slot, std::make_pair(tokens[p], p))
            << "seq " << w.seq_id << " attends to position " << p << " in block "
            << table[p / block_size_] << " holding another token's KV";
        readers[table[p / block_size_]].insert(w.seq_id);
        if (slot != std::make_pair(tokens[p], p)) break;
      }
      for (int32_t i = 0; i < real; ++i) {
        const int32_t p = w.start_pos + i;
        EXPECT_EQ(plan.token_ids[w.token_offset + i], tokens[p])
            << "seq " << w.seq_id << " plan token at position " << p;
      }
      std::vector<int32_t>& drafts = fed_drafts_[w.seq_id];
      drafts.clear();
      for (int32_t i = real; i < w.num_tokens; ++i) {
        const int32_t t = plan.token_ids[w.token_offset + i];
        if (w.draft_source == messages::DraftSource::kDraftModel) {
          EXPECT_EQ(t, -1) << "seq " << w.seq_id << ": a draft-model slot is not a placeholder";
          drafts.push_back(draft ? draft(w.seq_id) : 0);
        } else {
          EXPECT_GE(t, 0) << "seq " << w.seq_id << " prompt-lookup draft";
          drafts.push_back(t);
        }
      }
      for (int32_t b = w.start_pos / block_size_; b < w.num_blocks; ++b)
        EXPECT_TRUE(writer.emplace(table[b], w.seq_id).second)
            << "block " << table[b] << " written by two sequences in step " << plan.step_id;
      if (w.num_logits > 0) {
        EXPECT_GE(w.sampling_index, 0);
        EXPECT_LT(w.sampling_index, static_cast<int32_t>(plan.sampling.size()));
        result.seq_ids.push_back(w.seq_id);
        std::vector<int32_t> out;
        if (w.num_draft > 0 && verify) {
          out = verify(w.seq_id, drafts);
          EXPECT_TRUE(out.size() >= 1 && out.size() <= drafts.size() + 1);
        } else {
          out = {sample(w.seq_id)};
        }
        for (int32_t id : out) {
          messages::SampledToken t;
          t.token_id = id;
          result.tokens.push_back(t);
        }
        result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
      } else {
        EXPECT_EQ(w.sampling_index, -1);
      }
    }
    for (const auto& [b, seq] : writer)
      for (uint64_t r : readers[b])
        EXPECT_EQ(r, seq) << "block " << b << " written by seq " << seq << " while seq " << r
                          << " attends to it";
    // Writes after all checks: attention reads the KV as it was before the step.
    for (const auto& w : plan.seqs) {
      const int32_t* table = plan.block_ids.data() + w.block_offset;
      const int32_t real = w.num_tokens - w.num_draft;
      for (int32_t i = 0; i < w.num_tokens; ++i) {
        const int32_t p = w.start_pos + i;
        const int32_t t =
            i < real ? plan.token_ids[w.token_offset + i] : fed_drafts_[w.seq_id][i - real];
        slot_at(table, p) = {t, p};
      }
    }
    return result;
  }

  // The draft tokens of the sequence's last step (as filled in for draft-model drafts).
  const std::vector<int32_t>& drafts_of(uint64_t seq) { return fed_drafts_[seq]; }

 private:
  std::pair<int32_t, int32_t>& slot_at(const int32_t* table, int32_t pos) {
    return slots_[static_cast<size_t>(table[pos / block_size_]) * block_size_ + pos % block_size_];
  }
  int32_t block_size_;
  std::vector<std::pair<int32_t, int32_t>> slots_;
  std::map<uint64_t, std::vector<int32_t>> fed_drafts_;
};

// Detokenizer stand-in: token t reads as piece(t). Some tokens read as "" (as a byte of a
// multi-byte character would), some as two characters, so stop strings straddle tokens.
inline std::string piece_of(int32_t t) {
  if (t % 7 == 0) return "";
  return std::string(1 + t % 2, "abc"[t % 3]);
}

class PieceStream : public TextStream {
 public:
  std::string push(int32_t token) override { return piece_of(token); }
};

// One character per token: 'a' + t for t < 26.
class CharStream : public TextStream {
 public:
  std::string push(int32_t token) override { return std::string(1, static_cast<char>('a' + token)); }
};

}  // namespace shardserve::coordinator::testing
