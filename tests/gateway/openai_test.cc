// The OpenAI mapping: request bodies to protocol submits (n choices, seeds, defaults, the
// extensions) and every refusal as an OpenAI error naming the parameter; protocol errors to
// HTTP statuses; response bodies and stream chunks in OpenAI's shapes.
#include "gateway/openai.h"

#include <gtest/gtest.h>

namespace shardserve::gateway {
namespace {

using nlohmann::json;

api::ModelInfo model() {
  api::ModelInfo m;
  m.name = "kjv-llama";
  m.max_model_len = 2048;
  return m;
}

OpenAIError refusal(Endpoint e, const json& body) {
  try {
    parse_request(e, body, model(), 100);
  } catch (const OpenAIException& x) {
    return x.error();
  }
  ADD_FAILURE() << "accepted: " << body.dump();
  return {};
}

TEST(OpenAI, CompletionBecomesSubmits) {
  const auto r = parse_request(Endpoint::kCompletions,
                               json{{"model", "kjv-llama"},
                                    {"prompt", "In the beginning"},
                                    {"n", 3},
                                    {"temperature", 0.5},
                                    {"top_p", 0.9},
                                    {"stop", "\n"},
                                    {"seed", 7},
                                    {"logprobs", 2},
                                    {"presence_penalty", 0.5},
                                    {"top_k", 40},
                                    {"ignore_eos", true},
                                    {"stream", true},
                                    {"stream_options", {{"include_usage", true}}}},
                               model(), 100);
  ASSERT_EQ(r.submits.size(), 3u);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.logprobs, 2);
  for (int j = 0; j < 3; ++j) {
    const auto& s = r.submits[j];
    EXPECT_EQ(s.prompt, "In the beginning");
    EXPECT_EQ(s.max_tokens, 16);  // the legacy API's default
    EXPECT_EQ(s.temperature, 0.5f);
    EXPECT_EQ(s.top_k, 40);
    EXPECT_EQ(s.stop, std::vector<std::string>{"\n"});
    EXPECT_EQ(s.seed, 7u + j);  // choice j: seed + j
    EXPECT_EQ(s.logprobs, 2);
    EXPECT_TRUE(s.ignore_eos);
    EXPECT_TRUE(s.stream);
  }
}

TEST(OpenAI, PromptShapes) {
  auto r = parse_request(Endpoint::kCompletions,
                         json{{"model", "kjv-llama"}, {"prompt", {1, 2, 3}}}, model(), 0);
  ASSERT_EQ(r.submits.size(), 1u);
  EXPECT_EQ(r.submits[0].prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  r = parse_request(Endpoint::kCompletions,
                    json{{"model", "kjv-llama"}, {"prompt", {"a", "b"}}, {"n", 2}}, model(), 0);
  ASSERT_EQ(r.submits.size(), 4u);
  EXPECT_EQ(r.num_prompts, 2);
  EXPECT_EQ(r.submits[2].prompt, "b");
  r = parse_request(Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", {{1, 2}, {3}}}},
                    model(), 0);
  ASSERT_EQ(r.submits.size(), 2u);
  EXPECT_EQ(r.submits[1].prompt_ids, std::vector<int32_t>{3});
  // Without a seed the choices get different ones.
  r = parse_request(Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"n", 2}},
                    model(), 555);
  EXPECT_NE(r.submits[0].seed, r.submits[1].seed);
}

TEST(OpenAI, ChatBecomesAChatSubmit) {
  const auto r = parse_request(
      Endpoint::kChatCompletions,
      json{{"model", "kjv-llama"},
           {"messages",
            {{{"role", "developer"}, {"content", "Be terse."}},
             {{"role", "user"},
              {"content",
               {{{"type", "text"}, {"text", "Who"}}, {{"type", "text"}, {"text", "made it?"}}}}},
             {{"role", "assistant"}, {"content", nullptr}}}},
           {"max_completion_tokens", 9},
           {"logprobs", true},
           {"top_logprobs", 3}},
      model(), 0);
  ASSERT_EQ(r.submits.size(), 1u);
  const auto& s = r.submits[0];
  ASSERT_TRUE(s.messages);
  EXPECT_EQ((*s.messages)[0], (api::ChatMessage{"system", "Be terse."}));
  EXPECT_EQ((*s.messages)[1].content, "Who\nmade it?");
  EXPECT_EQ((*s.messages)[2].content, "");
  EXPECT_EQ(s.max_tokens, 9);
  EXPECT_EQ(s.logprobs, 3);
  EXPECT_EQ(r.logprobs, 3);
  // No max_tokens: up to the context (the service's default).
  const auto d = parse_request(
      Endpoint::kChatCompletions,
      json{{"model", "kjv-llama"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}}, model(),
      0);
  EXPECT_FALSE(d.submits[0].max_tokens.has_value());
  EXPECT_EQ(d.logprobs, -1);
}

