// config/service_config.h: TOML parsing, flags over the file, one validation with messages that
// name the setting, and the round trip the coordinator uses to send the configuration.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "config/service_config.h"
#include "model/model_config.h"

namespace shardserve::config {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

fs::path model_dir() {
  // Any directory with a config.json will do for validate(); use a fixture.
  return fs::path(SHARDSERVE_SOURCE_DIR) / "tests" / "fixtures" / "llama3-bpe";
}

model::ModelConfig model_with(int64_t heads, int64_t kv_heads, int64_t ffn = 128) {
  model::ModelConfig m;
  m.model_type = "llama";
  m.vocab_size = 1000;
  m.hidden_size = 64;
  m.intermediate_size = ffn;
  m.num_hidden_layers = 2;
  m.num_attention_heads = heads;
  m.num_key_value_heads = kv_heads;
  m.head_dim = 16;
  m.max_position_embeddings = 4096;
  return m;
}

TEST(ServiceConfig, ParsesEveryTable) {
  const auto c = parse_toml(R"(
model = "/models/x"
tp = 2
replicas = 3
log_level = "debug"
[kv]
block_size = 32
memory_bytes = "1.5GiB"
memory_fraction = 0.5
[scheduler]
max_num_seqs = 64
max_num_batched_tokens = 4096
max_model_len = 2048
enable_prefix_caching = false
watermark = 0.02
[ports]
host = "127.0.0.1"
zmq = 6000
http = 8080
metrics = 9100
[runtime]
step_timeout_s = 5
shutdown_grace_s = 0.5
on_replica_failure = "abort"
heartbeat_interval_s = 0.25
coordinator_timeout_s = 4
)", "test.toml");
  EXPECT_EQ(c.model, "/models/x");
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.replicas, 3);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.kv.block_size, 32);
  EXPECT_EQ(c.kv.memory_bytes, int64_t{3} << 29);
  EXPECT_EQ(c.kv.memory_fraction, 0.5);
  EXPECT_EQ(c.scheduler.max_num_seqs, 64);
  EXPECT_EQ(c.scheduler.max_num_batched_tokens, 4096);
  EXPECT_EQ(c.scheduler.max_model_len, 2048);
  EXPECT_FALSE(c.scheduler.enable_prefix_caching);
  EXPECT_TRUE(c.scheduler.enable_chunked_prefill);  // default kept
  EXPECT_EQ(c.ports.host, "127.0.0.1");
  EXPECT_EQ(c.ports.metrics, 9100);
  EXPECT_EQ(c.runtime.step_timeout_s, 5.0);
  EXPECT_EQ(c.runtime.shutdown_grace_s, 0.5);
  EXPECT_EQ(c.runtime.on_replica_failure, "abort");
  EXPECT_EQ(c.runtime.heartbeat_interval_s, 0.25);
  EXPECT_EQ(c.runtime.coordinator_timeout_s, 4.0);
  EXPECT_EQ(ServiceConfig{}.runtime.on_replica_failure, "failover");
}

TEST(ServiceConfig, FileErrorsNameTheFileLineAndKey) {
  EXPECT_THAT(error_of([] { parse_toml("tp = 2\n[kv]\nblok_size = 3\n", "a.toml"); }),
              HasSubstr("config file a.toml:3: kv.blok_size: unknown setting"));
  EXPECT_THAT(error_of([] { parse_toml("tp = \"two\"\n", "a.toml"); }),
              HasSubstr("config file a.toml:1: tp: expected an integer, got a string"));
  EXPECT_THAT(error_of([] { parse_toml("[gpu]\nx = 1\n", "a.toml"); }),
              HasSubstr("unknown table [gpu]"));
  EXPECT_THAT(error_of([] { parse_toml("tp = = 2\n", "a.toml"); }), HasSubstr("config file a.toml:1:"));
  EXPECT_THAT(error_of([] { parse_toml("[kv]\nmemory_bytes = \"4 parsecs\"\n", "a.toml"); }),
              HasSubstr("unknown unit 'parsecs'"));
  EXPECT_THAT(error_of([] { parse_toml("tp = 9999999999\n", "a.toml"); }), HasSubstr("out of range"));
}

