#include "tools/plan/report_markdown.h"

#include <fmt/format.h>

#include <iterator>
#include <vector>

namespace shardserve::planner {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;

std::string gib(double bytes) { return fmt::format("{:.2f}", bytes / kGiB); }
std::string ms(double seconds) { return fmt::format("{:.3f}", seconds * 1e3); }
std::string rate(double per_s) { return fmt::format("{:.0f}", per_s); }
std::string bound(const StepEstimate& s) { return s.compute_bound() ? "compute" : "memory"; }

// Small byte counts read best in the unit the issue and the docs use: MiB with the exact bytes.
std::string bytes_exact(double bytes) {
  if (bytes < kGiB) return fmt::format("{:.4f} MiB ({:.0f} B)", bytes / kMiB, bytes);
  return fmt::format("{:.2f} GiB", bytes / kGiB);
}

std::string context_label(const ContextRow& row) {
  return row.beyond_model_max ? fmt::format("{}*", row.context) : fmt::format("{}", row.context);
}

void header(std::string& out, const Plan& plan) {
  const PlanRequest& r = plan.request;
  const model::ModelConfig& m = r.model.config;
  auto o = std::back_inserter(out);
  fmt::format_to(o, "# Capacity plan: {} on {}\n\n", r.model.name, r.gpu.name);
  fmt::format_to(o,
                 "- GPU ceilings ({}): {:.1f} GiB, {:.2f} TB/s HBM, {:.0f} TFLOP/s dense bf16, "
                 "{:.0f} GB/s link per direction.\n",
                 r.gpu.source, static_cast<double>(r.gpu.memory_bytes) / kGiB,
                 r.gpu.bandwidth_bytes_per_s / 1e12, r.gpu.flops_per_s / 1e12,
                 r.gpu.link_bytes_per_s / 1e9);
  if (r.gpu.source.starts_with("datasheet")) {
    out += "  Datasheet figures are peaks that no kernel reaches; `--ceilings measured` (H200) or "
           "`--bandwidth-tbps`/`--tflops` give achievable ones.\n";
  }
  fmt::format_to(o,
                 "- Model: {} layers, hidden {}, MLP {}, {} query heads, {} KV heads (GQA group "
                 "{}), head_dim {}, vocab {}, max context {}, {} embeddings.\n",
                 m.num_hidden_layers, m.hidden_size, m.intermediate_size, m.num_attention_heads,
                 m.num_key_value_heads, m.gqa_group(), m.head_dim, m.vocab_size,
                 m.max_position_embeddings, m.tie_word_embeddings ? "tied" : "untied");
  fmt::format_to(o,
                 "- Weights {}{} (embeddings, norms and LM head bf16); KV cache {} in blocks of "
                 "{} tokens; KV pool = {:.2f} x (GPU memory - weights - {:.2f} GiB reserve); {} "
                 "replica(s) of TP GPUs each.\n\n",
                 r.weights.name(), r.weights_origin.empty() ? "" : ", " + r.weights_origin,
                 model::kv_dtype_name(r.kv_dtype), r.block_size, r.kv_fraction,
                 static_cast<double>(r.reserve_bytes) / kGiB, r.replicas);
}

void memory_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  out += "## Memory per GPU\n\n";
  out += "| TP | GPUs | q / KV heads per GPU | weights GiB | KV per token | KV block | KV pool GiB "
         "| KV blocks | tokens in KV |\n";
  out += "|---:|---:|---|---:|---|---:|---:|---:|---:|\n";
  for (const TpPlan& p : plan.tps) {
    const std::string heads =
        p.heads.kv_replicas > 1
            ? fmt::format("{} / {} (each KV head on {} GPUs)", p.heads.q_heads_per_rank,
                          p.heads.kv_heads_per_rank, p.heads.kv_replicas)
            : fmt::format("{} / {}", p.heads.q_heads_per_rank, p.heads.kv_heads_per_rank);
    const std::string pool = p.weights_fit ? gib(static_cast<double>(p.kv_pool_bytes))
                                           : std::string("weights do not fit");
    fmt::format_to(o, "| {} | {} | {} | {} | {} | {:.2f} MiB | {} | {} | {} |\n", p.tp,
                   p.tp * plan.request.replicas, heads,
                   gib(static_cast<double>(p.weights.total_bytes())),
                   bytes_exact(static_cast<double>(p.kv_bytes_per_token)),
                   static_cast<double>(p.kv_bytes_per_block) / kMiB, pool, p.kv_blocks,
                   p.kv_blocks * p.kv.block_size);
  }
  out += "\n";
}

