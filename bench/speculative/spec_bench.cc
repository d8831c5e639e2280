// spec_bench: speculative decoding on the CPU engine, measured against the seed's formula.
//
// For the demo pair (models/kjv-llama, models/kjv-llama-draft) and held-out prompts, every
// configuration generates the same requests through the real Scheduler + StepExecutor:
//   plain            no speculation
//   draft K          the draft model proposes K tokens per step (K in --ks)
//   ngram K          prompt lookup proposes up to K tokens per step
// at concurrency 1 (one request at a time: the latency case the formula describes) and at
// --concurrency N (continuous batching), greedy and sampled at T = 1.
//
// Measured in the same run as each speculative result: the per-token acceptance a (maximum
// likelihood over the verifies: accepted / (accepted + rejections)), the mean accepted length,
// the time of one draft pass t_draft and of one target (verify) pass t_target. The seed's
// prediction is (E[accepted] + 1) / (1 + K t_draft / t_target) with E[accepted] = sum_{i=1..K}
// a^i; the measured speedup is tokens/s over the plain run's tokens/s. A second prediction
// replaces the seed's assumption that a verify pass costs a decode pass by the measured costs:
//   (E[accepted] + 1) * t_decode / (K t_draft + t_verify + t_other)
// with t_decode the plain run's step time and t_other the host time per step outside the
// forward passes (scheduler, sampling, verification).
//
// Writes JSON and markdown (bench/results/speculative-cpu.{json,md} by default).
#include <CLI/CLI.hpp>
#include <omp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "comm/collective.h"
#include "coordinator/scheduler.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "worker/cuda/step_runner.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"
#include "worker/speculative_executor.h"
#ifdef SHARDSERVE_BENCH_CUDA
#include "worker/cuda/cuda_model_runner.h"
#endif