TEST(ServiceConfig, TomlRoundTripsExactly) {
  ServiceConfig c;
  c.model = "/m/with \"quotes\" and \\ backslash";
  c.tp = 4;
  c.kv.memory_fraction = 0.123456789;
  c.kv.memory_bytes = 123456789012;
  c.scheduler.enable_chunked_prefill = false;
  c.runtime.step_timeout_s = 2.5;
  c.runtime.shutdown_grace_s = 3;
  c.runtime.on_replica_failure = "abort";
  c.runtime.heartbeat_interval_s = 0.125;
  c.runtime.coordinator_timeout_s = 7.5;
  c.device = "cuda";
  c.speculative.method = "draft";
  c.speculative.draft_model = "/d";
  c.speculative.num_speculative_tokens = 6;
  c.speculative.adaptive = true;
  c.speculative.draft_cost = 0.25;
  c.speculative.ngram_min = 2;
  c.speculative.ngram_max = 5;
  c.speculative.draft_placement = "every_rank";
  const auto text = to_toml(c);
  EXPECT_EQ(parse_toml(text, "round trip"), c) << text;
  EXPECT_THAT(text, HasSubstr("[scheduler]"));
  EXPECT_THAT(text, HasSubstr("[speculative]\nmethod = 'draft'"));
}

TEST(ServiceConfig, SpeculativeTableAndFlags) {
  const auto c = parse_toml(R"(
model = "/m"
device = "cuda"
[speculative]
method = "ngram"
num_speculative_tokens = 3
ngram_min = 2
ngram_max = 4
adaptive = true
)", "spec.toml");
  EXPECT_EQ(c.device, "cuda");
  EXPECT_EQ(c.speculative.method, "ngram");
  EXPECT_EQ(c.speculative.num_speculative_tokens, 3);
  EXPECT_EQ(c.speculative.ngram_min, 2);
  EXPECT_EQ(c.speculative.ngram_max, 4);
  EXPECT_TRUE(c.speculative.adaptive);
  EXPECT_EQ(c.speculative.draft_placement, "rank_zero");  // default
  EXPECT_THAT(error_of([] { parse_toml("[speculative]\nk = 3\n", "s.toml"); }),
              HasSubstr("s.toml:2: speculative.k: unknown setting"));

  CLI::App app;
  CommandLine cli(app);
  std::vector<std::string> args = {"--speculative-method", "draft", "--speculative-draft-model",
                                   "/d", "--num-speculative-tokens", "5", "--draft-placement",
                                   "every_rank", "--device", "cuda"};
  std::reverse(args.begin(), args.end());
  app.parse(args);
  const auto f = cli.resolve();
  EXPECT_EQ(f.speculative.method, "draft");
  EXPECT_EQ(f.speculative.draft_model, "/d");
  EXPECT_EQ(f.speculative.num_speculative_tokens, 5);
  EXPECT_EQ(f.speculative.draft_placement, "every_rank");
  EXPECT_EQ(f.device, "cuda");
}

fs::path demo_model(const char* name) { return fs::path(SHARDSERVE_SOURCE_DIR) / "models" / name; }