TEST(OpenAI, EachBadBodyIsAnOpenAIError) {
  const json chat_msgs = {{{"role", "user"}, {"content", "x"}}};
  struct Case {
    Endpoint e;
    json body;
    int status;
    std::string param;
    std::string part;
  };
  const std::vector<Case> cases = {
      {Endpoint::kCompletions, json::array(), 400, "", "must be a JSON object"},
      {Endpoint::kCompletions, json{{"prompt", "x"}}, 400, "model", "'model' is required"},
      {Endpoint::kCompletions, json{{"model", "other"}, {"prompt", "x"}}, 404, "model",
       "does not exist"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}}, 400, "prompt", "'prompt' is required"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", 5}}, 400, "prompt",
       "must be a string"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"colour", 1}}, 400,
       "colour", "Unrecognized request argument supplied: colour"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"temperature", 3}},
       400, "temperature", "[0, 2], got 3"},
      {Endpoint::kCompletions,
       json{{"model", "kjv-llama"}, {"prompt", "x"}, {"temperature", "hot"}}, 400, "temperature",
       "must be a number"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"n", 0}}, 400, "n",
       "[1, 16], got 0"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"max_tokens", 1.5}},
       400, "max_tokens", "must be an integer"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"echo", true}}, 400,
       "echo", "not supported"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"best_of", 3}}, 400,
       "best_of", "must equal 'n'"},
      {Endpoint::kCompletions,
       json{{"model", "kjv-llama"}, {"prompt", "x"}, {"logit_bias", {{"5", 1}}}}, 400, "logit_bias",
       "not supported"},
      {Endpoint::kCompletions,
       json{{"model", "kjv-llama"}, {"prompt", "x"}, {"stream_options", {{"include_usage", true}}}},
       400, "stream_options", "only allowed when 'stream' is true"},
      {Endpoint::kCompletions, json{{"model", "kjv-llama"}, {"prompt", "x"}, {"stop", {1}}}, 400,
       "stop", "must be a string or an array of strings"},
      {Endpoint::kChatCompletions, json{{"model", "kjv-llama"}}, 400, "messages",
       "'messages' is required"},
      {Endpoint::kChatCompletions, json{{"model", "kjv-llama"}, {"messages", json::array()}}, 400,
       "messages", "non-empty array"},
      {Endpoint::kChatCompletions,
       json{{"model", "kjv-llama"}, {"messages", {{{"role", "tool"}, {"content", "x"}}}}}, 400,
       "messages[0].role", "got 'tool'"},
      {Endpoint::kChatCompletions,
       json{{"model", "kjv-llama"},
            {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}},
       400, "messages[0].content", "only text parts"},
      {Endpoint::kChatCompletions,
       json{{"model", "kjv-llama"}, {"messages", chat_msgs}, {"top_logprobs", 2}}, 400,
       "top_logprobs", "needs 'logprobs': true"},
      {Endpoint::kChatCompletions,
       json{{"model", "kjv-llama"}, {"messages", chat_msgs}, {"tools", {{{"type", "function"}}}}},
       400, "tools", "not supported"},
      {Endpoint::kChatCompletions,
       json{{"model", "kjv-llama"},
            {"messages", chat_msgs},
            {"response_format", {{"type", "json_object"}}}},
       400, "response_format", "only"},
      {Endpoint::kChatCompletions,
       json{{"model", "kjv-llama"}, {"messages", chat_msgs}, {"prompt", "x"}}, 400, "prompt",
       "Unrecognized request argument"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body.dump());
    const OpenAIError e = refusal(c.e, c.body);
    EXPECT_EQ(e.status, c.status);
    EXPECT_EQ(e.param.value_or(""), c.param);
    EXPECT_NE(e.message.find(c.part), std::string::npos) << e.message;
    const json b = e.body();
    ASSERT_TRUE(b.contains("error"));
    for (const char* k : {"message", "type", "param", "code"})
      EXPECT_TRUE(b["error"].contains(k)) << k;
  }
}

