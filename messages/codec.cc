#include "messages/codec.h"

#include <bit>
#include <cstring>
#include <msgpack.hpp>
#include <type_traits>
#include <vector>

#include "common/error.h"

namespace shardserve::messages {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the codec sends raw arrays little-endian; add byte swapping for this host");

// A field added to a message type must be added to its pack/unpack below (and kCodecVersion
// bumped): these sizes make the build fail until it is.
static_assert(sizeof(SequenceWork) == 56, "SequenceWork changed: update messages/codec.cc");
static_assert(sizeof(SamplingParams) == 48, "SamplingParams changed: update messages/codec.cc");
static_assert(sizeof(StepPlan) == 8 + 6 * sizeof(std::vector<int32_t>),
              "StepPlan changed: update messages/codec.cc");
static_assert(sizeof(SampledToken) == 8 + 2 * sizeof(std::vector<int32_t>),
              "SampledToken changed: update messages/codec.cc");
static_assert(sizeof(StepResult) == 8 + 3 * sizeof(std::vector<int32_t>),
              "StepResult changed: update messages/codec.cc");

// ----- encoding -------------------------------------------------------------------------------

struct StringBuffer {
  std::string data;
  void write(const char* p, std::size_t n) { data.append(p, n); }
};
using Packer = msgpack::packer<StringBuffer>;

template <typename T>
void pack_raw(Packer& pk, const std::vector<T>& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto bytes = static_cast<uint32_t>(v.size() * sizeof(T));
  pk.pack_bin(bytes);
  pk.pack_bin_body(reinterpret_cast<const char*>(v.data()), bytes);
}

template <typename Body>
std::string envelope(MessageKind kind, Body&& body) {
  StringBuffer buffer;
  Packer pk(buffer);
  pk.pack_array(4);
  pk.pack_uint32(kCodecMagic);
  pk.pack_uint32(kCodecVersion);
  pk.pack_uint8(static_cast<uint8_t>(kind));
  body(pk);
  return std::move(buffer.data);
}

void pack(Packer& pk, const SamplingParams& s) {
  pk.pack_array(9);
  pk.pack_float(s.temperature);
  pk.pack_float(s.top_p);
  pk.pack_int32(s.top_k);
  pk.pack_float(s.min_p);
  pk.pack_float(s.repetition_penalty);
  pk.pack_float(s.frequency_penalty);
  pk.pack_float(s.presence_penalty);
  pk.pack_uint64(s.seed);
  pk.pack_int32(s.logprobs);
}

void pack(Packer& pk, const SequenceWork& w) {
  pk.pack_array(13);
  pk.pack_uint64(w.seq_id);
  pk.pack_int32(w.start_pos);
  pk.pack_int32(w.num_tokens);
  pk.pack_int32(w.num_logits);
  pk.pack_int32(w.prompt_len);
  pk.pack_int32(w.token_offset);
  pk.pack_int32(w.block_offset);
  pk.pack_int32(w.num_blocks);
  pk.pack_int32(w.sampling_index);
  pk.pack_int32(w.history_offset);
  pk.pack_int32(w.history_len);
  pk.pack_int32(w.num_draft);
  pk.pack_uint8(static_cast<uint8_t>(w.draft_source));
}

void pack(Packer& pk, const SampledToken& t) {
  pk.pack_array(4);
  pk.pack_int32(t.token_id);
  pk.pack_float(t.logprob);
  pack_raw(pk, t.top_ids);
  pack_raw(pk, t.top_logprobs);
}

void pack(Packer& pk, const std::string& s) { pk.pack(s); }

// ----- decoding -------------------------------------------------------------------------------

// Where in which message a field is, for error messages: "StepPlan.seqs[3].num_tokens".
struct Path {
  std::string text;
  Path operator/(std::string_view field) const { return {text + "." + std::string(field)}; }
  Path operator[](std::size_t i) const { return {text + "[" + std::to_string(i) + "]"}; }
};

const char* type_name(msgpack::type::object_type t) {
  switch (t) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return "boolean";
    case msgpack::type::POSITIVE_INTEGER: return "positive integer";
    case msgpack::type::NEGATIVE_INTEGER: return "negative integer";
    case msgpack::type::FLOAT32: return "float32";
    case msgpack::type::FLOAT64: return "float64";
    case msgpack::type::STR: return "string";
    case msgpack::type::BIN: return "bin";
    case msgpack::type::ARRAY: return "array";
    case msgpack::type::MAP: return "map";
    case msgpack::type::EXT: return "ext";
  }
  return "unknown";
}

