// Writes one encoded message of every kind into the folder named on the command line: the seed
// corpus of codec_fuzz (corpus/codec/), which libFuzzer could not easily reach from nothing
// (magic, version and exact array lengths). Rerun when kCodecVersion changes.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "messages/codec.h"

int main(int argc, char** argv) {
  using namespace shardserve::messages;
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_codec_seeds <folder>\n");
    return 2;
  }
  const std::filesystem::path dir(argv[1]);
  std::filesystem::create_directories(dir);
  auto put = [&](const char* name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
  };
  put("configure", encode(Configure{"[model]\npath = \"m\"\n", 2, 1}));
  WorkerHello hello;
  hello.world_rank = 1;
  hello.host = "localhost";
  hello.model_name = "m";
  hello.model_type = "llama";
  hello.num_layers = 2;
  hello.kv_source = "fraction";
  put("hello", encode(hello));
  put("init_cache", encode(InitCache{64}));
  put("ready", encode(WorkerReady{1, 4096}));
  put("shutdown", encode(Shutdown{"drain"}));
  put("abort", encode(Abort{"rank 2 died"}));
  put("heartbeat", encode(Heartbeat{true}));
  put("error", encode(WorkerError{2, "CUDA error: out of memory"}));
  StepPlan plan;
  plan.step_id = 7;
  plan.token_ids = {1, 2, 3, 4};
  plan.block_ids = {0, 1};
  SequenceWork a;
  a.seq_id = 11;
  a.num_tokens = 3;
  a.num_logits = 1;
  a.prompt_len = 3;
  a.num_blocks = 1;
  a.sampling_index = 0;
  SequenceWork b = a;
  b.seq_id = 12;
  b.start_pos = 5;
  b.num_tokens = 1;
  b.token_offset = 3;
  b.block_offset = 1;
  b.sampling_index = 1;
  b.num_draft = 0;
  plan.seqs = {a, b};
  plan.sampling = {SamplingParams{}, SamplingParams{0.7f, 0.9f, 40, 0.0f, 1.1f, 0.0f, 0.0f, 5, 2}};
  plan.released = {9};
  put("step_plan", encode(plan));
  StepResult result;
  result.step_id = 7;
  result.seq_ids = {11, 12};
  result.sample_offsets = {0, 1, 2};
  result.tokens = {SampledToken{5, -0.5f, {}, {}}, SampledToken{6, -1.0f, {6, 7}, {-1.0f, -2.0f}}};
  put("step_result", encode(result));
  return 0;
}
