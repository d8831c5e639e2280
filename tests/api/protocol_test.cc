// The codec: every message type round-trips; each malformed or mistyped client message is
// refused with its code, the field at fault and a message naming the value.
#include "api/protocol.h"

#include <gtest/gtest.h>

namespace shardserve::api {
namespace {

struct Refusal {
  std::string frame;
  ErrorCode code;
  std::string field;
  std::string message_part;
};

ProtocolError decode_error(const std::string& frame) {
  try {
    decode_client_message(frame);
  } catch (const ProtocolError& e) {
    return e;
  }
  ADD_FAILURE() << "decoded without error: " << frame;
  return ProtocolError(ErrorCode::kInternal, "", "");
}

TEST(Protocol, SubmitRoundTrips) {
  SubmitRequest s;
  s.id = "r1";
  s.prompt_ids = std::vector<int32_t>{1, 2, 3};
  s.max_tokens = 16;
  s.temperature = 0.5f;
  s.top_p = 0.9f;
  s.top_k = 40;
  s.min_p = 0.05f;
  s.repetition_penalty = 1.1f;
  s.frequency_penalty = 0.5f;
  s.presence_penalty = -0.5f;
  s.seed = 18446744073709551615ull;
  s.stop = {"\n\n", "END"};
  s.stop_token_ids = {7};
  s.logprobs = 3;
  s.ignore_eos = true;
  s.priority = -2;
  s.stream = false;
  s.timeout_s = 2.5;
  const auto back = decode_client_message(encode(ClientMessage{s}));
  ASSERT_TRUE(std::holds_alternative<SubmitRequest>(back));
  EXPECT_EQ(std::get<SubmitRequest>(back), s);

  SubmitRequest chat;
  chat.id = "c";
  chat.messages = std::vector<ChatMessage>{{"system", "Be brief."}, {"user", "Hi"}};
  chat.add_generation_prompt = false;
  EXPECT_EQ(std::get<SubmitRequest>(decode_client_message(encode(ClientMessage{chat}))), chat);
}

TEST(Protocol, OtherClientMessagesRoundTrip) {
  for (const ClientMessage& m :
       {ClientMessage{CancelRequest{"r1", std::nullopt}},
        ClientMessage{CancelRequest{"r1", "00aabbccdd"}}, ClientMessage{StatusRequest{true}},
        ClientMessage{StatusRequest{false}}, ClientMessage{HealthRequest{}},
        ClientMessage{ModelInfoRequest{}}})
    EXPECT_EQ(decode_client_message(encode(m)), m) << encode(m);
}

TEST(Protocol, NullMeansNotGivenAndStopMayBeOneString) {
  const auto m = decode_client_message(
      R"({"v":1,"type":"submit","id":"a","prompt":"x","max_tokens":null,"seed":null,"stop":"\n"})");
  const auto& s = std::get<SubmitRequest>(m);
  EXPECT_FALSE(s.max_tokens.has_value());
  EXPECT_EQ(s.stop, std::vector<std::string>{"\n"});
}

TEST(Protocol, ServerMessagesRoundTrip) {
  Final f;
  f.id = "r1";
  f.finish_reason = "stop";
  f.finish_detail = "stop_string";
  f.stop_string = "END";
  f.text = "hello";
  f.token_ids = std::vector<int32_t>{5, 6};
  f.logprobs = std::vector<TokenLogprob>{
      {5, -0.25f, "hel", {104, 101, 108}, {{5, -0.25f, "hel"}, {9, -2.0f, "x"}}}};
  f.usage = {3, 2, 1};
  f.timings.queue_s = 0.01;
  f.timings.ttft_s = 0.02;
  f.timings.total_s = 0.5;
  const auto back = std::get<Final>(decode_server_message(encode(ServerMessage{f})));
  EXPECT_EQ(back.id, "r1");
  EXPECT_EQ(back.stop_string, "END");
  EXPECT_EQ(back.text, "hello");
  EXPECT_EQ(back.token_ids, f.token_ids);
  ASSERT_TRUE(back.logprobs.has_value());
  EXPECT_EQ((*back.logprobs)[0].bytes, (std::vector<uint8_t>{104, 101, 108}));
  EXPECT_EQ((*back.logprobs)[0].top[1].token_id, 9);
  EXPECT_EQ(back.usage.cached_tokens, 1);
  EXPECT_EQ(back.timings.queue_s, 0.01);
  EXPECT_FALSE(back.timings.tpot_s.has_value());

  ErrorReply e{"r2", ErrorCode::kOverloaded, "", "busy", 1.5};
  const auto eb = std::get<ErrorReply>(decode_server_message(encode(ServerMessage{e})));
  EXPECT_EQ(eb.code, ErrorCode::kOverloaded);
  EXPECT_EQ(eb.retry_after_s, 1.5);
  EXPECT_EQ(eb.id, "r2");

  const auto d =
      std::get<Delta>(decode_server_message(encode(ServerMessage{Delta{"r", "ab", {1, 2}, {}}})));
  EXPECT_EQ(d.text, "ab");
  EXPECT_EQ(d.token_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_TRUE(
      std::holds_alternative<Heartbeat>(decode_server_message(encode(ServerMessage{Heartbeat{}}))));
  // A newer server's extra fields are ignored.
  EXPECT_TRUE(std::holds_alternative<HealthReply>(
      decode_server_message(R"({"v":1,"type":"health","status":"ok","future":[1,2]})")));
}

// The lenient decoder (what clients run) still refuses a value its field's type cannot hold,
// naming the field: a count past int32 (or a double such as 8.9e20, which nlohmann would cast to
// int: undefined behaviour, found by the protocol fuzzer), a float in an integer field, a
// logprob beyond float's range, a byte past 255.
TEST(Protocol, ServerMessageValuesOutsideTheirTypesAreRefused) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"v":1,"type":"final","id":"r","usage":{"prompt_tokens":888888001600249471701}})",
       "prompt_tokens"},
      {R"({"v":1,"type":"final","id":"r","usage":{"completion_tokens":4294967296}})",
       "completion_tokens"},
      {R"({"v":1,"type":"final","id":"r","usage":{"cached_tokens":1.5}})", "cached_tokens"},
      {R"({"v":1,"type":"delta","id":"r","token_ids":[1,1e20]})", "token_ids"},
      {R"({"v":1,"type":"delta","id":"r","logprobs":[{"token_id":1,"logprob":-1e300}]})",
       "logprob"},
      {R"({"v":1,"type":"delta","id":"r","logprobs":[{"token_id":1,"bytes":[104,256]}]})",
       "bytes"},
  };
  for (const auto& [frame, field] : cases) {
    try {
      decode_server_message(frame);
      ADD_FAILURE() << "accepted " << frame;
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << frame << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("wrong type"), std::string::npos) << e.what();
    }
  }
  // In range, the same fields decode.
  const auto f = std::get<Final>(decode_server_message(
      R"({"v":1,"type":"final","id":"r","usage":{"prompt_tokens":2147483647,"cached_tokens":0}})"));
  EXPECT_EQ(f.usage.prompt_tokens, 2147483647);
}