const msgpack::object* array(const msgpack::object& o, const Path& path, uint32_t expected) {
  require(o.type == msgpack::type::ARRAY, "codec: {}: expected an array, got {}", path.text,
          type_name(o.type));
  require(expected == UINT32_MAX || o.via.array.size == expected,
          "codec: {}: expected an array of {} fields, got {}", path.text, expected,
          o.via.array.size);
  return o.via.array.ptr;
}

uint32_t array_size(const msgpack::object& o, const Path& path) {
  array(o, path, UINT32_MAX);
  return o.via.array.size;
}

template <typename T>
T scalar(const msgpack::object& o, const Path& path) {
  if constexpr (std::is_floating_point_v<T>) {
    // msgpack-c packs a float with an integral value as an integer (pack_float does).
    if (o.type == msgpack::type::POSITIVE_INTEGER) return static_cast<T>(o.via.u64);
    if (o.type == msgpack::type::NEGATIVE_INTEGER) return static_cast<T>(o.via.i64);
    require(o.type == msgpack::type::FLOAT32 || o.type == msgpack::type::FLOAT64,
            "codec: {}: expected a float, got {}", path.text, type_name(o.type));
  } else {
    require(o.type == msgpack::type::POSITIVE_INTEGER || o.type == msgpack::type::NEGATIVE_INTEGER,
            "codec: {}: expected an integer, got {}", path.text, type_name(o.type));
  }
  try {
    return o.as<T>();
  } catch (const msgpack::type_error&) {
    fail("codec: {}: value out of range for its type", path.text);
  }
}

std::string text(const msgpack::object& o, const Path& path) {
  require(o.type == msgpack::type::STR, "codec: {}: expected a string, got {}", path.text,
          type_name(o.type));
  return std::string(o.via.str.ptr, o.via.str.size);
}

template <typename T>
std::vector<T> raw(const msgpack::object& o, const Path& path) {
  require(o.type == msgpack::type::BIN, "codec: {}: expected raw bytes (bin), got {}", path.text,
          type_name(o.type));
  const uint32_t bytes = o.via.bin.size;
  require(bytes % sizeof(T) == 0, "codec: {}: {} bytes is not a whole number of {}-byte values",
          path.text, bytes, sizeof(T));
  std::vector<T> v(bytes / sizeof(T));
  if (bytes > 0) std::memcpy(v.data(), o.via.bin.ptr, bytes);
  return v;
}

SamplingParams unpack_sampling(const msgpack::object& o, const Path& p) {
  const auto* f = array(o, p, 9);
  SamplingParams s;
  s.temperature = scalar<float>(f[0], p / "temperature");
  s.top_p = scalar<float>(f[1], p / "top_p");
  s.top_k = scalar<int32_t>(f[2], p / "top_k");
  s.min_p = scalar<float>(f[3], p / "min_p");
  s.repetition_penalty = scalar<float>(f[4], p / "repetition_penalty");
  s.frequency_penalty = scalar<float>(f[5], p / "frequency_penalty");
  s.presence_penalty = scalar<float>(f[6], p / "presence_penalty");
  s.seed = scalar<uint64_t>(f[7], p / "seed");
  s.logprobs = scalar<int32_t>(f[8], p / "logprobs");
  return s;
}

SequenceWork unpack_work(const msgpack::object& o, const Path& p) {
  const auto* f = array(o, p, 13);
  SequenceWork w;
  w.seq_id = scalar<uint64_t>(f[0], p / "seq_id");
  w.start_pos = scalar<int32_t>(f[1], p / "start_pos");
  w.num_tokens = scalar<int32_t>(f[2], p / "num_tokens");
  w.num_logits = scalar<int32_t>(f[3], p / "num_logits");
  w.prompt_len = scalar<int32_t>(f[4], p / "prompt_len");
  w.token_offset = scalar<int32_t>(f[5], p / "token_offset");
  w.block_offset = scalar<int32_t>(f[6], p / "block_offset");
  w.num_blocks = scalar<int32_t>(f[7], p / "num_blocks");
  w.sampling_index = scalar<int32_t>(f[8], p / "sampling_index");
  w.history_offset = scalar<int32_t>(f[9], p / "history_offset");
  w.history_len = scalar<int32_t>(f[10], p / "history_len");
  w.num_draft = scalar<int32_t>(f[11], p / "num_draft");
  const auto source = scalar<uint8_t>(f[12], p / "draft_source");
  require(source == static_cast<uint8_t>(DraftSource::kPlan) ||
              source == static_cast<uint8_t>(DraftSource::kDraftModel),
          "codec: {}: draft_source {} is not a DraftSource", (p / "draft_source").text, source);
  w.draft_source = static_cast<DraftSource>(source);
  return w;
}

