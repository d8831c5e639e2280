// perplexity: the held-out perplexity of a model, computed by the project's own CPU engine
// with the protocol of models/eval/perplexity.json: the text's ids (no special tokens) cut into
// non-overlapping windows of W tokens; each window fed as [BOS] + window[0 .. W-2]; the NLL of
// every window token given its prefix; perplexity = exp(total NLL / total tokens).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "comm/collective.h"
#include "common/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/llama_weights.h"
#include "worker/model_runner.h"

namespace shardserve {
namespace {

// Windows evaluated per forward step: enough rows to keep the matmuls efficient.
constexpr int kWindowsPerStep = 4;
constexpr int kBlockSize = 16;

// -log softmax(row)[target], in double.
double nll(const float* row, int64_t vocab, int32_t target) {
  double max = row[0];
  for (int64_t v = 1; v < vocab; ++v) max = std::max<double>(max, row[v]);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
  return std::log(sum) + max - row[target];
}

int run(int argc, char** argv) {
  CLI::App app{"Held-out perplexity with the CPU reference engine"};
  std::string model_dir, text_path, json_path;
  int window = 256, max_windows = 64;
  app.add_option("--model", model_dir, "HuggingFace model directory")->required();
  app.add_option("--text", text_path, "UTF-8 text file")->required()->check(CLI::ExistingFile);
  app.add_option("--window", window, "tokens per window")->check(CLI::Range(2, 1 << 20));
  app.add_option("--max-windows", max_windows, "windows evaluated at most")
      ->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "write per-window NLL sums and the result here");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  const model::ModelConfig config = model::load_model_config(model_dir);
  const auto tokenizer = model::load_tokenizer(model_dir);
  require(tokenizer->bos_id().has_value() || config.bos_token_id.has_value(),
          "{}: the protocol needs a BOS token and the model has none", model_dir);
  const int32_t bos = tokenizer->bos_id().value_or(config.bos_token_id.value_or(0));
  require(window <= config.max_position_embeddings, "--window {} exceeds the context length {}",
          window, config.max_position_embeddings);
  std::ifstream in(text_path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::vector<int32_t> ids = tokenizer->encode(buffer.str(), false);
  const int windows = std::min<int64_t>(max_windows, static_cast<int64_t>(ids.size()) / window);
  require(windows > 0, "{} holds {} tokens, fewer than one window of {}", text_path, ids.size(),
          window);

  const int blocks_per_window = (window + kBlockSize - 1) / kBlockSize;
  comm::SingleRankCollective group;
  const auto shard = worker::make_shard(config, 0, 1);
  const auto checkpoint = model::Checkpoint::open(model_dir);
  worker::ModelRunner runner(config, shard, worker::load_llama_weights(checkpoint, config, shard),
                             kWindowsPerStep * blocks_per_window, kBlockSize, group);

  std::vector<double> window_nll;
  for (int first = 0; first < windows; first += kWindowsPerStep) {
    messages::StepPlan plan;
    const int count = std::min(kWindowsPerStep, windows - first);
    for (int w = 0; w < count; ++w) {
      const int32_t* tokens = ids.data() + static_cast<int64_t>(first + w) * window;
      messages::SequenceWork s;
      s.seq_id = static_cast<uint64_t>(first + w + 1);
      s.num_tokens = window;
      s.num_logits = window;
      s.prompt_len = window;
      s.token_offset = plan.total_tokens();
      s.block_offset = static_cast<int32_t>(plan.block_ids.size());
      s.num_blocks = blocks_per_window;
      plan.token_ids.push_back(bos);
      plan.token_ids.insert(plan.token_ids.end(), tokens, tokens + window - 1);
      for (int b = 0; b < blocks_per_window; ++b) plan.block_ids.push_back(w * blocks_per_window + b);
      plan.seqs.push_back(s);
    }
    const worker::StepLogits logits = runner.forward(plan);
    for (int w = 0; w < count; ++w) {
      const int32_t* tokens = ids.data() + static_cast<int64_t>(first + w) * window;
      double sum = 0;
      for (int i = 0; i < window; ++i) sum += nll(logits.row(int64_t{w} * window + i), logits.vocab, tokens[i]);
      window_nll.push_back(sum);
    }
    std::fprintf(stderr, "\r%d/%d windows", first + count, windows);
  }
  std::fprintf(stderr, "\n");
  double total = 0;
  for (double v : window_nll) total += v;
  const int64_t tokens = int64_t{windows} * window;
  const double ppl = std::exp(total / tokens);
  std::printf("%s: %d windows of %d tokens, NLL %.6f per token, perplexity %.4f\n",
              model_dir.c_str(), windows, window, total / tokens, ppl);
  if (!json_path.empty()) {
    nlohmann::json out = {{"model", model_dir}, {"text", text_path}, {"window", window},
                          {"windows", windows}, {"tokens", tokens}, {"nll_total", total},
                          {"perplexity", ppl}, {"window_nll", window_nll}};
    std::ofstream(json_path) << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace shardserve

int main(int argc, char** argv) {
  return shardserve::run_reporting_errors("perplexity", shardserve::run, argc, argv);
}