void sequences_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  const int64_t replicas = plan.request.replicas;
  out += replicas > 1 ? fmt::format("## Sequences that fit (per replica; x{} replicas in "
                                    "brackets)\n\n",
                                    replicas)
                      : std::string("## Sequences that fit\n\n");
  out += "| TP |";
  for (const ContextRow& c : plan.tps.front().contexts) {
    fmt::format_to(o, " context {} |", context_label(c));
  }
  out += "\n|---:|";
  for (size_t i = 0; i < plan.tps.front().contexts.size(); ++i) out += "---:|";
  out += "\n";
  for (const TpPlan& p : plan.tps) {
    fmt::format_to(o, "| {} |", p.tp);
    for (const ContextRow& c : p.contexts) {
      if (replicas > 1) {
        fmt::format_to(o, " {} ({}) |", c.max_sequences, c.max_sequences * replicas);
      } else {
        fmt::format_to(o, " {} |", c.max_sequences);
      }
    }
    out += "\n";
  }
  out += "\n";
}

void decode_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  const int64_t replicas = plan.request.replicas;
  out += "## Decode roofline\n\n";
  out += "Step time = max(bytes / bandwidth, FLOPs / FLOP rate) per GPU; tokens/s per sequence at "
         "batch 1, summed over the batch at the largest batch that fits.\n\n";
  out += "| TP | context | batch 1 ms/token | batch 1 tokens/s | largest batch | step ms | "
         "tokens/s per replica | tokens/s all replicas | bound |\n";
  out += "|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const TpPlan& p : plan.tps) {
    for (const ContextRow& c : p.contexts) {
      // A context no sequence fits at still gets its batch-1 time, marked as hypothetical.
      fmt::format_to(o, "| {} | {} | {}{} | {} |", p.tp, context_label(c),
                     ms(c.batch1.seconds()), c.max_sequences >= 1 ? "" : " (no fit)",
                     rate(1.0 / c.batch1.seconds()));
      if (c.at_max_batch) {
        const double tps = static_cast<double>(c.max_sequences) / c.at_max_batch->seconds();
        fmt::format_to(o, " {} | {} | {} | {} | {} |\n", c.max_sequences,
                       ms(c.at_max_batch->seconds()), rate(tps),
                       rate(tps * static_cast<double>(replicas)), bound(*c.at_max_batch));
      } else {
        out += " 0 | - | - | - | does not fit |\n";
      }
    }
  }
  out += "\n";
}

void batch_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  const std::vector<int64_t>& batches = plan.request.batches;
  out += "## Decode at the requested batch sizes\n\n";
  out += "Step ms / tokens/s per replica; (C) compute-bound; a cell marked \"no fit\" needs more "
         "KV than the pool holds.\n\n| TP | context |";
  for (int64_t b : batches) fmt::format_to(o, " batch {} |", b);
  out += "\n|---:|---:|";
  for (size_t i = 0; i < batches.size(); ++i) out += "---:|";
  out += "\n";
  for (const TpPlan& p : plan.tps) {
    for (size_t c = 0; c < p.contexts.size(); ++c) {
      fmt::format_to(o, "| {} | {} |", p.tp, context_label(p.contexts[c]));
      for (size_t i = 0; i < batches.size(); ++i) {
        // plan_tp stores the (context, batch) pairs context-major, in request order.
        const BatchRow& b = p.batches[c * batches.size() + i];
        fmt::format_to(o, " {} / {}{}{} |", ms(b.step.seconds()),
                       rate(static_cast<double>(b.batch) / b.step.seconds()),
                       b.step.compute_bound() ? " (C)" : "", b.fits ? "" : " no fit");
      }
      out += "\n";
    }
  }
  out += "\n";
}

