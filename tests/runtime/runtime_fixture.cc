// Helper for the multi-process tests (run by run_service_test.py, not a test itself):
//   runtime_fixture make-model DIR [SEED]           writes the tiny random LLaMA of
//                                                   tests/worker/tiny_llama.h to DIR
//   runtime_fixture make-requests OUT N MAX_TOKENS VOCAB [SEED]
//                                                   N greedy requests with random prompt ids
//   runtime_fixture reference DIR REQUESTS OUT      single-process reference: each request alone,
//                                                   TP = 1, sampled as the worker samples with the
//                                                   request's own parameters (greedy, or seeded
//                                                   sampling: the stream is keyed by seed and
//                                                   position, so a served request must match it)
//   runtime_fixture decode DIR IDS                  the model's tokenizer's decode of comma-separated
//                                                   ids (special tokens skipped), as a JSON string
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "comm/collective.h"
#include "common/error.h"
#include "coordinator/runtime/request_io.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/worker/plan_builder.h"
#include "tests/worker/tiny_llama.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace {

using namespace shardserve;

int make_model(const std::string& dir, uint32_t seed) {
  testing_support::TinyLlama model;
  model.make(seed);
  model.write(dir);
  return 0;
}

int make_requests(const std::string& out, int n, int max_tokens, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::ofstream f(out);
  for (int i = 0; i < n; ++i) {
    const int len = 3 + static_cast<int>(rng() % 20);
    std::vector<int32_t> ids(len);
    for (auto& t : ids) t = static_cast<int32_t>(rng() % vocab);
    nlohmann::json j = {{"id", "req-" + std::to_string(i)}, {"prompt_ids", ids},
                        {"max_tokens", max_tokens},         {"temperature", 0.0},
                        {"ignore_eos", true}};
    f << j.dump() << "\n";
  }
  return 0;
}

int reference(const std::string& dir, const std::string& requests, const std::string& out) {
  const auto config = model::load_model_config(dir);
  const auto ckpt = model::Checkpoint::open(dir);
  const auto shard = worker::make_shard(config, 0, 1);
  comm::SingleRankCollective group;
  constexpr int64_t kBlockSize = 16;
  const int64_t blocks = (config.max_position_embeddings + kBlockSize - 1) / kBlockSize;
  std::ifstream in(requests);
  std::ofstream o(out);
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty()) continue;
    // The batch front end's own parser: the same fields, defaults and checks as the service.
    const auto spec = runtime::parse_request(nlohmann::json::parse(line),
                                             requests + ":" + std::to_string(line_no));
    const std::vector<int32_t>& tokens = spec.prompt_token_ids;
    require(spec.max_tokens.has_value(), "{}:{}: the reference needs max_tokens", requests, line_no);
    const int max_tokens = *spec.max_tokens;
    const bool ignore_eos = spec.ignore_eos;
    // A fresh runner per request: nothing is shared between requests.
    worker::ModelRunner runner(config, shard, worker::load_llama_weights(ckpt, config, shard),
                               blocks, kBlockSize, group);
    worker::Sampler sampler;
    std::vector<int32_t> table(blocks);
    for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(b);
    const int32_t prompt_len = static_cast<int32_t>(tokens.size());
    std::vector<int32_t> output;
    std::string finish = "length";
    int32_t pos = 0;
    std::vector<int32_t> feed = tokens;
    while (static_cast<int>(output.size()) < max_tokens) {
      const int32_t end = pos + static_cast<int32_t>(feed.size());
      const int32_t nblocks = (end + kBlockSize - 1) / kBlockSize;
      const auto plan = testing_support::make_plan(
          {{.id = 1, .tokens = feed, .start_pos = pos, .num_logits = 1,
            .blocks = {table.begin(), table.begin() + nblocks}, .prompt_len = prompt_len,
            .sampling = spec.sampling}});
      sampler.observe(plan);
      const auto result = sampler.sample(plan, runner.forward(plan));
      const int32_t t = result.tokens.at(0).token_id;
      output.push_back(t);
      pos = end;
      feed = {t};
      const bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), t) !=
                       config.eos_token_ids.end();
      if (eos && !ignore_eos) {
        finish = "stop";
        break;
      }
      if (pos + 1 >= config.max_position_embeddings) break;
    }
    o << nlohmann::json({{"id", spec.request_id}, {"output_ids", output}, {"finish_reason", finish}})
             .dump()
      << "\n";
  }
  return 0;
}

int decode(const std::string& dir, const std::string& csv) {
  const auto tokenizer = model::load_tokenizer(dir);
  std::vector<int32_t> ids;
  std::stringstream in(csv);
  for (std::string item; std::getline(in, item, ',');) ids.push_back(std::stoi(item));
  std::cout << nlohmann::json(tokenizer->decode(ids, true)).dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "make-model" && argc >= 3) return make_model(argv[2], argc > 3 ? std::stoul(argv[3]) : 7);
    if (cmd == "make-requests" && argc >= 6)
      return make_requests(argv[2], std::stoi(argv[3]), std::stoi(argv[4]), std::stoi(argv[5]),
                           argc > 6 ? std::stoul(argv[6]) : 1);
    if (cmd == "reference" && argc == 5) return reference(argv[2], argv[3], argv[4]);
    if (cmd == "decode" && argc == 4) return decode(argv[2], argv[3]);
    std::cerr << "usage: runtime_fixture make-model DIR [SEED] | make-requests OUT N MAX_TOKENS "
                 "VOCAB [SEED] | reference DIR REQUESTS OUT | decode DIR IDS\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "runtime_fixture: " << e.what() << "\n";
    return 1;
  }
}