SampledToken unpack_token(const msgpack::object& o, const Path& p) {
  const auto* f = array(o, p, 4);
  SampledToken t;
  t.token_id = scalar<int32_t>(f[0], p / "token_id");
  t.logprob = scalar<float>(f[1], p / "logprob");
  t.top_ids = raw<int32_t>(f[2], p / "top_ids");
  t.top_logprobs = raw<float>(f[3], p / "top_logprobs");
  require(t.top_ids.size() == t.top_logprobs.size(),
          "codec: {}: {} top ids but {} top logprobs", p.text, t.top_ids.size(),
          t.top_logprobs.size());
  return t;
}

Message unpack_body(MessageKind kind, const msgpack::object& o) {
  const Path p{message_kind_name(kind)};
  switch (kind) {
    case MessageKind::kConfigure: {
      const auto* f = array(o, p, 3);
      return Configure{text(f[0], p / "config_toml"), scalar<int32_t>(f[1], p / "tp"),
                       scalar<int32_t>(f[2], p / "replicas")};
    }
    case MessageKind::kInitCache: {
      const auto* f = array(o, p, 1);
      return InitCache{scalar<int64_t>(f[0], p / "num_kv_blocks")};
    }
    case MessageKind::kStepPlan: {
      const auto* f = array(o, p, 7);
      StepPlan plan;
      plan.step_id = scalar<uint64_t>(f[0], p / "step_id");
      plan.token_ids = raw<int32_t>(f[1], p / "token_ids");
      plan.block_ids = raw<int32_t>(f[2], p / "block_ids");
      const uint32_t nseq = array_size(f[3], p / "seqs");
      plan.seqs.reserve(nseq);
      for (uint32_t i = 0; i < nseq; ++i)
        plan.seqs.push_back(unpack_work(f[3].via.array.ptr[i], (p / "seqs")[i]));
      const uint32_t nsamp = array_size(f[4], p / "sampling");
      plan.sampling.reserve(nsamp);
      for (uint32_t i = 0; i < nsamp; ++i)
        plan.sampling.push_back(unpack_sampling(f[4].via.array.ptr[i], (p / "sampling")[i]));
      plan.released = raw<uint64_t>(f[5], p / "released");
      plan.history_ids = raw<int32_t>(f[6], p / "history_ids");
      return plan;
    }
    case MessageKind::kShutdown: {
      const auto* f = array(o, p, 1);
      return Shutdown{text(f[0], p / "reason")};
    }
    case MessageKind::kAbort: {
      const auto* f = array(o, p, 1);
      return Abort{text(f[0], p / "reason")};
    }
    case MessageKind::kHeartbeat: {
      const auto* f = array(o, p, 1);
      const auto flag = scalar<uint8_t>(f[0], p / "peers_failed");
      require(flag <= 1, "codec: {}: expected 0 or 1, got {}", (p / "peers_failed").text, flag);
      return Heartbeat{flag == 1};
    }
    case MessageKind::kWorkerHello: {
      const auto* f = array(o, p, 20);
      WorkerHello h;
      h.world_rank = scalar<int32_t>(f[0], p / "world_rank");
      h.replica = scalar<int32_t>(f[1], p / "replica");
      h.tp_rank = scalar<int32_t>(f[2], p / "tp_rank");
      h.tp_size = scalar<int32_t>(f[3], p / "tp_size");
      h.host = text(f[4], p / "host");
      h.pid = scalar<int32_t>(f[5], p / "pid");
      h.model_name = text(f[6], p / "model_name");
      h.model_type = text(f[7], p / "model_type");
      h.num_layers = scalar<int64_t>(f[8], p / "num_layers");
      h.hidden_size = scalar<int64_t>(f[9], p / "hidden_size");
      h.vocab_size = scalar<int64_t>(f[10], p / "vocab_size");
      h.num_heads_per_rank = scalar<int64_t>(f[11], p / "num_heads_per_rank");
      h.num_kv_heads_per_rank = scalar<int64_t>(f[12], p / "num_kv_heads_per_rank");
      h.head_dim = scalar<int64_t>(f[13], p / "head_dim");
      h.max_position_embeddings = scalar<int64_t>(f[14], p / "max_position_embeddings");
      h.weight_bytes = scalar<int64_t>(f[15], p / "weight_bytes");
      h.num_kv_blocks = scalar<int64_t>(f[16], p / "num_kv_blocks");
      h.block_size = scalar<int64_t>(f[17], p / "block_size");
      h.kv_bytes_per_block = scalar<int64_t>(f[18], p / "kv_bytes_per_block");
      h.kv_source = text(f[19], p / "kv_source");
      return h;
    }
    case MessageKind::kWorkerReady: {
      const auto* f = array(o, p, 2);
      return WorkerReady{scalar<int32_t>(f[0], p / "world_rank"),
                         scalar<int64_t>(f[1], p / "kv_cache_bytes")};
    }
    case MessageKind::kStepResult: {
      const auto* f = array(o, p, 4);
      StepResult r;
      r.step_id = scalar<uint64_t>(f[0], p / "step_id");
      r.seq_ids = raw<uint64_t>(f[1], p / "seq_ids");
      r.sample_offsets = raw<int32_t>(f[2], p / "sample_offsets");
      const uint32_t n = array_size(f[3], p / "tokens");
      r.tokens.reserve(n);
      for (uint32_t i = 0; i < n; ++i)
        r.tokens.push_back(unpack_token(f[3].via.array.ptr[i], (p / "tokens")[i]));
      return r;
    }
    case MessageKind::kWorkerError: {
      const auto* f = array(o, p, 2);
      return WorkerError{scalar<int32_t>(f[0], p / "world_rank"), text(f[1], p / "message")};
    }
  }
  fail("codec: message kind {} is unknown", static_cast<int>(kind));
}

