// generate: load a model directory and complete a prompt on the CPU, streaming the text.
// The whole engine runs in this one process: the real scheduler (continuous batching, paged KV
// blocks, prefix cache, stop conditions), the reference forward pass and the sampler. The
// service splits the same pieces across the coordinator and the worker ranks.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "comm/collective.h"
#include "coordinator/scheduler.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/tokenizer/incremental_detokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/sampler.h"

namespace shardserve {
namespace {

// The scheduler's view of a detokenizer, over the tokenizer library's.
class DetokenizerStream final : public coordinator::TextStream {
 public:
  explicit DetokenizerStream(const model::Tokenizer& t) : detok_(t, /*skip_special_tokens=*/true) {}
  std::string push(int32_t token) override { return detok_.push(token); }
  std::string flush() override { return detok_.flush(); }

 private:
  model::IncrementalDetokenizer detok_;
};

std::vector<int32_t> parse_ids(const std::string& csv) {
  std::vector<int32_t> ids;
  std::stringstream in(csv);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      std::size_t used = 0;
      const long v = std::stol(item, &used);
      require(used == item.size() && v >= 0, "bad token id '{}' in --prompt-ids", item);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::logic_error&) {
      fail("bad token id '{}' in --prompt-ids", item);
    }
  }
  return ids;
}

int run(int argc, char** argv) {
  CLI::App app{"Complete a prompt with a LLaMA model on the CPU"};
  std::string model_dir, prompt, prompt_ids;
  int max_tokens = 64, kv_blocks = 0, block_size = 16, top_k = 0, logprobs = 0;
  float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f, repetition = 1.0f, frequency = 0.0f,
        presence = 0.0f;
  uint64_t seed = 0;
  bool ignore_eos = false, stats = false;
  std::vector<std::string> stops;
  app.add_option("--model", model_dir, "HuggingFace model directory")->required();
  auto* text_opt = app.add_option("--prompt", prompt, "prompt text (BOS added as the tokenizer does)");
  app.add_option("--prompt-ids", prompt_ids, "prompt as comma-separated token ids")
      ->excludes(text_opt);
  app.add_option("--max-tokens", max_tokens, "tokens to generate at most")
      ->check(CLI::PositiveNumber);
  app.add_option("--temperature", temperature, "0 = greedy")->check(CLI::Range(0.0f, 100.0f));
  app.add_option("--top-p", top_p)->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--top-k", top_k, "0 = off")->check(CLI::NonNegativeNumber);
  app.add_option("--min-p", min_p)->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--repetition-penalty", repetition)->check(CLI::PositiveNumber);
  app.add_option("--frequency-penalty", frequency)->check(CLI::Range(-2.0f, 2.0f));
  app.add_option("--presence-penalty", presence)->check(CLI::Range(-2.0f, 2.0f));
  app.add_option("--seed", seed, "sampling seed");
  app.add_option("--stop", stops, "stop string (repeatable)");
  app.add_flag("--ignore-eos", ignore_eos, "keep generating past EOS");
  app.add_option("--logprobs", logprobs, "print the top-N alternatives of each token")
      ->check(CLI::Range(0, 20));
  app.add_option("--kv-blocks", kv_blocks, "KV pool size in blocks (default: one full context)");
  app.add_option("--block-size", block_size, "tokens per KV block")->check(CLI::PositiveNumber);
  app.add_flag("--stats", stats, "print timing and token counts to stderr");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  require(top_p > 0.0f, "--top-p must be in (0, 1], got {}", top_p);

  const auto t_load = std::chrono::steady_clock::now();
  const model::ModelConfig config = model::load_model_config(model_dir);
  const auto tokenizer = model::load_tokenizer(model_dir);
  std::vector<int32_t> ids = prompt_ids.empty() ? tokenizer->encode(prompt, true) : parse_ids(prompt_ids);
  require(!ids.empty(), "the prompt is empty");
  const int64_t context = std::min<int64_t>(config.max_position_embeddings,
                                            static_cast<int64_t>(ids.size()) + max_tokens);
  if (kv_blocks == 0) kv_blocks = static_cast<int>((context + block_size - 1) / block_size) + 1;

  comm::SingleRankCollective group;
  const auto shard = worker::make_shard(config, 0, 1);
  const auto checkpoint = model::Checkpoint::open(model_dir);
  worker::ModelRunner runner(config, shard, worker::load_llama_weights(checkpoint, config, shard),
                             kv_blocks, block_size, group);
  worker::Sampler sampler;

  coordinator::SchedulerConfig sc;
  sc.block_size = block_size;
  sc.num_blocks = kv_blocks;
  sc.max_model_len = static_cast<int32_t>(context);
  sc.max_num_batched_tokens = std::max<int32_t>(512, block_size);
  sc.eos_token_ids = config.eos_token_ids;
  coordinator::Scheduler scheduler(sc);

  coordinator::RequestSpec spec;
  spec.request_id = "generate";
  spec.prompt_token_ids = ids;
  spec.sampling.temperature = temperature;
  spec.sampling.top_p = top_p;
  spec.sampling.top_k = top_k;
  spec.sampling.min_p = min_p;
  spec.sampling.repetition_penalty = repetition;
  spec.sampling.frequency_penalty = frequency;
  spec.sampling.presence_penalty = presence;
  spec.sampling.seed = seed;
  spec.sampling.logprobs = logprobs;
  spec.max_tokens = max_tokens;
  spec.stop_strings = stops;
  spec.ignore_eos = ignore_eos;
  spec.text_stream = std::make_unique<DetokenizerStream>(*tokenizer);
  auto added = scheduler.add_request(std::move(spec));
  if (added.rejection) fail("request rejected: {}", added.rejection->finish_detail);

  if (!prompt.empty()) std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  const auto t_start = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> t_first;
  coordinator::RequestOutput last;
  while (scheduler.has_unfinished_requests()) {
    const messages::StepPlan plan = scheduler.schedule();
    sampler.observe(plan);
    if (plan.seqs.empty()) continue;
    const auto result = sampler.sample(plan, runner.forward(plan));
    for (auto& out : scheduler.on_step_result(result)) {
      if (!t_first && !out.new_tokens.empty()) t_first = std::chrono::steady_clock::now();
      std::fputs(out.new_text.c_str(), stdout);
      std::fflush(stdout);
      if (logprobs > 0) {
        for (const auto& t : out.new_tokens) {
          std::fprintf(stderr, "\n  [%d %.3f]", t.token_id, t.logprob);
          for (std::size_t i = 0; i < t.top_ids.size(); ++i)
            std::fprintf(stderr, " %d:%.3f", t.top_ids[i], t.top_logprobs[i]);
        }
      }
      last = std::move(out);
    }
  }
  std::fputs("\n", stdout);
  const auto t_end = std::chrono::steady_clock::now();
  if (stats) {
    using secs = std::chrono::duration<double>;
    const double total = secs(t_end - t_start).count();
    std::fprintf(stderr,
                 "prompt %d tokens, generated %d, finish %s; load %.2f s, first token %.3f s, "
                 "%.1f tokens/s\n",
                 last.num_prompt_tokens, last.num_output_tokens, last.finish_reason_string().c_str(),
                 secs(t_start - t_load).count(),
                 t_first ? secs(*t_first - t_start).count() : 0.0,
                 last.num_output_tokens / std::max(total, 1e-9));
  }
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  try {
    return shardserve::run(argc, argv);
  } catch (const shardserve::Error& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
}