TEST(ServiceConfig, ValidateNamesTheSpeculativeSetting) {
  ServiceConfig good;
  good.model = model_dir().string();
  auto with = [&](auto edit) {
    ServiceConfig c = good;
    edit(c);
    return error_of([&] { validate(c); });
  };
  EXPECT_THAT(with([](auto& c) { c.device = "tpu"; }), HasSubstr("device = 'tpu' is not one of cpu, cuda"));
  EXPECT_THAT(with([](auto& c) { c.weights = "random"; }),
              HasSubstr("weights = 'random' is not one of checkpoint, random-w4g128, random-bf16"));
  EXPECT_THAT(with([](auto& c) { c.weights = "random-w4g128"; }),
              HasSubstr("weights = 'random-w4g128' needs device = \"cuda\""));
  EXPECT_THAT(with([](auto& c) {
                c.device = "cuda";
                c.weights = "random-bf16";
                c.speculative.method = "draft";
                c.speculative.draft_model = demo_model("kjv-llama-draft").string();
              }),
              HasSubstr("weights = 'random-bf16' with speculative.method = \"draft\""));
  EXPECT_EQ(with([](auto& c) {
              c.device = "cuda";
              c.weights = "random-w4g128";
            }),
            "no error");
  EXPECT_THAT(with([](auto& c) { c.speculative.method = "eagle"; }),
              HasSubstr("speculative.method = 'eagle' is not one of none, draft, ngram"));
  EXPECT_THAT(with([](auto& c) { c.speculative.method = "draft"; }),
              HasSubstr("speculative.method = 'draft' needs speculative.draft_model"));
  EXPECT_THAT(with([](auto& c) {
                c.speculative.method = "draft";
                c.speculative.draft_model = "/no/such";
              }),
              HasSubstr("speculative.draft_model = '/no/such' has no config.json"));
  EXPECT_THAT(with([](auto& c) { c.speculative.draft_model = demo_model("kjv-llama-draft").string(); }),
              HasSubstr("is set but speculative.method = 'none'"));
  EXPECT_THAT(with([](auto& c) { c.speculative.num_speculative_tokens = 0; }),
              HasSubstr("speculative.num_speculative_tokens = 0 must be in [1, 32]"));
  EXPECT_THAT(with([](auto& c) { c.speculative.num_speculative_tokens = 33; }),
              HasSubstr("speculative.num_speculative_tokens = 33 must be in [1, 32]"));
  EXPECT_THAT(with([](auto& c) { c.speculative.ngram_min = 3, c.speculative.ngram_max = 2; }),
              HasSubstr("speculative.ngram_max = 2 must be at least speculative.ngram_min = 3"));
  EXPECT_THAT(with([](auto& c) { c.speculative.ngram_max = 65; }),
              HasSubstr("speculative.ngram_max = 65 must be at most 64"));
  EXPECT_THAT(with([](auto& c) { c.speculative.draft_cost = -1; }),
              HasSubstr("speculative.draft_cost = -1 must be at least 0"));
  EXPECT_THAT(with([](auto& c) { c.speculative.draft_placement = "rank_one"; }),
              HasSubstr("speculative.draft_placement = 'rank_one' is not one of every_rank, rank_zero"));
}

