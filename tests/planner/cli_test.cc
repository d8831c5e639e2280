// The `plan` command line end to end: flags in, report out, errors as messages and exit 1.
#include "tools/plan/cli.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace shardserve::planner {
namespace {

struct CliResult {
  int rc;
  std::string out, err;
};

CliResult run(std::vector<std::string> args) {
  args.insert(args.begin(), "plan");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int rc = run_plan_cli(static_cast<int>(argv.size()), argv.data(), out, err);
  return {rc, out.str(), err.str()};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const std::string kExample = std::string(SHARDSERVE_SOURCE_DIR) +
                             "/tests/planner/data/llama70b-h200-tp1-example.json";

TEST(Cli, MarkdownReport) {
  const CliResult r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--weights", "int4"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "0.3125 MiB (327680 B)")) << r.out;
  EXPECT_TRUE(contains(r.out, "| 18978 |")) << r.out;
  EXPECT_TRUE(contains(r.out, "GPU ceilings (datasheet)")) << r.out;
  EXPECT_TRUE(contains(r.out, "## Speculative decoding")) << r.out;
}

TEST(Cli, JsonToStdout) {
  const CliResult r =
      run({"--model", "llama-3.1-70b", "--gpu", "h200", "--tp", "1,8", "--json", "-"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["plans"].size(), 2u);
  EXPECT_EQ(j["plans"][0]["kv_bytes_per_token_per_gpu"], 327680);
  EXPECT_EQ(j["plans"][1]["kv_bytes_per_token_per_gpu"], 40960);
  EXPECT_EQ(j["gpu"]["source"], "datasheet");
  EXPECT_TRUE(j["plot"].contains("kv_vs_context"));
}

TEST(Cli, CustomGpuAndMeasuredCeilings) {
  CliResult r = run({"--model", "llama-3.1-8b", "--memory-gib", "24", "--bandwidth-tbps", "1",
               "--tflops", "165", "--json", "-"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["gpu"]["memory_bytes"], int64_t{24} << 30);
  r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--ceilings", "measured", "--json", "-"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(r.out)["gpu"]["bandwidth_bytes_per_s"].get<double>(),
                   4.24e12);
  r = run({"--model", "llama-3.1-70b", "--gpu", "h100", "--tflops", "700", "--json", "-"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(contains(nlohmann::json::parse(r.out)["gpu"]["source"], "FLOP rate"));
}

TEST(Cli, MeasuredFile) {
  const CliResult r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--weights", "int4",
                     "--measured", kExample});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "## Measured vs predicted")) << r.out;
  EXPECT_TRUE(contains(r.out, "| decode ms/token, batch 1 | context 8192 | 8.406 | 10.500 |"))
      << r.out;
}

TEST(Cli, ErrorsNameTheProblem) {
  CliResult r = run({"--model", "nope", "--gpu", "h200"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "unknown model 'nope'")) << r.err;
  r = run({"--model", "llama-3.1-70b", "--gpu", "h999"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "unknown GPU preset 'h999'")) << r.err;
  r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--tp", "3"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "tensor-parallel size 3 does not divide num_attention_heads 64"))
      << r.err;
  r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--reserve-gib", "-1"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "-1")) << r.err;
  r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--context", "-5"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "context length must be positive, got -5")) << r.err;
  r = run({"--model", "llama-3.1-70b"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "--gpu")) << r.err;
  r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--weights", "int5"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "unknown weight format 'int5'")) << r.err;
  r = run({"--model", "llama-3.1-70b", "--gpu", "a100", "--ceilings", "measured"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(contains(r.err, "H200")) << r.err;
  r = run({"--bogus-flag"});
  EXPECT_NE(r.rc, 0);
}

TEST(Cli, WeightsDefaultToTheCheckpointsQuantization) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "planner_gptq_model";
  std::filesystem::create_directories(dir);
  const nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
      {"vocab_size", 1000},                    {"hidden_size", 256},
      {"intermediate_size", 512},              {"num_hidden_layers", 2},
      {"num_attention_heads", 4},              {"num_key_value_heads", 2},
      {"quantization_config", {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 64}}}};
  std::ofstream(dir / "config.json") << config.dump();
  CliResult r = run({"--model", dir.string(), "--gpu", "l40s", "--json", "-"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["settings"]["weights"], "int4-g64");
  r = run({"--model", dir.string(), "--gpu", "l40s", "--weights", "bf16", "--json", "-"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["settings"]["weights"], "bf16");
}

TEST(Cli, ListPresets) {
  const CliResult r = run({"--list-presets"});
  ASSERT_EQ(r.rc, 0);
  EXPECT_TRUE(contains(r.out, "llama-3.1-405b")) << r.out;
  EXPECT_TRUE(contains(r.out, "l40s")) << r.out;
}

TEST(Cli, Plots) {
  // Debian's python3-matplotlib serves /usr/bin/python3; a python3 earlier in PATH may lack it.
  std::string python;
  for (const char* candidate : {"python3", "/usr/bin/python3"}) {
    const std::string probe = std::string(candidate) + " -c 'import matplotlib' >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) {
      python = candidate;
      break;
    }
  }
  if (python.empty()) GTEST_SKIP() << "no python3 with matplotlib (python3-matplotlib)";
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "planner_plots";
  std::filesystem::remove_all(dir);
  const CliResult r = run({"--model", "llama-3.1-70b", "--gpu", "h200", "--tp", "1,2", "--weights",
                           "int4", "--plots", dir.string(), "--plot-format", "svg", "--python",
                           python});
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* name : {"plan.json", "kv_vs_context.svg", "kv_vs_batch.svg",
                           "speculative_speedup.svg", "memory_by_precision.svg"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / name)) << name;
  }
}

}  // namespace
}  // namespace shardserve::planner