// "207 (TP 1), 207 (TP 2)": per TP size, or one number when they agree.
std::string weights_only_crossovers(const Plan& plan) {
  std::vector<std::string> parts;
  bool all_same = true;
  for (const TpPlan& p : plan.tps) {
    const std::string b = p.compute_bound_batch_weights_only
                              ? fmt::format("{}", *p.compute_bound_batch_weights_only)
                              : std::string("never");
    if (!parts.empty() && !parts.front().starts_with(b + " ")) all_same = false;
    parts.push_back(fmt::format("{} (TP {})", b, p.tp));
  }
  if (all_same) return parts.front().substr(0, parts.front().find(' '));
  return fmt::format("{}", fmt::join(parts, ", "));
}

void intensity_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  fmt::format_to(o,
                 "## Arithmetic intensity\n\nThe GPU's ridge point is {:.1f} FLOP/byte; a step "
                 "below it is memory-bound. Counting weights only (no KV), decode turns "
                 "compute-bound at batch {}.\n\n",
                 ridge_intensity(plan.request.gpu), weights_only_crossovers(plan));
  out += "| TP | context | FLOP/byte at batch 1 | FLOP/byte at largest batch | batch at which "
         "decode turns compute-bound |\n";
  out += "|---:|---:|---:|---:|---|\n";
  for (const TpPlan& p : plan.tps) {
    for (const ContextRow& c : p.contexts) {
      const std::string at_max =
          c.at_max_batch ? fmt::format("{:.1f}", c.at_max_batch->intensity()) : std::string("-");
      std::string crossover = "never (KV reads grow as fast as FLOPs)";
      if (c.compute_bound_batch) {
        crossover = *c.compute_bound_batch <= c.max_sequences
                        ? fmt::format("{}", *c.compute_bound_batch)
                        : fmt::format("{} (more than fit: {})", *c.compute_bound_batch,
                                      c.max_sequences);
      }
      fmt::format_to(o, "| {} | {} | {:.2f} | {} | {} |\n", p.tp, context_label(c),
                     c.batch1.intensity(), at_max, crossover);
    }
  }
  out += "\n";
}

void prefill_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  out += "## Prefill (one prompt; the time to first token)\n\n";
  out += "| TP | prompt | ms | tokens/s | bound |\n|---:|---:|---:|---:|---|\n";
  for (const TpPlan& p : plan.tps) {
    for (const PrefillRow& r : p.prefills) {
      fmt::format_to(o, "| {} | {} | {} | {} | {} |\n", p.tp, r.prompt, ms(r.step.seconds()),
                     rate(static_cast<double>(r.prompt) / r.step.seconds()), bound(r.step));
    }
  }
  out += "\n";
}

void allreduce_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  fmt::format_to(o,
                 "## Tensor-parallel all-reduce per token\n\nTwo all-reduces of the hidden state "
                 "per layer; a ring sends 2 (TP-1)/TP of the message from each GPU. The time is "
                 "bandwidth only, at {:.0f} GB/s per direction; each all-reduce also costs a "
                 "latency of some microseconds, {} per token.\n\n",
                 plan.request.gpu.link_bytes_per_s / 1e9,
                 2 * plan.request.model.config.num_hidden_layers);
  out += "| TP | all-reduced per token | sent per GPU per token | link time per token |\n";
  out += "|---:|---:|---:|---:|\n";
  for (const TpPlan& p : plan.tps) {
    fmt::format_to(o, "| {} | {:.3f} MiB | {:.3f} MiB | {:.2f} us |\n", p.tp,
                   static_cast<double>(p.allreduce_message_bytes_per_token) / kMiB,
                   p.allreduce_bytes_per_gpu_per_token / kMiB, p.allreduce_link_s_per_token * 1e6);
  }
  out += "\n";
}

