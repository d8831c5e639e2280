#pragma once
// The service's settings: one TOML file, command-line flags overriding it, validated once at
// start-up with messages that name the setting. The coordinator resolves and validates the
// configuration and sends the effective one (to_toml) to every worker in the start-up
// handshake, so the workers need no arguments and every rank runs with the same settings.
//
// File layout (every key optional except `model`; unknown keys are errors, to catch typos):
//   model = "/models/llama-3-8b"      served_model_name = "llama-3-8b"
//   tp = 2                            replicas = 0        # 0: (world size - 1) / tp
//   log_level = "info"                device = "cpu"      # or "cuda" (a CUDA build, a GPU)
//   weights = "checkpoint"            # or "random-w4g128" / "random-bf16" (device = "cuda"):
//                                     # random weights of config.json's shape, for benchmarks
//   [kv]         block_size, num_blocks, memory_bytes ("4GiB" or an integer), memory_fraction
//   [scheduler]  max_num_seqs, max_num_batched_tokens, max_model_len, enable_prefix_caching,
//                enable_chunked_prefill, watermark
//   [ports]      host, zmq, http, metrics, metrics_host
//   [runtime]    startup_timeout_s, step_timeout_s, shutdown_grace_s, on_replica_failure,
//                heartbeat_interval_s, coordinator_timeout_s
//   [speculative] method ("none", "draft", "ngram"), draft_model, num_speculative_tokens,
//                adaptive, draft_cost, ngram_min, ngram_max, draft_placement
//                (docs/speculative.md)
//   [security]   curve_secret_key_file, curve_public_key_file, authorized_clients_dir,
//                allow_plaintext
//   [limits]     max_request_seconds, stream_idle_timeout_s (per-request time limits at the
//                ZeroMQ front end; docs/protocol.md#time-limits)
// Each key has a flag: `kv.block_size` is --kv-block-size, `tp` is --tp (see settings()).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "model/model_config.h"

namespace CLI {
class App;
}

namespace shardserve::config {

struct KvSettings {
  int32_t block_size = 16;        // tokens per KV block
  // The pool per rank, first that applies: num_blocks > 0 (exactly), memory_bytes > 0 (a byte
  // budget), else memory_fraction of the memory free after the weights (on the CPU path:
  // MemAvailable shared among the job's ranks on the host). Never more blocks than
  // max_num_seqs full-length sequences can use.
  int64_t num_blocks = 0;
  int64_t memory_bytes = 0;
  double memory_fraction = 0.9;
};

struct SchedulerSettings {
  int32_t max_num_seqs = 256;
  int32_t max_num_batched_tokens = 2048;
  int32_t max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  double watermark = 0.01;
};

// For the front ends of later issues; validated now so a bad file fails at start-up.
struct PortSettings {
  // The ZeroMQ front end's address: loopback unless configured (another address needs
  // [security] CURVE or security.allow_plaintext).
  std::string host = "127.0.0.1";
  int32_t zmq = 5555;
  int32_t http = 8000;
  // Prometheus /metrics: the coordinator on `metrics`, worker world rank w on metrics + w, each
  // bound to metrics_host (loopback unless configured; "0.0.0.0" for a remote Prometheus).
  // 0 turns the endpoints off. See docs/metrics.md.
  int32_t metrics = 9090;
  std::string metrics_host = "127.0.0.1";
};

struct RuntimeSettings {
  double startup_timeout_s = 600.0;  // model loading + handshake, every rank
  double step_timeout_s = 120.0;     // a replica that returns no result within it is dead
  double shutdown_grace_s = 30.0;    // SIGTERM/SIGINT: running requests may finish within it

