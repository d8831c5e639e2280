// scheduler_sim: the real coordinator::Scheduler driven by a simulated workload, each step
// timed by the roofline (step_cost.h) for LLaMA-3.1-70B, int4-g128 weights, TP=1 on one H200
// with our measured ceilings. Compares static batching, continuous batching with contiguous
// max-length KV reservation, continuous batching over paged blocks, and paged with chunked
// prefill: throughput, TTFT and TPOT percentiles, KV memory utilization. Writes
// bench/results/scheduler_sim.{json,md} (or --out DIR). Not a test: it asserts nothing.
//
// How the non-paged modes are emulated with the paged scheduler:
//  * contiguous max-length reservation = at most floor(pool_tokens / max_model_len) sequences
//    (what reserving max_model_len slots per sequence allows); utilization is then measured
//    against that reservation.
//  * static batching = contiguous reservation, plus: a batch is formed only when the previous
//    one has completely finished, and a finished member keeps computing pad tokens (a decode
//    slot) until the whole batch is done, as a padded batch tensor does.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "bench/scheduler/step_cost.h"
#include "bench/scheduler/workload.h"
#include "common/error.h"
#include "coordinator/scheduler.h"
#include "model/memory_plan.h"
#include "tools/plan/gpu_spec.h"
#include "tools/plan/model_presets.h"
#include "tools/plan/plan.h"