TEST(ServiceConfig, DraftModelIsCheckedAgainstTheTarget) {
  ServiceConfig c;
  c.model = demo_model("kjv-llama").string();
  c.speculative.method = "draft";
  c.speculative.draft_model = demo_model("kjv-llama-draft").string();
  validate(c);
  const auto target = model::load_model_config(c.model);
  EXPECT_NO_THROW(validate_for_model(c, target));
  c.tp = 2;  // the draft's 2 heads, 1 KV head (replicated) and 384 FFN columns split over 2
  c.speculative.draft_placement = "every_rank";
  EXPECT_NO_THROW(validate_for_model(c, target));
  auto draft = model::load_model_config(c.speculative.draft_model);
  {
    auto d = draft;
    d.vocab_size = 8000;
    EXPECT_THAT(error_of([&] { check_draft_model(c, target, d); }),
                HasSubstr("has vocab_size = 8000, the target's is 8192: the draft must share the "
                          "target's tokenizer"));
  }
  {
    auto d = draft;
    d.eos_token_ids = {8177};
    EXPECT_THAT(error_of([&] { check_draft_model(c, target, d); }),
                HasSubstr("has BOS 8176 / EOS [8177], the target's are 8176 / [8177, 8185]"));
  }
  {
    auto d = draft;
    d.max_position_embeddings = 1024;
    EXPECT_THAT(error_of([&] { check_draft_model(c, target, d); }),
                HasSubstr("has max_position_embeddings = 1024, below max_model_len = 2048"));
    c.scheduler.max_model_len = 1024;
    EXPECT_NO_THROW(check_draft_model(c, target, d));
    c.scheduler.max_model_len = 0;
  }
  {
    auto d = draft;
    d.num_attention_heads = 3;
    EXPECT_THAT(error_of([&] { check_draft_model(c, target, d); }),
                HasSubstr("tp = 2 does not divide the draft's (speculative.draft_placement = "
                          "every_rank) num_attention_heads = 3"));
    c.speculative.draft_placement = "rank_zero";  // whole on one rank: no split to check
    EXPECT_NO_THROW(check_draft_model(c, target, d));
    c.speculative.draft_placement = "every_rank";
  }
  // The draft's config.json with another tokenizer.json, then with none.
  const auto dir = fs::path(testing::TempDir()) / "draft_other_tokenizer";
  fs::create_directories(dir);
  fs::copy_file(fs::path(c.speculative.draft_model) / "config.json", dir / "config.json",
                fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer.json") << "{}";
  c.speculative.draft_model = dir.string();
  EXPECT_THAT(error_of([&] { validate_for_model(c, target); }),
              HasSubstr("its tokenizer.json differs from the target's"));
  fs::remove(dir / "tokenizer.json");
  EXPECT_THAT(error_of([&] { validate_for_model(c, target); }),
              HasSubstr("has no tokenizer.json (the target has one)"));
}

TEST(ServiceConfig, FlagsOverrideTheFile) {
  const auto file = fs::path(testing::TempDir()) / "service_flags.toml";
  std::ofstream(file) << "model = \"/from/file\"\ntp = 2\n[kv]\nnum_blocks = 100\n";
  CLI::App app;
  CommandLine cli(app);
  std::vector<std::string> args = {"--kv-num-blocks", "7",  "--config",       file.string(),
                                   "--tp",            "4",  "--enable-prefix-caching", "false",
                                   "--kv-memory-bytes", "2GiB"};
  std::reverse(args.begin(), args.end());  // CLI11 takes argv in reverse in this overload
  app.parse(args);
  const auto c = cli.resolve();
  EXPECT_EQ(c.model, "/from/file");  // from the file
  EXPECT_EQ(c.tp, 4);                // flag over file
  EXPECT_EQ(c.kv.num_blocks, 7);     // flag over file
  EXPECT_EQ(c.kv.memory_bytes, int64_t{2} << 30);
  EXPECT_FALSE(c.scheduler.enable_prefix_caching);
  EXPECT_EQ(c.kv.block_size, 16);    // default
}

TEST(ServiceConfig, FlagErrorsNameTheFlagAndTheSetting) {
  CLI::App app;
  CommandLine cli(app);
  std::vector<std::string> args = {"--max-num-seqs", "many"};
  std::reverse(args.begin(), args.end());
  app.parse(args);
  EXPECT_THAT(error_of([&] { cli.resolve(); }),
              HasSubstr("--max-num-seqs (setting scheduler.max_num_seqs) = 'many': expected an integer"));
}

TEST(ServiceConfig, ValidateNamesTheSetting) {
  ServiceConfig good;
  good.model = model_dir().string();
  EXPECT_NO_THROW(validate(good));
  auto with = [&](auto edit) {
    ServiceConfig c = good;
    edit(c);
    return error_of([&] { validate(c); });
  };
  EXPECT_THAT(with([](auto& c) { c.model = ""; }), HasSubstr("model is not set"));
  EXPECT_THAT(with([](auto& c) { c.model = "/no/such/dir"; }),
              HasSubstr("model = '/no/such/dir' is not a directory"));
  EXPECT_THAT(with([](auto& c) { c.tp = 0; }), HasSubstr("tp = 0 must be at least 1"));
  EXPECT_THAT(with([](auto& c) { c.kv.memory_fraction = 1.5; }),
              HasSubstr("kv.memory_fraction = 1.5 must be in (0, 1]"));
  EXPECT_THAT(with([](auto& c) { c.kv.block_size = 0; }), HasSubstr("kv.block_size = 0"));
  EXPECT_THAT(with([](auto& c) { c.scheduler.max_num_batched_tokens = 8; }),
              HasSubstr("scheduler.max_num_batched_tokens = 8 must be at least "
                        "scheduler.max_num_seqs = 256"));
  EXPECT_THAT(with([](auto& c) { c.ports.metrics = 8000; }),
              HasSubstr("ports.metrics = 8000 equals ports.http = 8000"));
  EXPECT_THAT(with([](auto& c) { c.ports.zmq = 70000; }), HasSubstr("ports.zmq = 70000 must be in"));
  EXPECT_THAT(with([](auto& c) { c.log_level = "loud"; }), HasSubstr("log_level = 'loud'"));
  EXPECT_THAT(with([](auto& c) { c.runtime.step_timeout_s = 0; }),
              HasSubstr("runtime.step_timeout_s = 0 must be a positive"));
  EXPECT_THAT(with([](auto& c) { c.runtime.on_replica_failure = "requeue"; }),
              HasSubstr("runtime.on_replica_failure = \"requeue\" must be \"failover\" or \"abort\""));
  EXPECT_THAT(with([](auto& c) { c.runtime.heartbeat_interval_s = -1; }),
              HasSubstr("runtime.heartbeat_interval_s = -1 must be a positive"));
  EXPECT_THAT(with([](auto& c) { c.runtime.coordinator_timeout_s = 2; }),
              HasSubstr("runtime.coordinator_timeout_s = 2 must be at least 3 x "
                        "runtime.heartbeat_interval_s = 3"));
}

TEST(ServiceConfig, ValidateAgainstTheModel) {
  ServiceConfig c;
  c.tp = 3;
  EXPECT_THAT(error_of([&] { validate_for_model(c, model_with(4, 2)); }),
              HasSubstr("tp = 3 does not divide num_attention_heads = 4"));
  c.tp = 4;
  EXPECT_NO_THROW(validate_for_model(c, model_with(4, 2)));  // KV heads replicated
  c.tp = 2;
  EXPECT_THAT(error_of([&] { validate_for_model(c, model_with(6, 3, 128)); }),
              HasSubstr("tp = 2 does not divide num_key_value_heads = 3"));
  EXPECT_THAT(error_of([&] { validate_for_model(c, model_with(4, 2, 129)); }),
              HasSubstr("tp = 2 does not divide intermediate_size = 129"));
  c.tp = 1;
  c.scheduler.max_model_len = 8192;
  EXPECT_THAT(error_of([&] { validate_for_model(c, model_with(4, 2)); }),
              HasSubstr("scheduler.max_model_len = 8192 exceeds the model's max_position_embeddings = 4096"));
  c.scheduler.max_model_len = 0;
  EXPECT_EQ(effective_max_model_len(c, model_with(4, 2)), 4096);
}

TEST(ServiceConfig, WorldSizeGivesTheReplicas) {
  ServiceConfig c;
  c.tp = 2;
  EXPECT_EQ(resolve_for_world(c, 5).replicas, 2);
  EXPECT_THAT(error_of([&] { resolve_for_world(c, 4); }),
              HasSubstr("tp = 2 does not divide the 3 worker ranks"));
  c.replicas = 3;
  EXPECT_THAT(error_of([&] { resolve_for_world(c, 5); }),
              HasSubstr("replicas = 3 x tp = 2 needs 6 worker ranks, but the job has 4"));
  EXPECT_THAT(error_of([&] { resolve_for_world(c, 1); }), HasSubstr("needs the coordinator and at least one worker"));
}

TEST(ServiceConfig, ModelName) {
  ServiceConfig c;
  c.model = "/models/llama-3-8b/";
  EXPECT_EQ(effective_model_name(c), "llama-3-8b");
  c.served_model_name = "prod";
  EXPECT_EQ(effective_model_name(c), "prod");
}

TEST(ServiceConfig, ParseBytes) {
  EXPECT_EQ(parse_bytes("4GiB", "x"), int64_t{4} << 30);
  EXPECT_EQ(parse_bytes("512 MiB", "x"), int64_t{512} << 20);
  EXPECT_EQ(parse_bytes("1.5GB", "x"), 1500000000);
  EXPECT_EQ(parse_bytes("123", "x"), 123);
  EXPECT_THAT(error_of([] { parse_bytes("lots", "kv.memory_bytes"); }),
              HasSubstr("kv.memory_bytes = 'lots'"));
}

}  // namespace
}  // namespace shardserve::config