// The coordinator's deadline answer (the gateway's --request-timeout passed as timeout_s) is a
// 504 naming the deadline and what was produced; any other final is no error.
TEST(OpenAI, DeadlineFinalIs504) {
  api::Final f;
  f.id = "x";
  f.finish_reason = "timeout";
  f.finish_detail = "deadline";
  f.usage.completion_tokens = 7;
  const auto e = from_timeout_final(f, 2.5);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 504);
  EXPECT_EQ(e->code, "timeout");
  EXPECT_EQ(e->type, "server_error");
  EXPECT_NE(e->message.find("2.5 s (--request-timeout)"), std::string::npos) << e->message;
  EXPECT_NE(e->message.find("after 7 completion token"), std::string::npos) << e->message;
  EXPECT_EQ(e->body()["error"]["code"], "timeout");
  for (const char* reason : {"stop", "length", "cancelled"}) {
    f.finish_reason = reason;
    EXPECT_FALSE(from_timeout_final(f, 2.5)) << reason;
  }
}

TEST(OpenAI, ProtocolErrorsBecomeStatuses) {
  auto st = [](api::ErrorCode c, std::string field = "") {
    return from_protocol_error(api::ErrorReply{"x", c, field, "m", std::nullopt});
  };
  EXPECT_EQ(st(api::ErrorCode::kInvalidRequest, "max_tokens").status, 400);
  EXPECT_EQ(st(api::ErrorCode::kInvalidRequest, "max_tokens").param, "max_tokens");
  EXPECT_EQ(st(api::ErrorCode::kInvalidRequest, "prompt_ids[3]").param, "prompt");
  const auto o = st(api::ErrorCode::kOverloaded);
  EXPECT_EQ(o.status, 429);
  EXPECT_EQ(o.code, "overloaded");
  EXPECT_TRUE(o.retry_after_s.has_value());
  EXPECT_EQ(st(api::ErrorCode::kShuttingDown).status, 503);
  EXPECT_EQ(st(api::ErrorCode::kUnavailable).status, 503);
  EXPECT_EQ(st(api::ErrorCode::kInternal).status, 500);
  EXPECT_EQ(st(api::ErrorCode::kRejected).status, 400);
  // The coordinator's idle-stream timeout.
  EXPECT_EQ(st(api::ErrorCode::kTimeout).status, 504);
  EXPECT_EQ(st(api::ErrorCode::kTimeout).code, "timeout");
}

// A request a replica's failure ended (the front end's error "unavailable") was fine: 503 with
// Retry-After and OpenAI's error shape, not the 400 of a refusal.
TEST(OpenAI, UnavailableIs503WithRetryAfter) {
  const std::string message =
      "unavailable: replica 1 (world ranks 3-4): world rank 3 failed: its process (pid 7, on this "
      "host) is gone: killed or crashed (runtime.on_replica_failure = \"abort\"); the request was "
      "ended after 5 token(s)";
  const auto o =
      from_protocol_error(api::ErrorReply{"x", api::ErrorCode::kUnavailable, "", message, std::nullopt});
  EXPECT_EQ(o.status, 503);
  EXPECT_EQ(o.type, "service_unavailable");
  ASSERT_TRUE(o.retry_after_s.has_value());
  EXPECT_EQ(*o.retry_after_s, kUnavailableRetryAfter_s);
  EXPECT_EQ(o.body(), (json{{"error",
                             {{"message", message},
                              {"type", "service_unavailable"},
                              {"param", nullptr},
                              {"code", "unavailable"}}}}));
  // A hint from the service wins over the default.
  const auto hinted =
      from_protocol_error(api::ErrorReply{"x", api::ErrorCode::kUnavailable, "", "m", 4.0});
  EXPECT_EQ(hinted.retry_after_s, 4.0);
  // The gateway's own "the coordinator is gone" answers are the same error.
  const auto own = unavailable_error("the coordinator at tcp://127.0.0.1:5555 is not answering");
  EXPECT_EQ(own.status, 503);
  EXPECT_EQ(own.type, "service_unavailable");
  EXPECT_EQ(own.code, "unavailable");
  EXPECT_EQ(own.retry_after_s, kUnavailableRetryAfter_s);
  // A drain stays a plain 503; a refusal stays 400.
  const auto drain =
      from_protocol_error(api::ErrorReply{"x", api::ErrorCode::kShuttingDown, "", "m", std::nullopt});
  EXPECT_EQ(drain.status, 503);
  EXPECT_EQ(drain.type, "server_error");
  const auto refused =
      from_protocol_error(api::ErrorReply{"x", api::ErrorCode::kRejected, "", "m", std::nullopt});
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(refused.type, "invalid_request_error");
}