TEST(Protocol, EachBadFrameIsRefusedWithItsError) {
  const std::vector<Refusal> cases = {
      {"not json", ErrorCode::kMalformed, "", "not valid JSON"},
      {"", ErrorCode::kMalformed, "", "not valid JSON"},
      {"[1,2]", ErrorCode::kMalformed, "", "must be a JSON object, got array"},
      {R"({"type":"health"})", ErrorCode::kUnsupportedVersion, "v", "missing protocol version"},
      {R"({"v":2,"type":"health"})", ErrorCode::kUnsupportedVersion, "v",
       "unsupported protocol version v=2"},
      {R"({"v":"1","type":"health"})", ErrorCode::kUnsupportedVersion, "v", "v=\"1\""},
      {R"({"v":1})", ErrorCode::kMalformed, "type", "missing message \"type\""},
      {R"({"v":1,"type":7})", ErrorCode::kMalformed, "type", "\"type\" must be a string, got 7"},
      {R"({"v":1,"type":"launch"})", ErrorCode::kMalformed, "type",
       "unknown message type 'launch'"},
      {R"({"v":1,"type":"submit","prompt":"x"})", ErrorCode::kInvalidRequest, "id",
       "id is required"},
      {R"({"v":1,"type":"submit","id":5,"prompt":"x"})", ErrorCode::kInvalidRequest, "id",
       "id must be a string, got an integer 5"},
      {R"({"v":1,"type":"submit","id":"a"})", ErrorCode::kInvalidRequest, "prompt",
       "one of prompt, prompt_ids or messages is required"},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","prompt_ids":[1]})",
       ErrorCode::kInvalidRequest, "prompt_ids", "only one of"},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","temprature":0})",
       ErrorCode::kInvalidRequest, "temprature", "unknown field 'temprature' in submit"},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","temperature":"hot"})",
       ErrorCode::kInvalidRequest, "temperature",
       "temperature must be a number, got string \"hot\""},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","max_tokens":1.5})",
       ErrorCode::kInvalidRequest, "max_tokens", "max_tokens must be an integer, got a number 1.5"},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","max_tokens":4294967296})",
       ErrorCode::kInvalidRequest, "max_tokens", "must fit in 32 bits"},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","seed":-1})", ErrorCode::kInvalidRequest,
       "seed", "seed must be an integer in [0, 2^64)"},
      {R"({"v":1,"type":"submit","id":"a","prompt_ids":[1,"2"]})", ErrorCode::kInvalidRequest,
       "prompt_ids[1]", "prompt_ids[1] must be an integer, got string \"2\""},
      {R"({"v":1,"type":"submit","id":"a","prompt_ids":7})", ErrorCode::kInvalidRequest,
       "prompt_ids", "must be an array of integers"},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","stop":[1]})", ErrorCode::kInvalidRequest,
       "stop[0]", "stop[0] must be a string"},
      {R"({"v":1,"type":"submit","id":"a","prompt":"x","stream":"yes"})",
       ErrorCode::kInvalidRequest, "stream", "stream must be true or false"},
      {R"({"v":1,"type":"submit","id":"a","messages":{"role":"user"}})", ErrorCode::kInvalidRequest,
       "messages", "messages must be an array"},
      {R"({"v":1,"type":"submit","id":"a","messages":[{"role":"user"}]})",
       ErrorCode::kInvalidRequest, "messages[0].content", "messages[0].content is required"},
      {R"({"v":1,"type":"submit","id":"a","messages":[{"role":"user","content":"x","name":"n"}]})",
       ErrorCode::kInvalidRequest, "messages[0].name", "unknown field 'messages[0].name'"},
      {R"({"v":1,"type":"cancel"})", ErrorCode::kInvalidRequest, "id", "id is required"},
      {R"({"v":1,"type":"cancel","id":"a","force":true})", ErrorCode::kInvalidRequest, "force",
       "unknown field 'force' in cancel"},
      {R"({"v":1,"type":"status","requests":1})", ErrorCode::kInvalidRequest, "requests",
       "requests must be true or false"},
      {R"({"v":1,"type":"health","x":1})", ErrorCode::kInvalidRequest, "x",
       "unknown field 'x' in health"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.frame);
    const ProtocolError e = decode_error(c.frame);
    EXPECT_EQ(to_string(e.code()), to_string(c.code));
    EXPECT_EQ(e.field(), c.field);
    EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << e.what();
  }
}