bool known_kind(uint8_t k) {
  switch (static_cast<MessageKind>(k)) {
    case MessageKind::kConfigure:
    case MessageKind::kInitCache:
    case MessageKind::kStepPlan:
    case MessageKind::kShutdown:
    case MessageKind::kAbort:
    case MessageKind::kHeartbeat:
    case MessageKind::kWorkerHello:
    case MessageKind::kWorkerReady:
    case MessageKind::kStepResult:
    case MessageKind::kWorkerError:
      return true;
  }
  return false;
}

}  // namespace

const char* message_kind_name(MessageKind kind) {
  switch (kind) {
    case MessageKind::kConfigure: return "Configure";
    case MessageKind::kInitCache: return "InitCache";
    case MessageKind::kStepPlan: return "StepPlan";
    case MessageKind::kShutdown: return "Shutdown";
    case MessageKind::kAbort: return "Abort";
    case MessageKind::kHeartbeat: return "Heartbeat";
    case MessageKind::kWorkerHello: return "WorkerHello";
    case MessageKind::kWorkerReady: return "WorkerReady";
    case MessageKind::kStepResult: return "StepResult";
    case MessageKind::kWorkerError: return "WorkerError";
  }
  return "unknown";
}

std::string encode(const Configure& m) {
  return envelope(MessageKind::kConfigure, [&](Packer& pk) {
    pk.pack_array(3);
    pack(pk, m.config_toml);
    pk.pack_int32(m.tp);
    pk.pack_int32(m.replicas);
  });
}

std::string encode(const InitCache& m) {
  return envelope(MessageKind::kInitCache, [&](Packer& pk) {
    pk.pack_array(1);
    pk.pack_int64(m.num_kv_blocks);
  });
}

std::string encode(const StepPlan& m) {
  return envelope(MessageKind::kStepPlan, [&](Packer& pk) {
    pk.pack_array(7);
    pk.pack_uint64(m.step_id);
    pack_raw(pk, m.token_ids);
    pack_raw(pk, m.block_ids);
    pk.pack_array(static_cast<uint32_t>(m.seqs.size()));
    for (const auto& w : m.seqs) pack(pk, w);
    pk.pack_array(static_cast<uint32_t>(m.sampling.size()));
    for (const auto& s : m.sampling) pack(pk, s);
    pack_raw(pk, m.released);
    pack_raw(pk, m.history_ids);
  });
}

std::string encode(const Shutdown& m) {
  return envelope(MessageKind::kShutdown, [&](Packer& pk) {
    pk.pack_array(1);
    pack(pk, m.reason);
  });
}

std::string encode(const Abort& m) {
  return envelope(MessageKind::kAbort, [&](Packer& pk) {
    pk.pack_array(1);
    pack(pk, m.reason);
  });
}

std::string encode(const Heartbeat& m) {
  return envelope(MessageKind::kHeartbeat, [&](Packer& pk) {
    pk.pack_array(1);
    pk.pack_uint8(m.peers_failed ? 1 : 0);
  });
}

