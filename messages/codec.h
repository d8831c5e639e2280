#pragma once
// Serialisation of every coordinator<->worker message (messages/step_plan.h, control.h) as
// msgpack. A message is one msgpack array [magic, version, kind, body]: the receiver learns
// what it got from the bytes alone, and a message from a different build is refused with a
// message saying so. Flat integer arrays of a step plan (token ids, block ids) travel as raw
// little-endian bytes (msgpack bin), so a plan of any batch size costs one buffer and a few
// memcpys, not one object per token.
//
// Decoding checks the structure (types, array lengths, sizes of the raw arrays) and throws a
// shardserve::Error naming the message and the field; it does not check the plan's semantics
// (offsets inside the arrays, block ids inside the pool): ModelRunner::forward does that.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "messages/control.h"
#include "messages/step_plan.h"

namespace shardserve::messages {

inline constexpr uint32_t kCodecMagic = 0x53535256;  // "SSRV"
inline constexpr uint32_t kCodecVersion = 2;

enum class MessageKind : uint8_t {
  kConfigure = 1,
  kInitCache = 2,
  kStepPlan = 3,
  kShutdown = 4,
  kAbort = 5,
  kHeartbeat = 6,
  kWorkerHello = 16,
  kWorkerReady = 17,
  kStepResult = 18,
  kWorkerError = 19,
};

const char* message_kind_name(MessageKind kind);

using Message = std::variant<Configure, InitCache, StepPlan, Shutdown, Abort, WorkerHello,
                             WorkerReady, StepResult, WorkerError, Heartbeat>;

std::string encode(const Configure& m);
std::string encode(const InitCache& m);
std::string encode(const StepPlan& m);
std::string encode(const Shutdown& m);
std::string encode(const Abort& m);
std::string encode(const WorkerHello& m);
std::string encode(const WorkerReady& m);
std::string encode(const StepResult& m);
std::string encode(const WorkerError& m);
std::string encode(const Heartbeat& m);

// Throws shardserve::Error for bytes that are not a message of this version.
Message decode(std::string_view bytes);

// The kind of a decoded message.
MessageKind kind_of(const Message& m);

}  // namespace shardserve::messages
