// Hostile input: every limit of issue #21 (frame/body size, prompt length, stop strings, n,
// logprobs, JSON nesting depth) refused with a message naming the limit, at the ZeroMQ front
// end's decoder/validator and at the gateway's request parser, before the coordinator does any
// work. (The frame limit itself is enforced on the socket: front_end_test's "at most 4194304";
// the gateway's body limit by cpp-httplib's payload limit: limits_e2e.py.)
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "api/bounded_json.h"
#include "api/protocol.h"
#include "api/validate.h"
#include "config/service_config.h"
#include "gateway/admission.h"
#include "gateway/openai.h"
#include "model/model_config.h"

namespace shardserve {
namespace {

using nlohmann::json;

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ----- JSON depth ----------------------------------------------------------------------------

TEST(JsonDepth, AtTheLimitParsesOneDeeperIsRefusedNamingIt) {
  EXPECT_TRUE(api::parse_bounded_json(nested(api::kMaxJsonDepth)).is_array());
  try {
    (void)api::parse_bounded_json(nested(api::kMaxJsonDepth + 1));
    ADD_FAILURE() << "accepted";
  } catch (const api::JsonTooDeep& e) {
    EXPECT_TRUE(has(e.what(), "max_json_depth is 32")) << e.what();
  }
  EXPECT_TRUE(api::parse_bounded_json("{not json").is_discarded());
}

TEST(JsonDepth, AHugeNestingIsRefusedWithoutBuildingIt) {
  // 4 MiB of '[': would be 4 million nested arrays (and a recursion that deep to free them).
  EXPECT_THROW((void)api::parse_bounded_json(std::string(4 << 20, '[')), api::JsonTooDeep);
}

TEST(JsonDepth, ProtocolFrameTooDeepIsMalformedNamingTheLimit) {
  const std::string frame =
      R"({"v":1,"type":"submit","id":"r","prompt":"x","stop":)" + nested(40) + "}";
  try {
    (void)api::decode_client_message(frame);
    ADD_FAILURE() << "accepted";
  } catch (const api::ProtocolError& e) {
    EXPECT_EQ(e.code(), api::ErrorCode::kMalformed);
    EXPECT_TRUE(has(e.what(), "max_json_depth")) << e.what();
  }
  EXPECT_EQ(api::peek_request_id(frame), std::nullopt);
}

TEST(JsonDepth, GatewayBodyTooDeepIs400JsonTooDeep) {
  try {
    (void)gateway::parse_json_body(R"({"model":"m","prompt":)" + nested(33) + "}");
    ADD_FAILURE() << "accepted";
  } catch (const gateway::OpenAIException& e) {
    EXPECT_EQ(e.error().status, 400);
    EXPECT_EQ(e.error().code, "json_too_deep");
    EXPECT_TRUE(has(e.error().message, "max_json_depth")) << e.error().message;
  }
  try {
    (void)gateway::parse_json_body("{");
    ADD_FAILURE() << "accepted";
  } catch (const gateway::OpenAIException& e) {
    EXPECT_EQ(e.error().code, "invalid_json");
  }
}

// ----- the ZeroMQ protocol -------------------------------------------------------------------

class ProtocolLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    model_.name = "m";
    model_.vocab_size = 1000;
    model_.max_model_len = 256;
    ctx_.model = &model_;
  }
  // The error validate_submit gives `s` (which must be refused).
  api::ProtocolError refusal(const api::SubmitRequest& s) {
    try {
      (void)api::validate_submit(s, ctx_);
    } catch (const api::ProtocolError& e) {
      return e;
    }
    ADD_FAILURE() << "accepted";
    return api::ProtocolError(api::ErrorCode::kInternal, "", "");
  }
  static api::SubmitRequest base() {
    api::SubmitRequest s;
    s.id = "r";
    s.prompt_ids = std::vector<int32_t>{1, 2, 3};
    return s;
  }
  api::ModelInfo model_;
  api::ValidationContext ctx_;
};

TEST_F(ProtocolLimits, EachOverLimitFieldIsNamedWithItsLimit) {
  struct Case {
    const char* limit;
    const char* field;
    api::SubmitRequest s;
  };
  std::vector<Case> cases;
  auto add = [&](const char* limit, const char* field, auto edit) {
    api::SubmitRequest s = base();
    edit(s);
    cases.push_back({limit, field, std::move(s)});
  };
  add("max_stop_strings", "stop", [](auto& s) { s.stop.assign(17, "x"); });
  add("max_stop_string_bytes", "stop[1]", [](auto& s) { s.stop = {"ok", std::string(257, 'y')}; });
  add("max_stop_token_ids", "stop_token_ids", [](auto& s) { s.stop_token_ids.assign(65, 1); });
  add("max_logprobs", "logprobs", [](auto& s) { s.logprobs = 21; });
  add("max_id_bytes", "id", [](auto& s) { s.id = std::string(129, 'i'); });
  add("max_prompt_bytes", "prompt", [](auto& s) {
    s.prompt_ids.reset();
    s.prompt = std::string((1 << 20) + 1, 'p');
  });
  add("max_messages", "messages", [](auto& s) {
    s.prompt_ids.reset();
    s.messages = std::vector<api::ChatMessage>(513, {"user", "hi"});
  });
  add("max_prompt_bytes", "messages", [](auto& s) {
    s.prompt_ids.reset();
    s.messages = std::vector<api::ChatMessage>(2, {"user", std::string(600000, 'c')});
  });
  for (const auto& c : cases) {
    const api::ProtocolError e = refusal(c.s);
    EXPECT_EQ(e.code(), api::ErrorCode::kInvalidRequest) << c.limit;
    EXPECT_EQ(e.field(), c.field) << c.limit << ": " << e.what();
    EXPECT_TRUE(has(e.what(), std::string("limit ") + c.limit)) << e.what();
  }
}