void precision_table(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  out += "## Weight memory by precision (GiB per GPU)\n\n| format |";
  for (int64_t tp : plan.request.tp_sizes) fmt::format_to(o, " TP {} |", tp);
  out += "\n|---|";
  for (size_t i = 0; i < plan.request.tp_sizes.size(); ++i) out += "---:|";
  out += "\n";
  std::string current;
  for (const PrecisionRow& row : plan.by_precision) {
    if (row.format != current) {
      if (!current.empty()) out += "\n";
      current = row.format;
      fmt::format_to(o, "| {} |", row.format);
    }
    if (!row.bytes_per_gpu) {
      out += " cannot shard |";
    } else {
      fmt::format_to(o, " {}{} |", gib(static_cast<double>(*row.bytes_per_gpu)),
                     row.fits ? "" : " (does not fit)");
    }
  }
  out += "\n\n";
  for (const PrecisionRow& row : plan.by_precision) {
    if (!row.error.empty()) fmt::format_to(o, "- {} at TP {}: {}\n", row.format, row.tp, row.error);
  }
}

void speculative_section(std::string& out, const Plan& plan) {
  auto o = std::back_inserter(out);
  const SpeculativeRow& s = plan.speculative;
  out += "## Speculative decoding\n\n";
  fmt::format_to(o,
                 "Acceptance a = {:.2f}, K = {} drafts per verify, draft cost c = {:.3f} of a "
                 "target pass: E[accepted] = sum_{{i=1..K}} a^i = {:.3f}, tokens per verify = "
                 "{:.3f}, speedup = (E[accepted] + 1) / (1 + K c) = {:.2f}x.\n",
                 s.params.acceptance, s.params.k, s.params.draft_cost, s.expected_accepted,
                 s.tokens_per_verify, s.speedup);
  const TpPlan& p = plan.tps.front();
  const ContextRow& c = p.contexts.front();
  fmt::format_to(o,
                 "At TP {} and context {}, batch-1 decode goes from {} to {} ms/token (valid "
                 "while the verify pass of K+1 tokens stays memory-bound).\n\n",
                 p.tp, c.context, ms(c.batch1.seconds()), ms(c.batch1.seconds() / s.speedup));
}

void comparison_table(std::string& out, const Comparison& c) {
  auto o = std::back_inserter(out);
  fmt::format_to(o, "## Measured vs predicted ({}: {}, TP {}{})\n\n", c.source, c.gpu, c.tp,
                 c.date.empty() ? "" : ", " + c.date);
  out += "| quantity | at | predicted | measured | achieved share of prediction | benchmark's "
         "roofline |\n|---|---|---:|---:|---:|---:|\n";
  for (const ComparisonRow& r : c.rows) {
    fmt::format_to(o, "| {} | {} | {:.3f} | {:.3f} | {:.0f}% | {} |\n", r.quantity, r.at,
                   r.predicted, r.measured, 100.0 * r.achieved(),
                   r.benchmark_roofline ? fmt::format("{:.3f}", *r.benchmark_roofline) : "-");
  }
  if (!c.notes.empty()) out += "\n";
  for (const std::string& note : c.notes) fmt::format_to(o, "- {}\n", note);
  out += "\n";
}

void notes(std::string& out, const Plan& plan) {
  bool beyond = false;
  for (const ContextRow& c : plan.tps.front().contexts) beyond = beyond || c.beyond_model_max;
  out += "## Notes\n\n";
  if (beyond) {
    out += fmt::format("- * marks contexts beyond the model's max_position_embeddings ({}).\n",
                       plan.request.model.config.max_position_embeddings);
  }
  out += "- Memory is GiB (2^30 bytes); bandwidth TB/s and FLOP/s are decimal (10^12).\n"
         "- Decode bytes = weights read per pass (layers, norms, LM head) + batch x context x KV "
         "per token; FLOPs = batch x (2 x matmul params + context x 4 x layers x q heads x "
         "head_dim), all per GPU. Activations and all-reduce time are not in the roofline.\n"
         "- The KV pool is what the worker allocates for the same free memory: both call "
         "model::kv_pool_bytes and model::kv_blocks_that_fit.\n";
}

}  // namespace

std::string render_markdown(const Plan& plan, const std::optional<Comparison>& comparison) {
  std::string out;
  header(out, plan);
  memory_table(out, plan);
  sequences_table(out, plan);
  decode_table(out, plan);
  batch_table(out, plan);
  intensity_table(out, plan);
  prefill_table(out, plan);
  allreduce_table(out, plan);
  precision_table(out, plan);
  speculative_section(out, plan);
  if (comparison) comparison_table(out, *comparison);
  notes(out, plan);
  return out;
}

}  // namespace shardserve::planner