namespace shardserve::bench {
namespace {

constexpr int32_t kMaxModelLen = 4096;
constexpr int32_t kBlockSize = 16;
constexpr int32_t kMaxNumSeqs = 256;

struct Mode {
  std::string name;
  std::string description;
  coordinator::SchedulerConfig config;
  bool static_batching = false;
  bool contiguous = false;
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {  // nearest rank
    const size_t k = static_cast<size_t>(std::ceil(q * v.size()));
    return v[std::min(v.size() - 1, k == 0 ? 0 : k - 1)];
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / v.size();
  return p;
}

struct RunResult {
  std::string mode, description;
  double makespan_s = 0;
  int64_t output_tokens = 0, prompt_tokens = 0, steps = 0, preemptions = 0;
  double output_tok_per_s = 0, total_tok_per_s = 0, requests_per_s = 0;
  Percentiles ttft_s, tpot_s;
  double kv_utilization = 0;    // tokens with KV / slots held (blocks or reservations), time-avg
  double pool_occupancy = 0;    // slots held / pool slots, time-avg
  double mean_running = 0;      // sequences per step, time-avg
  double compute_bound_fraction = 0;  // share of time in compute-bound steps
};

struct Live {
  double first_token_s = -1, finish_s = -1;
  int32_t outputs = 0;
  int32_t final_len = 0;
  int batch = -1;
};

RunResult simulate(const Mode& mode, const std::vector<SimRequest>& workload,
                   const StepCostModel& cost) {
  coordinator::Scheduler sched(mode.config);
  const auto& cfg = sched.config();
  const double pool_slots = double(cfg.num_blocks) * cfg.block_size;
  std::vector<Live> live(workload.size());
  std::map<uint64_t, int32_t> index_of;  // seq id -> workload index
  std::vector<int32_t> batch_members;    // static batching: the current batch
  size_t next = 0, done = 0;
  double t = 0, weighted_util = 0, weighted_occ = 0, weighted_running = 0, compute_time = 0;
  RunResult res;
  res.mode = mode.name;
  res.description = mode.description;

  auto add = [&](const SimRequest& r) {
    coordinator::RequestSpec spec;
    spec.request_id = "r" + std::to_string(r.index);
    spec.prompt_token_ids.resize(r.prompt_len);
    for (int32_t i = 0; i < r.prompt_len; ++i)  // distinct prompts: no accidental prefix hits
      spec.prompt_token_ids[i] = (r.index * 7919 + i * 104729) % 32000;
    spec.max_tokens = r.output_len;
    spec.ignore_eos = true;
    spec.arrival_time = r.arrival_s;
    auto a = sched.add_request(std::move(spec));
    require(!a.rejection, "scheduler_sim: request {} rejected: {}", r.index,
            a.rejection ? a.rejection->finish_detail : "");
    index_of[a.seq_id] = r.index;
    res.prompt_tokens += r.prompt_len;
  };

  while (done < workload.size()) {
    if (mode.static_batching) {
      if (!sched.has_unfinished_requests()) {
        batch_members.clear();
        if (next < workload.size() && workload[next].arrival_s > t) t = workload[next].arrival_s;
        while (next < workload.size() && workload[next].arrival_s <= t &&
               static_cast<int32_t>(batch_members.size()) < cfg.max_num_seqs) {
          batch_members.push_back(static_cast<int32_t>(next));
          add(workload[next++]);
        }
      }
    } else {
      while (next < workload.size() && workload[next].arrival_s <= t) add(workload[next++]);
      if (!sched.has_unfinished_requests()) {
        t = workload[next].arrival_s;
        continue;
      }
    }
    const messages::StepPlan plan = sched.schedule();
    require(!plan.seqs.empty(), "scheduler_sim: {}: no work planned with requests live",
            mode.name);
    std::vector<int32_t> pads;
    if (mode.static_batching)
      for (int32_t i : batch_members)
        if (live[i].finish_s >= 0) pads.push_back(live[i].final_len);
    const planner::StepEstimate e = cost.step(plan, pads);
    const double dt = e.seconds();
    t += dt;
    ++res.steps;
    if (e.compute_bound()) compute_time += dt;

    messages::StepResult result;
    result.step_id = plan.step_id;
    result.sample_offsets.push_back(0);
    for (const auto& w : plan.seqs) {
      if (w.num_logits == 0) continue;
      result.seq_ids.push_back(w.seq_id);
      messages::SampledToken tok;
      tok.token_id = 1;
      result.tokens.push_back(tok);
      result.sample_offsets.push_back(static_cast<int32_t>(result.tokens.size()));
    }
    for (const auto& out : sched.on_step_result(result)) {
      Live& l = live[index_of.at(out.seq_id)];
      l.outputs += static_cast<int32_t>(out.new_tokens.size());
      if (l.first_token_s < 0 && !out.new_tokens.empty()) l.first_token_s = t;
      if (out.finished) {
        l.finish_s = t;
        l.final_len = out.num_prompt_tokens + out.num_output_tokens;
        ++done;
      }
    }
    // Memory after the step: tokens whose KV is kept vs the slots held for them.
    double stored = 0;
    for (const auto* r : sched.running()) stored += r->num_computed_tokens;
    double held;
    if (mode.contiguous) {
      const double seqs = mode.static_batching ? double(batch_members.size())
                                               : double(sched.running().size());
      held = seqs * cfg.max_model_len;
    } else {
      held = double(sched.kv_cache().num_used_blocks()) * cfg.block_size;
    }
    if (held > 0) weighted_util += dt * stored / held;
    weighted_occ += dt * held / pool_slots;
    weighted_running += dt * sched.running().size();
  }

  std::vector<double> ttft, tpot;
  double last_finish = 0;
  for (size_t i = 0; i < workload.size(); ++i) {
    const Live& l = live[i];
    ttft.push_back(l.first_token_s - workload[i].arrival_s);
    if (l.outputs > 1) tpot.push_back((l.finish_s - l.first_token_s) / (l.outputs - 1));
    res.output_tokens += l.outputs;
    last_finish = std::max(last_finish, l.finish_s);
  }
  res.makespan_s = last_finish - workload.front().arrival_s;
  res.output_tok_per_s = res.output_tokens / res.makespan_s;
  res.total_tok_per_s = (res.output_tokens + res.prompt_tokens) / res.makespan_s;
  res.requests_per_s = workload.size() / res.makespan_s;
  res.ttft_s = percentiles(ttft);
  res.tpot_s = percentiles(tpot);
  res.kv_utilization = weighted_util / t;
  res.pool_occupancy = weighted_occ / t;
  res.mean_running = weighted_running / t;
  res.compute_bound_fraction = compute_time / t;
  res.preemptions = sched.stats().preemptions_total;
  return res;
}

nlohmann::json to_json(const Percentiles& p) {
  return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"mean", p.mean}};
}

nlohmann::json to_json(const RunResult& r) {
  return {{"mode", r.mode},
          {"description", r.description},
          {"makespan_s", r.makespan_s},
          {"steps", r.steps},
          {"output_tokens", r.output_tokens},
          {"prompt_tokens", r.prompt_tokens},
          {"output_tokens_per_s", r.output_tok_per_s},
          {"total_tokens_per_s", r.total_tok_per_s},
          {"requests_per_s", r.requests_per_s},
          {"ttft_s", to_json(r.ttft_s)},
          {"tpot_s", to_json(r.tpot_s)},
          {"kv_utilization", r.kv_utilization},
          {"kv_pool_occupancy", r.pool_occupancy},
          {"mean_running_seqs", r.mean_running},
          {"compute_bound_time_fraction", r.compute_bound_fraction},
          {"preemptions", r.preemptions}};
}

std::string fmt_ms(double s) { return fmt::format("{:.0f}", s * 1e3); }

std::string table(const std::vector<RunResult>& runs) {
  std::string md =
      "| mode | output tok/s | total tok/s | req/s | TTFT p50 / p90 / p99 (ms) | TPOT p50 / p90 / "
      "p99 (ms) | KV utilization | pool held | mean running | preemptions |\n"
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& r : runs)
    md += fmt::format("| {} | {:.0f} | {:.0f} | {:.2f} | {} / {} / {} | {} / {} / {} | {:.1f}% | "
                      "{:.1f}% | {:.1f} | {} |\n",
                      r.mode, r.output_tok_per_s, r.total_tok_per_s, r.requests_per_s,
                      fmt_ms(r.ttft_s.p50), fmt_ms(r.ttft_s.p90), fmt_ms(r.ttft_s.p99),
                      fmt_ms(r.tpot_s.p50), fmt_ms(r.tpot_s.p90), fmt_ms(r.tpot_s.p99),
                      100 * r.kv_utilization, 100 * r.pool_occupancy, r.mean_running,
                      r.preemptions);
  return md;
}