TEST(Protocol, PeekRequestIdOfABadFrame) {
  EXPECT_EQ(peek_request_id(R"({"v":1,"type":"submit","id":"r9","temperature":"x"})"), "r9");
  EXPECT_FALSE(peek_request_id("garbage").has_value());
  EXPECT_FALSE(peek_request_id(R"({"id":3})").has_value());
}

TEST(Protocol, ErrorCodesHaveStableNames) {
  EXPECT_EQ(to_string(ErrorCode::kOverloaded), "overloaded");
  EXPECT_EQ(parse_error_code("unknown_request"), ErrorCode::kUnknownRequest);
  EXPECT_FALSE(parse_error_code("nope").has_value());
  EXPECT_EQ(to_string(ErrorCode::kTimeout), "timeout");
  EXPECT_EQ(parse_error_code("timeout"), ErrorCode::kTimeout);
  // A replica's failure ends a request "unavailable" (the gateway's 503), not "rejected" (400).
  EXPECT_EQ(to_string(ErrorCode::kUnavailable), "unavailable");
  EXPECT_EQ(parse_error_code("unavailable"), ErrorCode::kUnavailable);
  EXPECT_EQ(to_string(ErrorCode::kRejected), "rejected");
}

TEST(Protocol, UnavailableErrorAndItsCounterRoundTrip) {
  ErrorReply e{"r3", ErrorCode::kUnavailable, "",
               "unavailable: replica 1 (world ranks 3-4): world rank 3 failed", std::nullopt};
  const std::string text = encode(ServerMessage{e});
  EXPECT_NE(text.find(R"("code":"unavailable")"), std::string::npos) << text;
  const auto back = std::get<ErrorReply>(decode_server_message(text));
  EXPECT_EQ(back.code, ErrorCode::kUnavailable);
  EXPECT_EQ(back.message, e.message);
  EXPECT_FALSE(back.retry_after_s.has_value());

  StatusReply s;
  s.rejected = 2;
  s.unavailable = 5;
  const std::string st = encode(ServerMessage{s});
  EXPECT_NE(st.find(R"("unavailable":5)"), std::string::npos) << st;
  const auto sb = std::get<StatusReply>(decode_server_message(st));
  EXPECT_EQ(sb.unavailable, 5);
  EXPECT_EQ(sb.rejected, 2);
}

}  // namespace
}  // namespace shardserve::api
