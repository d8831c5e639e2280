// The msgpack codec of messages/codec.h: every message round-trips exactly; a step plan is one
// compact buffer whatever the batch; malformed bytes are refused with messages naming the field.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <msgpack.hpp>

#include "common/error.h"
#include "messages/codec.h"

namespace shardserve::messages {
namespace {

using ::testing::HasSubstr;

bool same(const SamplingParams& a, const SamplingParams& b) {
  return a.temperature == b.temperature && a.top_p == b.top_p && a.top_k == b.top_k &&
         a.min_p == b.min_p && a.repetition_penalty == b.repetition_penalty &&
         a.frequency_penalty == b.frequency_penalty && a.presence_penalty == b.presence_penalty &&
         a.seed == b.seed && a.logprobs == b.logprobs;
}

void expect_same(const StepPlan& a, const StepPlan& b) {
  EXPECT_EQ(a.step_id, b.step_id);
  EXPECT_EQ(a.token_ids, b.token_ids);
  EXPECT_EQ(a.block_ids, b.block_ids);
  EXPECT_EQ(a.released, b.released);
  ASSERT_EQ(a.seqs.size(), b.seqs.size());
  for (std::size_t i = 0; i < a.seqs.size(); ++i) {
    const auto &x = a.seqs[i], &y = b.seqs[i];
    EXPECT_EQ(x.seq_id, y.seq_id);
    EXPECT_EQ(x.start_pos, y.start_pos);
    EXPECT_EQ(x.num_tokens, y.num_tokens);
    EXPECT_EQ(x.num_logits, y.num_logits);
    EXPECT_EQ(x.prompt_len, y.prompt_len);
    EXPECT_EQ(x.token_offset, y.token_offset);
    EXPECT_EQ(x.block_offset, y.block_offset);
    EXPECT_EQ(x.num_blocks, y.num_blocks);
    EXPECT_EQ(x.sampling_index, y.sampling_index);
    EXPECT_EQ(x.history_offset, y.history_offset);
    EXPECT_EQ(x.history_len, y.history_len);
    EXPECT_EQ(x.num_draft, y.num_draft);
    EXPECT_EQ(x.draft_source, y.draft_source);
  }
  EXPECT_EQ(a.history_ids, b.history_ids);
  ASSERT_EQ(a.sampling.size(), b.sampling.size());
  for (std::size_t i = 0; i < a.sampling.size(); ++i) EXPECT_TRUE(same(a.sampling[i], b.sampling[i]));
}

StepPlan sample_plan(int num_seqs) {
  StepPlan p;
  p.step_id = 0xFFFFFFFFFFFFull + 17;
  for (int s = 0; s < num_seqs; ++s) {
    SequenceWork w;
    w.seq_id = 1000000000000ull + s;
    w.start_pos = s * 3;
    w.num_tokens = s % 4 == 0 ? 7 : 1;
    w.num_logits = s % 5 == 0 ? 0 : 1;
    w.prompt_len = 40 + s;
    w.token_offset = p.total_tokens();
    w.block_offset = static_cast<int32_t>(p.block_ids.size());
    w.num_blocks = 1 + s % 3;
    if (s % 3 == 1) {
      w.history_offset = static_cast<int32_t>(p.history_ids.size());
      w.history_len = 2 + s;
      for (int h = 0; h < w.history_len; ++h) p.history_ids.push_back(900 + h);
    }
    if (s % 4 == 2) {
      w.num_tokens = 4;
      w.num_draft = 3;
      w.draft_source = s % 8 == 2 ? DraftSource::kDraftModel : DraftSource::kPlan;
    }
    for (int t = 0; t < w.num_tokens; ++t) p.token_ids.push_back(128000 + s * 11 + t);
    for (int b = 0; b < w.num_blocks; ++b) p.block_ids.push_back(s * 3 + b);
    if (w.num_logits > 0) {
      w.sampling_index = static_cast<int32_t>(p.sampling.size());
      SamplingParams sp;
      sp.temperature = s % 2 ? 0.0f : 0.7f;
      sp.top_p = 0.95f;
      sp.top_k = s;
      sp.min_p = 0.05f;
      sp.repetition_penalty = 1.1f;
      sp.frequency_penalty = -0.5f;
      sp.presence_penalty = 0.25f;
      sp.seed = 0xDEADBEEFCAFEull * (s + 1);
      sp.logprobs = s % 6;
      p.sampling.push_back(sp);
    }
    p.seqs.push_back(w);
  }
  p.released = {1, 2, 0xFFFFFFFFFFFFFFFFull};
  return p;
}

template <typename T>
T round_trip(const T& m) {
  const Message decoded = decode(encode(m));
  EXPECT_TRUE(std::holds_alternative<T>(decoded)) << message_kind_name(kind_of(decoded));
  return std::get<T>(decoded);
}

TEST(Codec, StepPlanRoundTrips) {
  for (int n : {0, 1, 5, 64}) expect_same(round_trip(sample_plan(n)), sample_plan(n));
}

TEST(Codec, StepPlanIsOneCompactBuffer) {
  // 256 decoding sequences with 64-block tables: the bulk is the raw id arrays (4 bytes each)
  // plus about 20 bytes of fixed fields per sequence and its sampling parameters.
  StepPlan p;
  for (int s = 0; s < 256; ++s) {
    SequenceWork w;
    w.seq_id = s + 1;
    w.start_pos = 1000;
    w.num_tokens = 1;
    w.num_logits = 1;
    w.token_offset = s;
    w.block_offset = s * 64;
    w.num_blocks = 64;
    w.sampling_index = s;
    p.token_ids.push_back(s);
    for (int b = 0; b < 64; ++b) p.block_ids.push_back(s * 64 + b);
    p.seqs.push_back(w);
    p.sampling.push_back(SamplingParams{});
  }
  const std::string bytes = encode(p);
  const std::size_t raw = (p.token_ids.size() + p.block_ids.size()) * 4;
  EXPECT_LT(bytes.size(), raw + 256 * 60) << bytes.size();
  expect_same(std::get<StepPlan>(decode(bytes)), p);
}

TEST(Codec, StepResultRoundTrips) {
  StepResult r;
  r.step_id = 99;
  r.seq_ids = {5, 7, 1ull << 40};
  r.sample_offsets = {0, 1, 4, 5};
  for (int i = 0; i < 5; ++i) {
    SampledToken t;
    t.token_id = 128255 - i;
    t.logprob = -0.125f * i - 1e-7f;
    if (i % 2) {
      t.top_ids = {1, 2, 3};
      t.top_logprobs = {-0.5f, -1.25f, -3.0f};
    }
    r.tokens.push_back(t);
  }
  const auto got = round_trip(r);
  EXPECT_EQ(got.step_id, r.step_id);
  EXPECT_EQ(got.seq_ids, r.seq_ids);
  EXPECT_EQ(got.sample_offsets, r.sample_offsets);
  ASSERT_EQ(got.tokens.size(), r.tokens.size());
  for (std::size_t i = 0; i < r.tokens.size(); ++i) {
    EXPECT_EQ(got.tokens[i].token_id, r.tokens[i].token_id);
    EXPECT_EQ(got.tokens[i].logprob, r.tokens[i].logprob);  // bit-exact float32
    EXPECT_EQ(got.tokens[i].top_ids, r.tokens[i].top_ids);
    EXPECT_EQ(got.tokens[i].top_logprobs, r.tokens[i].top_logprobs);
  }
}

TEST(Codec, ControlMessagesRoundTrip) {
  const auto c = round_trip(Configure{"model = \"/m\"\ntp = 2\n", 2, 3});
  EXPECT_EQ(c.config_toml, "model = \"/m\"\ntp = 2\n");
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.replicas, 3);
  EXPECT_EQ(round_trip(InitCache{123456789012}).num_kv_blocks, 123456789012);
  EXPECT_EQ(round_trip(Shutdown{"bye"}).reason, "bye");
  EXPECT_EQ(round_trip(Abort{"bad config"}).reason, "bad config");
  EXPECT_TRUE(round_trip(Heartbeat{true}).peers_failed);
  EXPECT_FALSE(round_trip(Heartbeat{false}).peers_failed);
  const auto e = round_trip(WorkerError{3, "step 4: boom"});
  EXPECT_EQ(e.world_rank, 3);
  EXPECT_EQ(e.message, "step 4: boom");
  const auto ready = round_trip(WorkerReady{2, 1 << 30});
  EXPECT_EQ(ready.world_rank, 2);
  EXPECT_EQ(ready.kv_cache_bytes, 1 << 30);
  WorkerHello h;
  h.world_rank = 4;
  h.replica = 1;
  h.tp_rank = 1;
  h.tp_size = 2;
  h.host = "node-7";
  h.pid = 4242;
  h.model_name = "llama";
  h.model_type = "llama";
  h.num_layers = 32;
  h.hidden_size = 4096;
  h.vocab_size = 128256;
  h.num_heads_per_rank = 16;
  h.num_kv_heads_per_rank = 4;
  h.head_dim = 128;
  h.max_position_embeddings = 131072;
  h.weight_bytes = 8000000000;
  h.num_kv_blocks = 9000;
  h.block_size = 16;
  h.kv_bytes_per_block = 1 << 20;
  h.kv_source = "kv.num_blocks = 9000";
  const auto g = round_trip(h);
  EXPECT_EQ(g.world_rank, 4);
  EXPECT_EQ(g.host, "node-7");
  EXPECT_EQ(g.vocab_size, 128256);
  EXPECT_EQ(g.weight_bytes, 8000000000);
  EXPECT_EQ(g.kv_bytes_per_block, 1 << 20);
  EXPECT_EQ(g.kv_source, "kv.num_blocks = 9000");
  EXPECT_EQ(g.num_kv_heads_per_rank, 4);
}

std::string error_of(std::string_view bytes) {
  try {
    decode(bytes);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string pack_envelope(uint32_t magic, uint32_t version, uint8_t kind,
                          const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& body) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(4);
  pk.pack_uint32(magic);
  pk.pack_uint32(version);
  pk.pack_uint8(kind);
  body(pk);
  return std::string(buf.data(), buf.size());
}

TEST(Codec, RefusesMalformedMessages) {
  const std::string good = encode(sample_plan(3));
  EXPECT_THAT(error_of(good.substr(0, good.size() - 5)), HasSubstr("not a msgpack message"));
  EXPECT_THAT(error_of(good + "x"), HasSubstr("1 trailing bytes"));
  EXPECT_THAT(error_of(""), HasSubstr("0 bytes are not a msgpack message"));
  auto text = [](msgpack::packer<msgpack::sbuffer>& pk) {
    pk.pack_array(1);
    pk.pack(std::string("x"));
  };
  EXPECT_THAT(error_of(pack_envelope(0x1234, kCodecVersion, 4, text)),
              HasSubstr("bad magic 0x1234"));
  EXPECT_THAT(error_of(pack_envelope(kCodecMagic, kCodecVersion + 1, 4, text)),
              HasSubstr("must run the same build"));
  EXPECT_THAT(error_of(pack_envelope(kCodecMagic, kCodecVersion, 77, text)),
              HasSubstr("message kind 77 is unknown"));
  // A Shutdown whose reason is an integer.
  EXPECT_THAT(error_of(pack_envelope(kCodecMagic, kCodecVersion, 4,
                                     [](auto& pk) {
                                       pk.pack_array(1);
                                       pk.pack_int32(5);
                                     })),
              HasSubstr("Shutdown.reason: expected a string, got positive integer"));
  // A StepPlan whose token_ids are 7 bytes (not whole int32s).
  EXPECT_THAT(error_of(pack_envelope(kCodecMagic, kCodecVersion, 3,
                                     [](auto& pk) {
                                       pk.pack_array(7);
                                       pk.pack_uint64(1);
                                       pk.pack_bin(7);
                                       pk.pack_bin_body("1234567", 7);
                                       pk.pack_bin(0);
                                       pk.pack_array(0);
                                       pk.pack_array(0);
                                       pk.pack_bin(0);
                                       pk.pack_bin(0);
                                     })),
              HasSubstr("StepPlan.token_ids: 7 bytes is not a whole number of 4-byte values"));
  // A sequence with 9 fields instead of 13 (a build from before speculative decoding).
  EXPECT_THAT(error_of(pack_envelope(kCodecMagic, kCodecVersion, 3,
                                     [](auto& pk) {
                                       pk.pack_array(7);
                                       pk.pack_uint64(1);
                                       pk.pack_bin(0);
                                       pk.pack_bin(0);
                                       pk.pack_array(1);
                                       pk.pack_array(9);
                                       for (int i = 0; i < 9; ++i) pk.pack_int32(0);
                                       pk.pack_array(0);
                                       pk.pack_bin(0);
                                       pk.pack_bin(0);
                                     })),
              HasSubstr("StepPlan.seqs[0]: expected an array of 13 fields, got 9"));
  // An id that does not fit int32.
  EXPECT_THAT(error_of(pack_envelope(kCodecMagic, kCodecVersion, 19,
                                     [](auto& pk) {
                                       pk.pack_array(2);
                                       pk.pack_int64(int64_t{1} << 40);
                                       pk.pack(std::string("m"));
                                     })),
              HasSubstr("WorkerError.world_rank: value out of range"));
}

}  // namespace
}  // namespace shardserve::messages