std::string encode(const WorkerHello& h) {
  return envelope(MessageKind::kWorkerHello, [&](Packer& pk) {
    pk.pack_array(20);
    pk.pack_int32(h.world_rank);
    pk.pack_int32(h.replica);
    pk.pack_int32(h.tp_rank);
    pk.pack_int32(h.tp_size);
    pack(pk, h.host);
    pk.pack_int32(h.pid);
    pack(pk, h.model_name);
    pack(pk, h.model_type);
    pk.pack_int64(h.num_layers);
    pk.pack_int64(h.hidden_size);
    pk.pack_int64(h.vocab_size);
    pk.pack_int64(h.num_heads_per_rank);
    pk.pack_int64(h.num_kv_heads_per_rank);
    pk.pack_int64(h.head_dim);
    pk.pack_int64(h.max_position_embeddings);
    pk.pack_int64(h.weight_bytes);
    pk.pack_int64(h.num_kv_blocks);
    pk.pack_int64(h.block_size);
    pk.pack_int64(h.kv_bytes_per_block);
    pack(pk, h.kv_source);
  });
}

std::string encode(const WorkerReady& m) {
  return envelope(MessageKind::kWorkerReady, [&](Packer& pk) {
    pk.pack_array(2);
    pk.pack_int32(m.world_rank);
    pk.pack_int64(m.kv_cache_bytes);
  });
}

std::string encode(const StepResult& m) {
  return envelope(MessageKind::kStepResult, [&](Packer& pk) {
    pk.pack_array(4);
    pk.pack_uint64(m.step_id);
    pack_raw(pk, m.seq_ids);
    pack_raw(pk, m.sample_offsets);
    pk.pack_array(static_cast<uint32_t>(m.tokens.size()));
    for (const auto& t : m.tokens) pack(pk, t);
  });
}

std::string encode(const WorkerError& m) {
  return envelope(MessageKind::kWorkerError, [&](Packer& pk) {
    pk.pack_array(2);
    pk.pack_int32(m.world_rank);
    pack(pk, m.message);
  });
}

Message decode(std::string_view bytes) {
  msgpack::object_handle handle;
  try {
    std::size_t offset = 0;
    // msgpack allocates an array's or a map's storage from the count in its header, before
    // reading the elements: an untrusted "array of 4 billion" would allocate ~64 GB. Every
    // element takes at least one byte, so no count can honestly exceed the message's size.
    const std::size_t n = bytes.size();
    const msgpack::unpack_limit limit(/*array=*/n, /*map=*/n / 2, /*str=*/n, /*bin=*/n, /*ext=*/n,
                                      /*depth=*/16);
    handle = msgpack::unpack(bytes.data(), bytes.size(), offset, nullptr, nullptr, limit);
    require(offset == bytes.size(), "codec: {} trailing bytes after a message of {} bytes",
            bytes.size() - offset, offset);
  } catch (const msgpack::unpack_error& e) {
    fail("codec: {} bytes are not a msgpack message: {}", bytes.size(), e.what());
  } catch (const msgpack::type_error& e) {
    fail("codec: {} bytes are not a msgpack message: {}", bytes.size(), e.what());
  }
  const msgpack::object& root = handle.get();
  const Path p{"message"};
  const auto* f = array(root, p, 4);
  const auto magic = scalar<uint32_t>(f[0], p / "magic");
  require(magic == kCodecMagic, "codec: bad magic {:#x} (want {:#x}): not a shardserve message",
          magic, kCodecMagic);
  const auto version = scalar<uint32_t>(f[1], p / "version");
  require(version == kCodecVersion,
          "codec: message version {} but this build speaks version {}: coordinator and workers "
          "must run the same build",
          version, kCodecVersion);
  const auto kind = scalar<uint8_t>(f[2], p / "kind");
  require(known_kind(kind), "codec: message kind {} is unknown", kind);
  return unpack_body(static_cast<MessageKind>(kind), f[3]);
}

MessageKind kind_of(const Message& m) {
  static constexpr MessageKind kinds[] = {
      MessageKind::kConfigure,   MessageKind::kInitCache,  MessageKind::kStepPlan,
      MessageKind::kShutdown,    MessageKind::kAbort,      MessageKind::kWorkerHello,
      MessageKind::kWorkerReady, MessageKind::kStepResult, MessageKind::kWorkerError,
      MessageKind::kHeartbeat};
  return kinds[m.index()];
}

}  // namespace shardserve::messages
