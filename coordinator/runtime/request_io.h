#pragma once
// Requests in and results out, as JSON lines, for the batch front end of the coordinator
// (`--requests FILE`), until the ZeroMQ front end lands.
//
// A request line:
//   {"id": "r1", "prompt_ids": [1, 2, 3], "max_tokens": 16, "temperature": 0.0, "top_p": 1.0,
//    "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "frequency_penalty": 0.0,
//    "presence_penalty": 0.0, "seed": 0, "logprobs": 0, "stop_token_ids": [], "ignore_eos": false,
//    "priority": 0}
// "id" and one of "prompt_ids" / "prompt" (text, encoded with the model's tokenizer, BOS added as
// its tokenizer_config.json says) are required; "stop": ["text", ...] ends generation at a stop
// string (needs the tokenizer). Unknown keys are errors.
//
// A result line (one per request, when it finishes):
//   {"id": "r1", "replica": 0, "prompt_tokens": 3, "output_ids": [...], "output_tokens": 16,
//    "finish_reason": "length", "finish_detail": "max_tokens", "text": "..." (with a tokenizer),
//    "logprobs": [...]   (only when the request asked for logprobs),
//    "ttft_s": 0.12, "latency_s": 1.5}   (from submission to the first token / the last, as the
//                                        coordinator's poll saw them: serving benchmarks)
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/request.h"
#include "coordinator/request_output.h"
#include "model/tokenizer/tokenizer.h"

namespace shardserve::runtime {

// `where` names the source in errors ("requests.jsonl:3"). `tokenizer` may be null: then text
// prompts and stop strings are refused and outputs carry no text.
coordinator::RequestSpec parse_request(const nlohmann::json& j, const std::string& where,
                                       const model::Tokenizer* tokenizer = nullptr);
// Blank lines and lines starting with '#' are skipped; arrival_time = line number.
std::vector<coordinator::RequestSpec> read_requests(const std::filesystem::path& path,
                                                    const model::Tokenizer* tokenizer = nullptr);
// "1,2,3" -> {1, 2, 3}.
std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what);

// Accumulates a request's outputs; the finished record is returned by the output finishing it.
class OutputCollector {
 public:
  using Clock = std::chrono::steady_clock;
  // `submitted`: when the request went to the engine; `now`: when its output was polled.
  void expect(const std::string& request_id, int replica, bool logprobs,
              Clock::time_point submitted = Clock::now());
  std::optional<nlohmann::json> add(const coordinator::RequestOutput& out,
                                    Clock::time_point now = Clock::now());
  std::size_t finished() const { return finished_; }

 private:
  struct Partial {
    int replica = -1;
    bool logprobs = false;
    Clock::time_point submitted;
    std::optional<Clock::time_point> first_token;
    std::vector<int32_t> ids;
    std::vector<float> logprob_values;
    std::string text;
  };
  std::unordered_map<std::string, Partial> partial_;
  std::size_t finished_ = 0;
};

}  // namespace shardserve::runtime