TEST_F(ProtocolLimits, PromptLongerThanTheContextIsRefusedNamingTheContext) {
  api::SubmitRequest s = base();
  s.prompt_ids = std::vector<int32_t>(300, 5);
  const api::ProtocolError e = refusal(s);
  EXPECT_EQ(e.field(), "prompt_ids");
  EXPECT_TRUE(has(e.what(), "the context length is 256")) << e.what();
}

TEST(ProtocolDecode, AFloatOutOfFloatRangeIsRefusedNotConverted) {
  try {
    (void)api::decode_client_message(
        R"({"v":1,"type":"submit","id":"r","prompt":"x","temperature":1e300})");
    ADD_FAILURE() << "accepted";
  } catch (const api::ProtocolError& e) {
    EXPECT_EQ(e.field(), "temperature");
    EXPECT_TRUE(has(e.what(), "magnitude at most")) << e.what();
  }
}

// ----- the gateway ---------------------------------------------------------------------------

class GatewayLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    model_.name = "m";
    model_.vocab_size = 1000;
    model_.max_model_len = 256;
  }
  gateway::OpenAIError refusal(gateway::Endpoint endpoint, const json& body) {
    try {
      (void)gateway::parse_request(endpoint, body, model_, 1);
    } catch (const gateway::OpenAIException& e) {
      return e.error();
    }
    ADD_FAILURE() << "accepted: " << body.dump().substr(0, 200);
    return {};
  }
  api::ModelInfo model_;
};