int run(int argc, char** argv) {
  std::filesystem::path out_dir = std::filesystem::path(SHARDSERVE_SOURCE_DIR) / "bench/results";
  WorkloadSpec wl;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      require(i + 1 < argc, "scheduler_sim: {} needs a value", a);
      return argv[++i];
    };
    if (a == "--out") out_dir = value();
    else if (a == "--requests") wl.num_requests = std::stoi(value());
    else if (a == "--seed") wl.seed = std::stoull(value());
    else fail("scheduler_sim: unknown argument '{}' (--out DIR, --requests N, --seed S)", a);
  }

  // The machine and model: the planner's numbers, so the sim and `plan` agree.
  planner::PlanRequest pr;
  pr.model = planner::load_model_spec("llama-3.1-70b");
  pr.gpu = planner::with_measured_ceilings(planner::gpu_preset("h200"));
  pr.weights = model::parse_weight_format("int4-g128");
  pr.block_size = kBlockSize;
  const planner::TpPlan tp = planner::plan_tp(pr, 1);
  require(tp.weights_fit && tp.kv_blocks > 0, "scheduler_sim: the model does not fit");
  const StepCostModel cost(tp.cost, pr.gpu);
  const int32_t num_blocks = static_cast<int32_t>(tp.kv_blocks);
  const int32_t contiguous_seqs = num_blocks * kBlockSize / kMaxModelLen;

  auto base = [&]() {
    coordinator::SchedulerConfig c;
    c.block_size = kBlockSize;
    c.num_blocks = num_blocks;
    c.max_model_len = kMaxModelLen;
    c.enable_prefix_caching = false;  // random prompts share nothing; keeps the books plain
    return c;
  };
  std::vector<Mode> modes;
  {
    Mode m{"static", "", base(), true, true};
    m.config.max_num_seqs = contiguous_seqs;
    m.config.max_num_batched_tokens = 16384;
    m.config.enable_chunked_prefill = false;
    m.description = fmt::format("static batches of up to {} (contiguous {}-token reservation), "
                                "finished members padded until the batch ends",
                                contiguous_seqs, kMaxModelLen);
    modes.push_back(m);
  }
  {
    Mode m{"continuous-contiguous", "", base(), false, true};
    m.config.max_num_seqs = contiguous_seqs;
    m.config.max_num_batched_tokens = 8192;
    m.config.enable_chunked_prefill = false;
    m.description = fmt::format("continuous batching, {} seqs at most (contiguous {}-token "
                                "reservation), no chunking",
                                contiguous_seqs, kMaxModelLen);
    modes.push_back(m);
  }
  {
    Mode m{"continuous-paged", "", base(), false, false};
    m.config.max_num_seqs = kMaxNumSeqs;
    m.config.max_num_batched_tokens = 8192;
    m.config.enable_chunked_prefill = false;
    m.description = fmt::format("continuous batching over 16-token blocks, {} seqs at most, "
                                "8192-token steps, no chunking",
                                kMaxNumSeqs);
    modes.push_back(m);
  }
  for (int32_t budget : {2048, 512}) {
    Mode m{fmt::format("continuous-paged-chunked-{}", budget), "", base(), false, false};
    m.config.max_num_seqs = kMaxNumSeqs;
    m.config.max_num_batched_tokens = budget;
    m.config.enable_chunked_prefill = true;
    m.description = fmt::format("as continuous-paged, with chunked prefill in {}-token steps",
                                budget);
    modes.push_back(m);
  }

  nlohmann::json j;
  j["setup"] = {
      {"model", pr.model.name},
      {"weights", pr.weights.name()},
      {"tp", 1},
      {"gpu", pr.gpu.name},
      {"gpu_ceilings", pr.gpu.source},
      {"bandwidth_bytes_per_s", pr.gpu.bandwidth_bytes_per_s},
      {"flops_per_s", pr.gpu.flops_per_s},
      {"weight_bytes_read_per_step", tp.cost.weight_bytes_read},
      {"kv_bytes_per_token", tp.cost.kv_bytes_per_token},
      {"kv_blocks", num_blocks},
      {"block_size", kBlockSize},
      {"kv_pool_tokens", int64_t{num_blocks} * kBlockSize},
      {"max_model_len", kMaxModelLen},
      {"contiguous_max_seqs", contiguous_seqs},
      {"step_time",
       "max((weight_bytes + kv_bytes_per_token * sum(start_pos + num_tokens)) / bandwidth, "
       "(2 * layer_params * tokens + 2 * lm_head_params * logits + attention_flops_per_position "
       "* causal_pairs) / flops); no launch or host overhead"}};
  j["workload"] = {{"requests", wl.num_requests},
                   {"prompt_tokens", fmt::format("log-uniform [{}, {}]", wl.prompt_min, wl.prompt_max)},
                   {"output_tokens", fmt::format("log-uniform [{}, {}], all generated (ignore_eos)",
                                                 wl.output_min, wl.output_max)},
                   {"seed", wl.seed}};

  std::string md = "# Scheduler simulation\n\n";
  md += "Generated by `bench/scheduler/scheduler_sim` (do not edit by hand). The real "
        "`coordinator::Scheduler` plans every step; the step's duration comes from the roofline.\n\n";
  md += fmt::format(
      "- Model: {}, {} weights, TP=1 on one {} ({}).\n"
      "- Per step: {:.1f} GB of weights read; KV {:.0f} KiB per token; pool {} blocks x {} = {} "
      "tokens (the planner's figure: 90% of memory after weights and reserve).\n"
      "- Step time = max(bytes / {:.2f} TB/s, FLOPs / {:.0f} TFLOP/s), bytes = weights + KV read "
      "and written, FLOPs = 2 x params per token + 2 x LM-head params per logit + causal "
      "attention. No launch or host overhead: absolute times are lower bounds.\n"
      "- Workload: {} requests, prompts log-uniform in [{}, {}] tokens, outputs log-uniform in "
      "[{}, {}] tokens generated in full; max_model_len {}, so contiguous reservation fits {} "
      "sequences.\n\n",
      pr.model.name, pr.weights.name(), pr.gpu.name, pr.gpu.source, tp.cost.weight_bytes_read / 1e9,
      tp.cost.kv_bytes_per_token / 1024, num_blocks, kBlockSize, int64_t{num_blocks} * kBlockSize,
      pr.gpu.bandwidth_bytes_per_s / 1e12, pr.gpu.flops_per_s / 1e12, wl.num_requests,
      wl.prompt_min, wl.prompt_max, wl.output_min, wl.output_max, kMaxModelLen, contiguous_seqs);
  md += "Modes:\n\n";
  for (const auto& m : modes) md += fmt::format("- `{}`: {}.\n", m.name, m.description);
  md += "\n";

  // Offline (all requests at t=0): throughput. Online (Poisson): latency at a fixed load.
  std::vector<RunResult> offline;
  const auto offline_load = make_workload(wl);
  for (const auto& m : modes) {
    offline.push_back(simulate(m, offline_load, cost));
    std::fprintf(stderr, "offline %-28s %8.0f tok/s\n", m.name.c_str(), offline.back().output_tok_per_s);
  }
  const RunResult* best = &offline[0];
  for (const auto& r : offline)
    if (r.requests_per_s > best->requests_per_s) best = &r;
  WorkloadSpec online_spec = wl;
  online_spec.rate_per_s = 0.7 * best->requests_per_s;
  std::vector<RunResult> online;
  const auto online_load = make_workload(online_spec);
  for (const auto& m : modes) {
    online.push_back(simulate(m, online_load, cost));
    std::fprintf(stderr, "online  %-28s TTFT p50 %.0f ms\n", m.name.c_str(), online.back().ttft_s.p50 * 1e3);
  }

  auto runs_json = [](const std::vector<RunResult>& rs) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& r : rs) a.push_back(to_json(r));
    return a;
  };
  j["scenarios"] = {
      {{"name", "offline"}, {"arrivals", "all at t=0"}, {"runs", runs_json(offline)}},
      {{"name", "online"},
       {"arrivals", fmt::format("Poisson, {:.2f} req/s (70% of the best offline rate, {})",
                                online_spec.rate_per_s, best->mode)},
       {"rate_per_s", online_spec.rate_per_s},
       {"runs", runs_json(online)}}};

  md += "## Offline: all requests at t=0 (throughput)\n\n" + table(offline) + "\n";
  md += fmt::format("## Online: Poisson arrivals at {:.2f} req/s (70% of the best offline rate, "
                    "`{}`)\n\n",
                    online_spec.rate_per_s, best->mode);
  md += table(online) + "\n";
  md += "KV utilization = tokens whose KV is kept / KV slots held for them (paged: allocated "
        "blocks x 16; contiguous: max_model_len per sequence), averaged over time. Pool held = "
        "slots held / pool slots.\n\n";

  // The seed notes' claims, set against the measurements.
  auto by = [&](const std::vector<RunResult>& rs, const std::string& name) -> const RunResult& {
    for (const auto& r : rs)
      if (r.mode == name) return r;
    fail("scheduler_sim: no mode {}", name);
  };
  const RunResult& st = by(offline, "static");
  const RunResult& cc = by(offline, "continuous-contiguous");
  const RunResult& cp = by(offline, "continuous-paged");
  const RunResult& ch = by(offline, "continuous-paged-chunked-2048");
  const double speed_same_mem = cc.output_tok_per_s / st.output_tok_per_s;
  const double speed_paged = ch.output_tok_per_s / st.output_tok_per_s;
  const double paged_vs_contig = cp.output_tok_per_s / cc.output_tok_per_s;
  auto verdict = [](double x, double lo, double hi) {
    return x < lo ? "below the claimed range" : x > hi ? "above the claimed range" : "within it";
  };
  md += "## Against the seed notes' claims\n\n";
  md += fmt::format(
      "- *Continuous batching: 2-4x throughput for variable-length requests.* Offline, with the "
      "same contiguous reservation (same batch cap of {}), continuous over static = **{:.2f}x** "
      "({}). With paged blocks and chunked prefill (2048) = **{:.2f}x** ({}). Paging alone "
      "(continuous-paged over continuous-contiguous) = {:.2f}x: the pool holds {:.1f} sequences "
      "on average instead of at most {}.\n",
      contiguous_seqs, speed_same_mem, verdict(speed_same_mem, 2, 4), speed_paged,
      verdict(speed_paged, 2, 4), paged_vs_contig, cp.mean_running, contiguous_seqs);
  md += fmt::format(
      "- *Paged KV utilization near 100% against about 50% for max-length allocation.* Paged: "
      "**{:.1f}%** (continuous-paged; waste is only each sequence's last, partly filled block). "
      "Contiguous {}-token reservation: **{:.1f}%** (continuous-contiguous) and {:.1f}% "
      "(static, whose finished members keep their reservation until the batch ends). The "
      "contiguous figure depends on the workload: mean live length / max_model_len.\n",
      100 * cp.kv_utilization, kMaxModelLen, 100 * cc.kv_utilization, 100 * st.kv_utilization);
  const RunResult& on_cp = by(online, "continuous-paged");
  const RunResult& on_512 = by(online, "continuous-paged-chunked-512");
  md += fmt::format(
      "- *Chunked prefill keeps long prompts from stalling decodes.* Online, TPOT p99 "
      "{} ms without chunking, {} ms with 512-token chunks; TTFT p50 {} ms vs {} ms.\n",
      fmt_ms(on_cp.tpot_s.p99), fmt_ms(on_512.tpot_s.p99), fmt_ms(on_cp.ttft_s.p50),
      fmt_ms(on_512.ttft_s.p50));
  j["claims"] = {
      {{"claim", "continuous batching 2-4x throughput over static"},
       {"measured_same_memory", speed_same_mem},
       {"measured_paged_chunked", speed_paged}},
      {{"claim", "paged KV utilization near 100% vs about 50% for max-length allocation"},
       {"paged", cp.kv_utilization},
       {"contiguous_continuous", cc.kv_utilization},
       {"contiguous_static", st.kv_utilization}}};

  std::filesystem::create_directories(out_dir);
  std::ofstream(out_dir / "scheduler_sim.json") << j.dump(2) << "\n";
  std::ofstream(out_dir / "scheduler_sim.md") << md;
  std::fprintf(stderr, "wrote %s/scheduler_sim.{json,md}\n", out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace shardserve::bench

int main(int argc, char** argv) {
  try {
    return shardserve::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scheduler_sim: %s\n", e.what());
    return 1;
  }
}