  // Faults (docs/RELIABILITY.md "Faults"; mpirun needs --enable-recovery
  // --mca orte_abort_on_non_zero_status 0, else Open MPI ends the job at a rank's death).
  // A replica that failed (a worker's error, or no step result within step_timeout_s):
  // "failover" moves its requests to the other replicas (they continue where their stream
  // stopped; with none left they end with an error and the coordinator exits 1), "abort" ends
  // every request with the error and the coordinator exits 1.
  std::string on_replica_failure = "failover";
  double heartbeat_interval_s = 1.0;    // the coordinator's Heartbeat to a replica idle this long
  double coordinator_timeout_s = 15.0;  // a serving worker that hears nothing this long exits 1
};

// Speculative decoding (docs/speculative.md). The coordinator's scheduler gets the method, K and
// the adaptive / n-gram settings (runtime/scheduler_settings.cc); the workers load the draft.
struct SpeculativeSettings {
  std::string method = "none";        // "none", "draft" (a draft model), "ngram" (prompt lookup)
  std::string draft_model;            // method = "draft": the draft's HuggingFace directory
  int32_t num_speculative_tokens = 4; // K: draft tokens per verify (the most, with adaptive)
  bool adaptive = false;              // per-request K from the measured acceptance
  double draft_cost = 0.05;           // adaptive: one draft token's cost / a target step
  int32_t ngram_min = 1;              // prompt lookup: suffix lengths tried, longest first
  int32_t ngram_max = 3;
  // Where the draft runs with tp > 1: "rank_zero" (whole on tensor-parallel rank 0, drafts
  // broadcast) or "every_rank" (sharded over the replica's group like the target). rank_zero by
  // default: measured faster on the CPU at tp 2 for the demo pair (docs/speculative.md), and the
  // usual choice on GPUs when the draft fits next to the target's shard.
  std::string draft_placement = "rank_zero";
};

// The ZeroMQ front end's CURVE keys (api/curve.h, docs/deploy.md). Only file names: the keys
// themselves never appear in the configuration, on a command line or in the handshake.
struct SecuritySettings {
  std::string curve_secret_key_file;   // "": CURVE off (the front end then serves loopback only)
  std::string curve_public_key_file;   // optional: must be the secret key's pair
  std::string authorized_clients_dir;  // the allowed clients' *.pub files; required with CURVE
  bool allow_plaintext = false;        // serve a non-loopback address without CURVE
};

// Per-request time limits, enforced by the ZeroMQ front end (api/front_end.h). 0: none.
struct LimitsSettings {
  // A request's deadline from arrival: the default for submits without timeout_s and the largest
  // timeout_s accepted. Past it the request is cancelled and answered finish_reason "timeout".
  double max_request_seconds = 0.0;
  // A live request that gets no new token for this long (a stuck replica, starvation behind
  // preemption, a queue that does not move) is cancelled and answered error "timeout".
  double stream_idle_timeout_s = 0.0;
};

struct ServiceConfig {
  std::string model;              // HuggingFace model directory, same path on every host
  std::string served_model_name;  // "" : the model directory's name
  int32_t tp = 1;                 // tensor-parallel ranks per replica
  int32_t replicas = 0;           // 0: (world size - 1) / tp
  std::string log_level = "info";
  std::string device = "cpu";     // the workers' forward pass: "cpu" or "cuda"
  // "checkpoint": the model directory's safetensors. "random-w4g128" / "random-bf16": random
  // weights of config.json's shape made on the GPU (4-bit g128 as the GPTQ/AWQ loader lays them
  // out, or bf16), so that a serving benchmark of a 70B shape needs no 40 GB checkpoint.
  std::string weights = "checkpoint";
  KvSettings kv;
  SchedulerSettings scheduler;
  PortSettings ports;
  RuntimeSettings runtime;
  SpeculativeSettings speculative;
  SecuritySettings security;
  LimitsSettings limits;

  friend bool operator==(const ServiceConfig&, const ServiceConfig&);
};

// One setting: its file key, its flag, and where it lives in ServiceConfig.
struct Setting {
  using Ref = std::variant<int32_t*, int64_t*, double*, bool*, std::string*>;
  std::string key;   // "kv.block_size"
  std::string flag;  // "--kv-block-size"
  std::string help;
  std::function<Ref(ServiceConfig&)> ref;
  bool bytes = false;  // accepts "4GiB"-style sizes as well as integers
};
const std::vector<Setting>& settings();

// Throws Error naming the source and the key: unknown keys, wrong types, TOML syntax.
ServiceConfig parse_toml(std::string_view text, std::string_view source);
ServiceConfig load_toml_file(const std::filesystem::path& path);
// Every setting, in file layout; parse_toml(to_toml(c)) == c.
std::string to_toml(const ServiceConfig& config);

// "4GiB", "512MiB", "1.5GB", "123" -> bytes. Throws naming `what`.
int64_t parse_bytes(std::string_view text, std::string_view what);

// --config FILE plus one flag per setting on a CLI11 app. After app.parse(), resolve() reads
// the file (if given) over the defaults and applies the flags that were given over that.
class CommandLine {
 public:
  explicit CommandLine(CLI::App& app);
  ~CommandLine();
  ServiceConfig resolve() const;
  const std::string& config_file() const { return *config_file_; }

 private:
  std::unique_ptr<std::string> config_file_;
  struct Flag;
  std::vector<std::unique_ptr<Flag>> flags_;
};

// Checks of the settings on their own. Error messages name the setting and its value:
// "kv.memory_fraction = 1.5 must be in (0, 1]".
void validate(const ServiceConfig& config);
// The [security] part of validate(): CURVE needs the secret key file and the clients' directory.
void validate_security(const SecuritySettings& security);
// The [limits] part of validate(): each a finite number of seconds >= 0, at most 30 days.
void validate_limits(const LimitsSettings& limits);
// Checks against the model: "tp = 3 does not divide num_attention_heads = 4", max_model_len
// within the context length, the KV-head split; with speculative.method = "draft", the draft's
// config.json against the target (check_draft_model).
void validate_for_model(const ServiceConfig& config, const model::ModelConfig& model);
// The draft model of speculative.method = "draft" against the target: the same vocabulary size,
// BOS/EOS ids and tokenizer files (byte for byte), a context of at least max_model_len, and (with
// draft_placement = "every_rank") the tp split of its heads and FFN. Throws naming
// speculative.draft_model and the mismatch.
void check_draft_model(const ServiceConfig& config, const model::ModelConfig& target,
                       const model::ModelConfig& draft);

// Resolves replicas = 0 from the world size and checks world size = 1 + replicas * tp.
ServiceConfig resolve_for_world(ServiceConfig config, int world_size);

// max_model_len, or the model's context length when it is 0.
int32_t effective_max_model_len(const ServiceConfig& config, const model::ModelConfig& model);
// served_model_name, or the model directory's name.
std::string effective_model_name(const ServiceConfig& config);

}  // namespace shardserve::config
