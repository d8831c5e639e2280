// generate: load a model directory and complete a prompt on the CPU, streaming the text.
// The whole engine runs in this one process: the real scheduler (continuous batching, paged KV
// blocks, prefix cache, stop conditions), the reference forward pass and the worker's
// StepExecutor (sampler, and for speculative decoding the draft model and the verification).
// The service splits the same pieces across the coordinator and the worker ranks.
//
// Speculative decoding (docs/speculative.md): --speculative-model DIR (a draft model sharing the
// tokenizer) or --ngram N (prompt lookup, suffixes of up to N tokens), --num-speculative K draft
// tokens per step, --adaptive-k to let K follow the measured acceptance. The output
// distribution is the target's either way; greedy output is token for token the same.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "comm/collective.h"
#include "coordinator/detokenizer_stream.h"
#include "coordinator/scheduler.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/llama_weights.h"
#include "worker/cuda/step_runner.h"
#include "worker/model_runner.h"
#include "worker/speculative_executor.h"

namespace shardserve {
namespace {

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
  bool ignore_eos = false, stats = false, adaptive_k = false;
  std::vector<std::string> stops;
  std::string draft_dir;
  int ngram = 0, num_speculative = 4;
  double draft_cost = 0.05;
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
  auto* draft_opt = app.add_option("--speculative-model", draft_dir,
                                   "draft model directory (same tokenizer) for speculative decoding");
  app.add_option("--ngram", ngram, "prompt-lookup speculation: match suffixes of up to N tokens")
      ->check(CLI::Range(1, 64))
      ->excludes(draft_opt);
  app.add_option("--num-speculative", num_speculative, "draft tokens per step (K)")
      ->check(CLI::Range(1, 32));
  app.add_flag("--adaptive-k", adaptive_k, "choose K per request from the measured acceptance");
  app.add_option("--draft-cost", draft_cost,
                 "for --adaptive-k: cost of one draft token relative to a target step")
      ->check(CLI::Range(0.0, 10.0));
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
  worker::CpuStepRunner target_step(runner);
  // The draft: its own pool of the target's geometry (the scheduler's block ids serve both).
  std::unique_ptr<worker::ModelRunner> draft_runner;
  std::unique_ptr<worker::CpuStepRunner> draft_step;
  if (!draft_dir.empty()) {
    const model::ModelConfig draft_config = model::load_model_config(draft_dir);
    require(draft_config.vocab_size == config.vocab_size,
            "--speculative-model {}: vocabulary of {} tokens, the target's has {} (the draft must "
            "share the target's tokenizer)",
            draft_dir, draft_config.vocab_size, config.vocab_size);
    require(draft_config.max_position_embeddings >= context,
            "--speculative-model {}: context of {} positions, this run needs {}", draft_dir,
            draft_config.max_position_embeddings, context);
    const auto draft_shard = worker::make_shard(draft_config, 0, 1);
    draft_runner = std::make_unique<worker::ModelRunner>(
        draft_config, draft_shard,
        worker::load_llama_weights(model::Checkpoint::open(draft_dir), draft_config, draft_shard),
        kv_blocks, block_size, group);
    draft_step = std::make_unique<worker::CpuStepRunner>(*draft_runner);
  }
  worker::StepExecutor executor(target_step, draft_step.get());

  coordinator::SchedulerConfig sc;
  sc.block_size = block_size;
  sc.num_blocks = kv_blocks;
  sc.max_model_len = static_cast<int32_t>(context);
  sc.max_num_batched_tokens = std::max<int32_t>(512, block_size);
  sc.eos_token_ids = config.eos_token_ids;
  if (draft_step || ngram > 0) {
    sc.speculative.method = draft_step ? coordinator::SpeculativeMethod::kDraftModel
                                       : coordinator::SpeculativeMethod::kNgram;
    sc.speculative.num_speculative_tokens = num_speculative;
    sc.speculative.ngram_max = std::max(ngram, 1);
    sc.speculative.adaptive = adaptive_k;
    sc.speculative.draft_cost = draft_cost;
  }
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
  spec.text_stream = std::make_unique<coordinator::DetokenizerStream>(*tokenizer);
  auto added = scheduler.add_request(std::move(spec));
  if (added.rejection) fail("request rejected: {}", added.rejection->finish_detail);

  if (!prompt.empty()) std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  const auto t_start = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> t_first;
  coordinator::RequestOutput last;
  while (scheduler.has_unfinished_requests()) {
    const messages::StepPlan plan = scheduler.schedule();
    const auto result = executor.execute(plan);
    if (plan.seqs.empty()) continue;
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
    const auto st = scheduler.stats();
    if (st.spec_decode_drafts_total > 0) {
      const auto& c = executor.counters();
      std::fprintf(stderr,
                   "speculative: %lld steps, %lld draft tokens proposed, %lld accepted "
                   "(acceptance %.3f), mean accepted length %.2f tokens/step; draft %.3f s in %lld "
                   "passes, target %.3f s in %lld passes\n",
                   static_cast<long long>(st.steps_total),
                   static_cast<long long>(st.spec_decode_draft_tokens_total),
                   static_cast<long long>(st.spec_decode_accepted_tokens_total),
                   st.spec_acceptance_rate(), st.spec_mean_accepted_length(), c.draft_seconds,
                   static_cast<long long>(c.draft_passes), c.target_seconds,
                   static_cast<long long>(c.target_passes));
    }
  }
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  return shardserve::run_reporting_errors("generate", shardserve::run, argc, argv);
}
