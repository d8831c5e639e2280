#pragma once
// The models an operator can name instead of pointing at a checkpoint: the exact config.json
// that HuggingFace publishes for each, parsed by parse_model_config like any file, so a preset
// and a downloaded config can never disagree about the architecture.
#include <string>
#include <string_view>
#include <vector>

#include "model/model_config.h"

namespace shardserve::planner {

struct ModelSpec {
  std::string name;  // the preset's HF id, or the path it was read from
  model::ModelConfig config;
};

// llama-2-7b, llama-2-13b, llama-2-70b, llama-3.1-8b, llama-3.1-70b, llama-3.1-405b.
std::vector<std::string> model_preset_names();

// A preset name (case-insensitive), a model directory holding config.json, or a path to a
// config.json-style file (whose quantization_config, if any, lands in config.quantization).
// Throws naming the presets when it is none of them.
ModelSpec load_model_spec(const std::string& spec);

}  // namespace shardserve::planner