TEST_F(GatewayLimits, EachOverLimitFieldIs400NamingItsLimit) {
  using gateway::Endpoint;
  const json completion{{"model", "m"}, {"prompt", "hi"}};
  const json chat{{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  struct Case {
    const char* limit;
    const char* param;
    Endpoint endpoint;
    json body;
  };
  auto with = [](json body, const char* key, json value) {
    body[key] = std::move(value);
    return body;
  };
  const std::vector<Case> cases = {
      {"max_n", "n", Endpoint::kCompletions, with(completion, "n", 17)},
      {"max_choices", "n", Endpoint::kCompletions,
       with(with(completion, "prompt", json::array({"a", "b", "c", "d", "e"})), "n", 16)},
      {"max_prompts", "prompt", Endpoint::kCompletions,
       with(completion, "prompt", json(std::vector<std::string>(65, "p")))},
      {"max_stop_strings", "stop", Endpoint::kChatCompletions,
       with(chat, "stop", json(std::vector<std::string>(17, "s")))},
      {"max_stop_string_bytes", "stop", Endpoint::kChatCompletions,
       with(chat, "stop", std::string(257, 's'))},
      {"max_stop_token_ids", "stop_token_ids", Endpoint::kCompletions,
       with(completion, "stop_token_ids", json(std::vector<int>(65, 1)))},
      {"max_logprobs", "logprobs", Endpoint::kCompletions, with(completion, "logprobs", 21)},
      {"max_logprobs", "top_logprobs", Endpoint::kChatCompletions,
       with(with(chat, "logprobs", true), "top_logprobs", 21)},
      {"max_prompt_bytes", "prompt", Endpoint::kCompletions,
       with(completion, "prompt", std::string((1 << 20) + 1, 'p'))},
      {"max_model_len", "prompt", Endpoint::kCompletions,
       with(completion, "prompt", json(std::vector<int>(256, 1)))},
      {"max_messages", "messages", Endpoint::kChatCompletions,
       with(chat, "messages",
            json(std::vector<json>(513, json{{"role", "user"}, {"content", "x"}})))},
      {"max_prompt_bytes", "messages", Endpoint::kChatCompletions,
       with(chat, "messages",
            json(std::vector<json>(2, json{{"role", "user"},
                                           {"content", std::string(600000, 'c')}})))},
  };
  for (const auto& c : cases) {
    const gateway::OpenAIError e = refusal(c.endpoint, c.body);
    EXPECT_EQ(e.status, 400) << c.limit;
    EXPECT_EQ(e.param, std::optional<std::string>(c.param)) << c.limit << ": " << e.message;
    EXPECT_TRUE(has(e.message, c.limit)) << c.limit << ": " << e.message;
  }
}

TEST_F(GatewayLimits, AtTheLimitsTheRequestPasses) {
  json body{{"model", "m"},
            {"prompt", json::array({"a", "b", "c", "d"})},
            {"n", 16},
            {"logprobs", 20},
            {"stop", std::vector<std::string>(16, std::string(256, 's'))},
            {"stop_token_ids", std::vector<int>(64, 1)}};
  const auto r = gateway::parse_request(gateway::Endpoint::kCompletions, body, model_, 1);
  EXPECT_EQ(r.submits.size(), 64u);
}

TEST_F(GatewayLimits, MistypedFieldsAre400NotInternalErrors) {
  // nlohmann's value() would throw type_error here, which the gateway answered 500 "internal".
  const json bad_role{{"model", "m"}, {"messages", {{{"role", 5}, {"content", "x"}}}}};
  EXPECT_EQ(refusal(gateway::Endpoint::kChatCompletions, bad_role).param, "messages[0].role");
  const json bad_part{{"model", "m"},
                      {"messages", {{{"role", "user"}, {"content", {{{"type", 1}}}}}}}};
  EXPECT_EQ(refusal(gateway::Endpoint::kChatCompletions, bad_part).status, 400);
  const json bad_format{{"model", "m"},
                        {"messages", {{{"role", "user"}, {"content", "x"}}}},
                        {"response_format", {{"type", 3}}}};
  EXPECT_EQ(refusal(gateway::Endpoint::kChatCompletions, bad_format).param, "response_format");
  const json huge_top_p{{"model", "m"}, {"prompt", "x"}, {"top_p", 1e300}};
  EXPECT_TRUE(has(refusal(gateway::Endpoint::kCompletions, huge_top_p).message,
                  "magnitude at most"));
}

TEST(GatewayAdmission, ThePastLimitRequestIsRefusedUntilASlotIsFreed) {
  gateway::ActiveLimit limit(2);
  auto a = limit.try_acquire();
  auto b = limit.try_acquire();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(limit.try_acquire(), nullptr);
  auto copy = a;  // a stream's exchange shares its slot
  a.reset();
  EXPECT_EQ(limit.try_acquire(), nullptr);
  copy.reset();
  EXPECT_NE(limit.try_acquire(), nullptr);  // (released again at once)
  EXPECT_EQ(limit.active(), 1);
}

// ----- config.json ---------------------------------------------------------------------------

TEST(ModelConfigInput, MistypedStringsAndHugeSizesAreNamed) {
  json c = json::parse(R"({"model_type":"llama","vocab_size":1000,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4})");
  EXPECT_NO_THROW((void)model::parse_model_config(c, "config.json"));
  auto with = [](json j, const char* key, json value) {
    j[key] = std::move(value);
    return j;
  };
  auto refused = [](json j, const std::string& part) {
    try {
      (void)model::parse_model_config(j, "config.json");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const Error& e) {
      EXPECT_TRUE(has(e.what(), part)) << e.what();
    }
  };
  refused(with(c, "model_type", 5), "config.json.model_type must be a string");
  refused(with(c, "hidden_act", false), "config.json.hidden_act must be a string");
  refused(with(c, "hidden_size", int64_t{1} << 40), "larger than 2^31 - 1");
  refused(with(c, "eos_token_id", int64_t{1} << 32), "token ids in [0, 2^31)");
  refused(with(c, "bos_token_id", 1000), "bos_token_id 1000 is outside");
  refused(with(c, "head_dim", 1 << 20), "at most 65536");
}

}  // namespace
}  // namespace shardserve

// The [limits] time limits of the service configuration: seconds in [0, 30 days], 0 = none;
// read from the file and the flags like every setting; refusals name the setting.
namespace shardserve {
namespace {

TEST(TimeLimitSettings, ParsedValidatedAndNamed) {
  const auto c = config::parse_toml(
      "model = \"m\"\n[limits]\nmax_request_seconds = 120.0\nstream_idle_timeout_s = 30.0\n",
      "t.toml");
  EXPECT_EQ(c.limits.max_request_seconds, 120.0);
  EXPECT_EQ(c.limits.stream_idle_timeout_s, 30.0);
  EXPECT_EQ(config::parse_toml(config::to_toml(c), "again.toml"), c);
  EXPECT_NO_THROW(config::validate_limits(c.limits));
  EXPECT_NO_THROW(config::validate_limits({}));  // the defaults: none
  auto refused = [](config::LimitsSettings l, const std::string& part) {
    try {
      config::validate_limits(l);
      ADD_FAILURE() << "accepted; expected '" << part << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  refused({-1.0, 0.0}, "limits.max_request_seconds = -1 must be a number of seconds in [0, 2592000]");
  refused({0.0, 1e9}, "limits.stream_idle_timeout_s = 1000000000");
  refused({std::numeric_limits<double>::quiet_NaN(), 0.0}, "limits.max_request_seconds = nan");
  EXPECT_THROW(config::parse_toml("[limits]\nmax_request_second = 1.0\n", "typo.toml"), Error);
}

}  // namespace
}  // namespace shardserve