namespace shardserve {
namespace {

using clock_type = std::chrono::steady_clock;

struct Model {
  model::ModelConfig config;
  std::unique_ptr<worker::ModelRunner> runner;  // CPU
  std::unique_ptr<worker::StepRunner> step;     // what the executor drives (CPU or CUDA)
};

Model load(const std::string& dir, int64_t blocks, int64_t block_size, comm::Collective& group,
           const std::string& device) {
  Model m;
  m.config = model::load_model_config(dir);
  const auto shard = worker::make_shard(m.config, 0, 1);
  if (device == "cuda") {
#ifdef SHARDSERVE_BENCH_CUDA
    worker::cuda::CudaRunnerOptions opt;
    opt.block_size = block_size;
    opt.num_kv_blocks = blocks;
    opt.max_tokens_per_step = 2048;
    opt.max_logits_per_step = 256;
    m.step = std::make_unique<worker::cuda::CudaModelRunner>(
        m.config, shard, model::Checkpoint::open(dir), opt, group);
    return m;
#else
    fail("bench: built without CUDA (configure with the CUDA backend for --device cuda)");
#endif
  }
  m.runner = std::make_unique<worker::ModelRunner>(
      m.config, shard, worker::load_llama_weights(model::Checkpoint::open(dir), m.config, shard),
      blocks, block_size, group);
  m.step = std::make_unique<worker::CpuStepRunner>(*m.runner);
  return m;
}

struct Config {
  std::string name;  // plain, draft, ngram
  int32_t k = 0;
};

struct Run {
  std::string workload;
  int concurrency = 1;
  Config config;
  double seconds = 0;
  int64_t tokens = 0;
  coordinator::SchedulerStats stats;
  worker::ExecutorCounters counters;
  std::vector<std::vector<int32_t>> outputs;
  double tokens_per_s() const { return tokens / seconds; }
};

double load_average() {
  double l = 0;
  return getloadavg(&l, 1) == 1 ? l : -1.0;
}

Run run_config(const Config& c, const std::string& workload, int concurrency,
               const std::vector<std::vector<int32_t>>& prompts, int32_t max_tokens,
               worker::StepRunner& target, worker::StepRunner* draft, int32_t num_blocks,
               int32_t block_size, int32_t max_model_len) {
  Run run;
  run.workload = workload;
  run.concurrency = concurrency;
  run.config = c;
  run.outputs.resize(prompts.size());
  worker::StepExecutor executor(target, c.name == "draft" ? draft : nullptr);
  coordinator::SchedulerConfig sc;
  sc.block_size = block_size;
  sc.num_blocks = num_blocks;
  sc.max_model_len = max_model_len;
  sc.max_num_batched_tokens = 1024;
  sc.max_num_seqs = concurrency;
  sc.watermark = 0;
  sc.enable_prefix_caching = false;  // every configuration computes every prompt
  if (c.name != "plain") {
    sc.speculative.method = c.name == "draft" ? coordinator::SpeculativeMethod::kDraftModel
                                              : coordinator::SpeculativeMethod::kNgram;
    sc.speculative.num_speculative_tokens = c.k;
    sc.speculative.ngram_max = 3;
  }
  coordinator::Scheduler scheduler(sc);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    coordinator::RequestSpec spec;
    spec.request_id = std::to_string(i);
    spec.prompt_token_ids = prompts[i];
    spec.max_tokens = max_tokens;
    spec.ignore_eos = true;
    spec.arrival_time = double(i);
    if (workload == "greedy") {
      spec.sampling.temperature = 0;
    } else {
      spec.sampling.temperature = 1.0f;
      spec.sampling.seed = 1000 + i;
    }
    auto added = scheduler.add_request(std::move(spec));
    require(!added.rejection, "bench: request rejected: {}",
            added.rejection ? added.rejection->finish_detail : "");
  }
  const auto t0 = clock_type::now();
  while (scheduler.has_unfinished_requests()) {
    const auto plan = scheduler.schedule();
    const auto result = executor.execute(plan);
    if (plan.seqs.empty()) continue;
    for (auto& out : scheduler.on_step_result(result)) {
      run.tokens += static_cast<int64_t>(out.new_tokens.size());
      for (const auto& t : out.new_tokens)
        run.outputs[std::stoul(out.request_id)].push_back(t.token_id);
    }
  }
  run.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  run.stats = scheduler.stats();
  run.counters = executor.counters();
  return run;
}

// sum_{i=0..k} a^i for a fractional k (linear between floor(k) and ceil(k)).
double tokens_per_verify(double a, double k) {
  const int64_t lo = static_cast<int64_t>(std::floor(k));
  double total = 0, term = 1;
  for (int64_t i = 0; i <= lo; ++i, term *= a) total += term;
  return total + (k - lo) * term;
}

struct Derived {
  double a = 0, accept_rate = 0, mean_len = 0, expected_accepted = 0;
  double t_draft = 0, t_target = 0, c = 0;
  double k_eff = 0;          // drafts per verify (prompt lookup proposes what it finds)
  double verify_share = 0;   // f: decode sequence-steps that verified drafts
  double gain = 0;           // tokens per decode sequence-step, measured
  double gain_model = 0;     // the same from a: f * sum_{i<=K_eff} a^i + (1 - f)
  double step_cost = 0;      // cost of a decode sequence-step relative to plain: gain / speedup
  double speedup = 0, seed_prediction = 0, cost_prediction = 0;
  bool same_as_plain = false;
};

Derived derive(const Run& r, const Run& plain, int64_t num_requests) {
  Derived d;
  const auto& c = r.counters;
  d.a = c.per_token_acceptance();
  d.accept_rate = c.acceptance_rate();
  d.mean_len = c.mean_accepted_length();
  const int32_t k = r.config.k;
  for (int32_t i = 1; i <= k; ++i) d.expected_accepted += std::pow(d.a, i);
  d.t_draft = c.draft_passes ? c.draft_seconds / c.draft_passes : 0;
  d.t_target = c.target_passes ? c.target_seconds / c.target_passes : 0;
  d.c = d.t_target > 0 ? d.t_draft / d.t_target : 0;
  d.speedup = r.tokens_per_s() / plain.tokens_per_s();
  d.same_as_plain = r.outputs == plain.outputs;
  // Decode sequence-steps: every output token but each request's first (from its prompt) came
  // from one; a verify gives accepted + 1 tokens, any other decode one.
  const double verifies = static_cast<double>(c.verify_sequences);
  const double decode_tokens = static_cast<double>(r.tokens - num_requests);
  const double decode_steps = decode_tokens - static_cast<double>(c.accepted_tokens);
  d.gain = decode_steps > 0 ? decode_tokens / decode_steps : 1;
  d.step_cost = d.gain / d.speedup;
  if (r.config.name == "plain") return d;
  d.k_eff = verifies > 0 ? static_cast<double>(c.proposed_tokens) / verifies : 0;
  d.verify_share = decode_steps > 0 ? verifies / decode_steps : 0;
  d.gain_model = d.verify_share * tokens_per_verify(d.a, d.k_eff) + (1 - d.verify_share);
  d.seed_prediction = (d.expected_accepted + 1) / (1 + k * d.c);
  d.cost_prediction = d.gain_model / d.step_cost;
  return d;
}

std::vector<int32_t> parse_list(const std::string& csv) {
  std::vector<int32_t> v;
  std::stringstream in(csv);
  for (std::string item; std::getline(in, item, ',');) v.push_back(std::stoi(item));
  return v;
}

int run(int argc, char** argv) {
  CLI::App app{"Speculative decoding on the CPU engine against the seed's speedup formula"};
  std::string target_dir = std::string(SHARDSERVE_SOURCE_DIR) + "/models/kjv-llama";
  std::string draft_dir = std::string(SHARDSERVE_SOURCE_DIR) + "/models/kjv-llama-draft";
  std::string ids_path = std::string(SHARDSERVE_SOURCE_DIR) + "/models/eval/heldout_ids.json";
  std::string out_json, out_md, device = "cpu";
  std::string ks_csv = "2,4,6";
  int num_prompts = 8, prompt_len = 32, max_tokens = 64, concurrency = 4, threads = 0, repeats = 3;
  app.add_option("--target", target_dir);
  app.add_option("--draft", draft_dir);
  app.add_option("--prompt-ids", ids_path,
                 "JSON file with {\"ids\": [...]}: prompts are cut from it");
  app.add_option("--prompts", num_prompts);
  app.add_option("--prompt-len", prompt_len);
  app.add_option("--max-tokens", max_tokens);
  app.add_option("--ks", ks_csv, "K values, comma-separated");
  app.add_option("--concurrency", concurrency, "the batched case's max_num_seqs (1 is always run)");
  app.add_option("--threads", threads, "OpenMP threads (0: the runtime's default)");
  app.add_option("--repeats", repeats,
                 "runs of every configuration, interleaved; the fastest is reported (shared "
                 "machines)")
      ->check(CLI::PositiveNumber);
  app.add_option("--device", device, "cpu (the reference engine) or cuda (CudaModelRunner)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--out-json", out_json, "default bench/results/speculative-<cpu|gpu>.json");
  app.add_option("--out-md", out_md, "default bench/results/speculative-<cpu|gpu>.md");
  CLI11_PARSE(app, argc, argv);
  const std::string results_dir = std::string(SHARDSERVE_SOURCE_DIR) + "/bench/results/";
  const std::string tag = device == "cuda" ? "gpu" : "cpu";
  if (out_json.empty()) out_json = results_dir + "speculative-" + tag + ".json";
  if (out_md.empty()) out_md = results_dir + "speculative-" + tag + ".md";
  spdlog::set_level(spdlog::level::warn);
  if (threads > 0) omp_set_num_threads(threads);

  const auto all_ids =
      nlohmann::json::parse(std::ifstream(ids_path))["ids"].get<std::vector<int32_t>>();
  comm::SingleRankCollective group;
  const int32_t block_size = 16;
  const int32_t max_model_len = prompt_len + 1 + max_tokens + 8;
  const int32_t per_seq_blocks = (max_model_len + block_size - 1) / block_size + 1;
  const int32_t num_blocks = per_seq_blocks * std::max(concurrency, 1);
  Model target = load(target_dir, num_blocks, block_size, group, device);
  Model draft = load(draft_dir, num_blocks, block_size, group, device);
  require(target.config.vocab_size == draft.config.vocab_size,
          "bench: the draft's vocabulary ({}) is not the target's ({})", draft.config.vocab_size,
          target.config.vocab_size);
  const int32_t bos = target.config.bos_token_id.value_or(0);
  std::vector<std::vector<int32_t>> prompts;
  const std::size_t stride = all_ids.size() / std::max(num_prompts, 1);
  for (int i = 0; i < num_prompts; ++i) {
    std::vector<int32_t> p = {bos};
    p.insert(p.end(), all_ids.begin() + i * stride, all_ids.begin() + i * stride + prompt_len);
    prompts.push_back(p);
  }
  const auto ks = parse_list(ks_csv);
  std::vector<Config> configs = {{"plain", 0}};
  for (int32_t k : ks) configs.push_back({"draft", k});
  for (int32_t k : ks) configs.push_back({"ngram", k});

  const double load_before = load_average();
  nlohmann::json results = nlohmann::json::array();
  std::ostringstream md;
  std::vector<std::pair<Run, Derived>> all;
  for (const std::string workload : {"greedy", "sampled_t1"}) {
    for (int conc : {1, concurrency}) {
      // Every configuration `repeats` times, interleaved so that a change in the machine's load
      // hits all of them alike; the fastest run of each is kept.
      std::vector<Run> best(configs.size());
      for (int rep = 0; rep < repeats; ++rep) {
        for (std::size_t i = 0; i < configs.size(); ++i) {
          Run r = run_config(configs[i], workload, conc, prompts, max_tokens, *target.step,
                             draft.step.get(), num_blocks, block_size, max_model_len);
          if (rep == 0 || r.seconds < best[i].seconds) best[i] = std::move(r);
        }
      }
      const Run plain = best[0];
      for (std::size_t i = 0; i < configs.size(); ++i) {
        const Config& c = configs[i];
        Run r = std::move(best[i]);
        const Derived d = derive(r, plain, static_cast<int64_t>(prompts.size()));
        std::fprintf(stderr,
                     "%-10s conc %d %-5s K=%d: %6.1f tok/s (x%.2f) a=%.3f len=%.2f c=%.3f "
                     "pred seed x%.2f cost x%.2f%s\n",
                     workload.c_str(), conc, c.name.c_str(), c.k, r.tokens_per_s(), d.speedup, d.a,
                     d.mean_len, d.c, d.seed_prediction, d.cost_prediction,
                     workload == "greedy" && c.name != "plain"
                         ? (d.same_as_plain ? " [greedy output identical]"
                                            : " [GREEDY OUTPUT DIFFERS]")
                         : "");
        results.push_back({{"workload", workload},
                           {"concurrency", conc},
                           {"method", c.name},
                           {"k", c.k},
                           {"tokens", r.tokens},
                           {"seconds", r.seconds},
                           {"tokens_per_s", r.tokens_per_s()},
                           {"speedup", d.speedup},
                           {"steps", r.stats.steps_total},
                           {"proposed_tokens", r.stats.spec_decode_draft_tokens_total},
                           {"accepted_tokens", r.stats.spec_decode_accepted_tokens_total},
                           {"verifies", r.stats.spec_decode_drafts_total},
                           {"acceptance_rate_accepted_over_proposed", d.accept_rate},
                           {"per_token_acceptance_a", d.a},
                           {"mean_accepted_length", d.mean_len},
                           {"expected_accepted_from_a", d.expected_accepted},
                           {"t_draft_pass_s", d.t_draft},
                           {"t_target_pass_s", d.t_target},
                           {"drafts_per_verify", d.k_eff},
                           {"verify_share_of_decode_steps", d.verify_share},
                           {"tokens_per_decode_step", d.gain},
                           {"tokens_per_decode_step_model", d.gain_model},
                           {"decode_step_cost_vs_plain", d.step_cost},
                           {"draft_passes", r.counters.draft_passes},
                           {"target_passes", r.counters.target_passes},
                           {"c_draft_over_target", d.c},
                           {"seed_formula_speedup", d.seed_prediction},
                           {"cost_model_speedup", d.cost_prediction},
                           {"greedy_output_identical", d.same_as_plain}});
        all.emplace_back(std::move(r), d);
      }
    }
  }
  const double load_after = load_average();

  nlohmann::json doc = {
      {"generated_by", "bench/speculative/spec_bench"},
      {"device", device},
      {"target", target_dir},
      {"draft", draft_dir},
      {"prompts", num_prompts},
      {"prompt_len_with_bos", prompt_len + 1},
      {"max_tokens", max_tokens},
      {"omp_threads", omp_get_max_threads()},
      {"repeats_fastest_kept", repeats},
      {"load_average_before", load_before},
      {"load_average_after", load_after},
      {"results", results}};
  std::ofstream(out_json) << doc.dump(2) << "\n";

  md << "# Speculative decoding on the " << (device == "cuda" ? "GPU" : "CPU") << " (demo pair)\n\n"
     << "Generated by `bench/speculative/spec_bench --device " << device
     << "` (do not edit by hand; rerun it). Target `models/kjv-llama` (6.8M parameters), draft "
        "`models/kjv-llama-draft` (1.4M), "
     << (device == "cuda" ? "CudaModelRunner (bf16 weights, one GPU), host "
                          : "CPU float32 reference engine, ")
     << omp_get_max_threads() << " OpenMP thread(s); " << num_prompts << " held-out prompts of "
     << prompt_len + 1 << " tokens (with BOS), " << max_tokens
     << " tokens each (ignore_eos); every configuration run " << repeats
     << " times, interleaved, the fastest kept. The machine is shared: load average " << load_before
     << " before, " << load_after << " after.\n\n"
     << "- **measured**: tokens/s over the plain run's tokens/s (same workload, same "
        "concurrency). Greedy rows also check that the output is token for token the plain "
        "one.\n"
     << "- **seed**: the seed's prediction (E[accepted] + 1) / (1 + K c), E[accepted] = a + a^2 "
        "+ ... + a^K, with a, t_draft and t_target measured in the same run: **a** = per-token "
        "acceptance, maximum likelihood over the verifies (accepted / (accepted + rejections)); "
        "c = t_draft / t_target, one draft pass over one target (verify) pass.\n"
     << "- Where it goes wrong, the measured speedup splits into two factors: **gain** = tokens "
        "per decode sequence-step (measured; **model**: f (1 + a + ... + a^K_eff) + (1 - f), f = "
        "share of decode steps that verified, K_eff = drafts per verify) and **cost** = time of "
        "a decode sequence-step relative to plain decoding (gain / measured). The seed assumes "
        "cost = 1 + K c, i.e. that a verify of K + 1 tokens costs one decode. **pred** = model "
        "gain / measured cost.\n"
     << "- **acc/prop** = accepted / proposed drafts (the metrics' ratio), **len** = tokens per "
        "verify.\n\n";
  std::string current;
  for (const auto& [r, d] : all) {
    const std::string section = r.workload + "/" + std::to_string(r.concurrency);
    if (section != current) {
      current = section;
      md << "\n## " << (r.workload == "greedy" ? "Greedy" : "Sampled, T = 1") << ", concurrency "
         << r.concurrency << "\n\n"
         << "| method | K | tok/s | measured | seed | a | acc/prop | len | K_eff | gain | model "
            "| cost | 1 + K c | pred | t_draft ms | t_target ms | steps | greedy same |\n"
         << "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
            "---: | ---: | ---: | ---: | ---: | --- |\n";
    }
    if (r.config.name == "plain") {
      md << fmt::format("| plain | 0 | {:.1f} | 1.00 | | | | | | 1.00 | | 1.00 | | | | {:.2f} | "
                        "{} | |\n",
                        r.tokens_per_s(), d.t_target * 1e3, r.stats.steps_total);
      continue;
    }
    const bool model = r.config.name == "draft";
    md << fmt::format(
        "| {} | {} | {:.1f} | {:.2f} | {} | {:.3f} | {:.3f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | "
        "{:.2f} | {} | {:.2f} | {} | {:.2f} | {} | {} |\n",
        r.config.name, r.config.k, r.tokens_per_s(), d.speedup,
        model ? fmt::format("{:.2f}", d.seed_prediction) : fmt::format("{:.2f} (c = 0)", d.seed_prediction),
        d.a, d.accept_rate, d.mean_len, d.k_eff, d.gain, d.gain_model, d.step_cost,
        model ? fmt::format("{:.2f}", 1 + r.config.k * d.c) : std::string("1"), d.cost_prediction,
        model ? fmt::format("{:.2f}", d.t_draft * 1e3) : std::string("-"), d.t_target * 1e3,
        r.stats.steps_total, r.workload == "greedy" ? (d.same_as_plain ? "yes" : "**NO**") : "");
  }
  md << "\n## Elsewhere\n\n"
     << (device == "cuda"
             ? "The CPU run of the same benchmark: `speculative-cpu.md`. Step costs at the "
               "Llama-3.1-70B / 8B shapes (random weights, this acceptance): "
               "`speculative-gpu-70b.md` (`bench/speculative/spec_shapes`).\n"
             : "The GPU run of the same benchmark: `speculative-gpu.md`; step costs at the "
               "Llama-3.1-70B / 8B shapes: `speculative-gpu-70b.md` "
               "(`bench/speculative/spec_shapes`).\n");
  std::ofstream(out_md) << md.str();
  std::fprintf(stderr, "wrote %s and %s\n", out_json.c_str(), out_md.c_str());
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  return shardserve::run_reporting_errors("spec_bench", shardserve::run, argc, argv);
}