TEST(OpenAI, ResponseShapes) {
  auto r = parse_request(Endpoint::kChatCompletions,
                         json{{"model", "kjv-llama"},
                              {"messages", {{{"role", "user"}, {"content", "x"}}}},
                              {"n", 2},
                              {"logprobs", true},
                              {"stream", true},
                              {"stream_options", {{"include_usage", true}}}},
                         model(), 0);
  std::vector<ChoiceState> choices(2);
  const ResponseMeta meta{"chatcmpl-1", 1700000000, "kjv-llama"};
  api::Delta d{"gw-1-0",
               "Hello",
               {5},
               {{5, -0.5f, "Hello", {72, 101, 108, 108, 111}, {{5, -0.5f, "Hello"}}}}};
  const json chunk = delta_chunk(r, meta, 0, &d, choices[0], nullptr);
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "Hello");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"][0]["bytes"], json({72, 101, 108, 108, 111}));
  EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());
  EXPECT_EQ(role_chunk(r, meta, 1)["choices"][0]["delta"]["role"], "assistant");
  for (int i = 0; i < 2; ++i) {
    choices[i].text = "Hello";
    api::Final f;
    f.finish_reason = "length";
    f.usage = {7, 3, 2};
    choices[i].final = f;
  }
  const json fin = delta_chunk(r, meta, 1, nullptr, choices[1], &*choices[1].final);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(fin["choices"][0]["delta"], json::object());
  const json u = usage_chunk(r, meta, choices);
  EXPECT_EQ(u["choices"], json::array());
  // n=2 of one prompt: the prompt counted once, both completions.
  EXPECT_EQ(u["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(u["usage"]["completion_tokens"], 6);
  EXPECT_EQ(u["usage"]["total_tokens"], 13);
  EXPECT_EQ(u["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  const json body = response_body(r, meta, choices);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][1]["message"]["content"], "Hello");
  EXPECT_EQ(body["choices"][1]["index"], 1);
  EXPECT_EQ(sse(json{{"a", 1}}), "data: {\"a\":1}\n\n");

  auto c =
      parse_request(Endpoint::kCompletions,
                    json{{"model", "kjv-llama"}, {"prompt", "x"}, {"logprobs", 1}}, model(), 0);
  std::vector<ChoiceState> one(1);
  one[0].text = "ab";
  one[0].logprobs = {{1, -0.1f, "a", {}, {{1, -0.1f, "a"}}},
                     {2, -0.2f, "b", {}, {{2, -0.2f, "b"}}}};
  one[0].final = api::Final{};
  const json cb = response_body(c, meta, one);
  EXPECT_EQ(cb["object"], "text_completion");
  EXPECT_EQ(cb["choices"][0]["logprobs"]["tokens"], json({"a", "b"}));
  EXPECT_EQ(cb["choices"][0]["logprobs"]["text_offset"], json({0, 1}));
  EXPECT_EQ(cb["choices"][0]["logprobs"]["top_logprobs"][1]["b"], -0.2f);
}

}  // namespace
}  // namespace shardserve::gateway
