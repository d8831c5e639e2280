// Validation of SchedulerConfig: each bad setting is refused with a message naming it.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "common/error.h"
#include "coordinator/scheduler_config.h"

namespace shardserve::coordinator {
namespace {

SchedulerConfig good() {
  SchedulerConfig c;
  c.num_blocks = 64;
  c.max_model_len = 1024;
  return c;
}

std::string error_of(const SchedulerConfig& c) {
  try {
    validate_scheduler_config(c);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(SchedulerConfig, DefaultsWithAPoolAreValid) { EXPECT_EQ(error_of(good()), ""); }

TEST(SchedulerConfig, EachBadSettingIsNamed) {
  struct Case {
    const char* setting;
    std::function<void(SchedulerConfig&)> spoil;
  };
  const Case cases[] = {
      {"block_size", [](SchedulerConfig& c) { c.block_size = 0; }},
      {"num_blocks", [](SchedulerConfig& c) { c.num_blocks = 0; }},
      {"max_model_len", [](SchedulerConfig& c) { c.max_model_len = 1; }},
      {"max_model_len", [](SchedulerConfig& c) { c.max_model_len = 64 * 16 + 1; }},
      {"max_num_seqs", [](SchedulerConfig& c) { c.max_num_seqs = 0; }},
      {"max_num_batched_tokens", [](SchedulerConfig& c) { c.max_num_batched_tokens = 100; }},
      {"enable_chunked_prefill",
       [](SchedulerConfig& c) {
         c.enable_chunked_prefill = false;
         c.max_num_batched_tokens = 512;
       }},
      {"watermark", [](SchedulerConfig& c) { c.watermark = 1.0; }},
      {"watermark", [](SchedulerConfig& c) { c.watermark = -0.1; }},
      {"preemption_mode=swap",
       [](SchedulerConfig& c) { c.preemption_mode = PreemptionMode::kSwap; }},
  };
  for (const auto& k : cases) {
    SchedulerConfig c = good();
    k.spoil(c);
    const std::string e = error_of(c);
    EXPECT_NE(e.find(k.setting), std::string::npos) << "'" << e << "' does not name " << k.setting;
  }
}

TEST(SchedulerConfig, ParsesPreemptionMode) {
  EXPECT_EQ(parse_preemption_mode("recompute"), PreemptionMode::kRecompute);
  EXPECT_EQ(parse_preemption_mode("swap"), PreemptionMode::kSwap);
  EXPECT_THROW(parse_preemption_mode("drop"), Error);
  EXPECT_EQ(to_string(PreemptionMode::kRecompute), "recompute");
}

TEST(SchedulerConfig, WatermarkBlocksRoundDown) {
  SchedulerConfig c = good();
  c.watermark = 0.05;
  EXPECT_EQ(watermark_blocks(c), 3);
  c.watermark = 0.0;
  EXPECT_EQ(watermark_blocks(c), 0);
}

}  // namespace
}  // namespace shardserve::coordinator
