#include "config/service_config.h"

#include <CLI/CLI.hpp>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"

namespace shardserve::config {

bool operator==(const ServiceConfig& a, const ServiceConfig& b) {
  // Every setting is reachable through settings(): compare through it, so a new field cannot
  // be forgotten here.
  auto& x = const_cast<ServiceConfig&>(a);
  auto& y = const_cast<ServiceConfig&>(b);
  for (const auto& s : settings()) {
    const bool same = std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          return *p == *std::get<T*>(s.ref(y));
        },
        s.ref(x));
    if (!same) return false;
  }
  return true;
}

const std::vector<Setting>& settings() {
  using C = ServiceConfig;
  static const std::vector<Setting> all = {
      {"model", "--model", "HuggingFace model directory (config.json + safetensors)",
       [](C& c) { return Setting::Ref(&c.model); }},
      {"served_model_name", "--served-model-name", "model name clients use (default: directory name)",
       [](C& c) { return Setting::Ref(&c.served_model_name); }},
      {"tp", "--tp", "tensor-parallel ranks per replica", [](C& c) { return Setting::Ref(&c.tp); }},
      {"replicas", "--replicas", "replicas (0: (world size - 1) / tp)",
       [](C& c) { return Setting::Ref(&c.replicas); }},
      {"log_level", "--log-level", "trace, debug, info, warn, error, critical, off",
       [](C& c) { return Setting::Ref(&c.log_level); }},
      {"device", "--device", "the workers' forward pass: cpu or cuda",
       [](C& c) { return Setting::Ref(&c.device); }},
      {"weights", "--weights",
       "checkpoint, or random-w4g128 / random-bf16 (device = cuda; benchmarks)",
       [](C& c) { return Setting::Ref(&c.weights); }},
      {"kv.block_size", "--kv-block-size", "tokens per KV block",
       [](C& c) { return Setting::Ref(&c.kv.block_size); }},
      {"kv.num_blocks", "--kv-num-blocks", "KV blocks per rank (0: from memory_bytes / fraction)",
       [](C& c) { return Setting::Ref(&c.kv.num_blocks); }},
      {"kv.memory_bytes", "--kv-memory-bytes", "KV pool bytes per rank, e.g. 4GiB (0: fraction)",
       [](C& c) { return Setting::Ref(&c.kv.memory_bytes); }, true},
      {"kv.memory_fraction", "--kv-memory-fraction", "fraction of free memory for the KV pool",
       [](C& c) { return Setting::Ref(&c.kv.memory_fraction); }},
      {"scheduler.max_num_seqs", "--max-num-seqs", "running sequences per replica at most",
       [](C& c) { return Setting::Ref(&c.scheduler.max_num_seqs); }},
      {"scheduler.max_num_batched_tokens", "--max-num-batched-tokens", "tokens per step at most",
       [](C& c) { return Setting::Ref(&c.scheduler.max_num_batched_tokens); }},
      {"scheduler.max_model_len", "--max-model-len", "context length (0: the model's)",
       [](C& c) { return Setting::Ref(&c.scheduler.max_model_len); }},
      {"scheduler.enable_prefix_caching", "--enable-prefix-caching", "true or false",
       [](C& c) { return Setting::Ref(&c.scheduler.enable_prefix_caching); }},
      {"scheduler.enable_chunked_prefill", "--enable-chunked-prefill", "true or false",
       [](C& c) { return Setting::Ref(&c.scheduler.enable_chunked_prefill); }},
      {"scheduler.watermark", "--watermark", "fraction of the KV pool admission keeps free",
       [](C& c) { return Setting::Ref(&c.scheduler.watermark); }},
      {"ports.host", "--host", "address the front ends bind",
       [](C& c) { return Setting::Ref(&c.ports.host); }},
      {"ports.zmq", "--zmq-port", "ZeroMQ request port", [](C& c) { return Setting::Ref(&c.ports.zmq); }},
      {"ports.http", "--http-port", "HTTP API port", [](C& c) { return Setting::Ref(&c.ports.http); }},
      {"ports.metrics", "--metrics-port",
       "Prometheus metrics port of the coordinator; worker rank w uses it + w (0: off)",
       [](C& c) { return Setting::Ref(&c.ports.metrics); }},
      {"ports.metrics_host", "--metrics-host", "address the metrics endpoints bind",
       [](C& c) { return Setting::Ref(&c.ports.metrics_host); }},
      {"runtime.startup_timeout_s", "--startup-timeout", "seconds for loading and the handshake",
       [](C& c) { return Setting::Ref(&c.runtime.startup_timeout_s); }},
      {"runtime.step_timeout_s", "--step-timeout", "seconds a replica may take for one step",
       [](C& c) { return Setting::Ref(&c.runtime.step_timeout_s); }},
      {"runtime.shutdown_grace_s", "--shutdown-grace", "seconds running requests get on SIGTERM",
       [](C& c) { return Setting::Ref(&c.runtime.shutdown_grace_s); }},
      // Faults (docs/RELIABILITY.md).
      {"runtime.on_replica_failure", "--on-replica-failure",
       "failover (move a failed replica's requests to the others) or abort",
       [](C& c) { return Setting::Ref(&c.runtime.on_replica_failure); }},
      {"runtime.heartbeat_interval_s", "--heartbeat-interval",
       "seconds of silence after which the coordinator sends a replica a heartbeat",
       [](C& c) { return Setting::Ref(&c.runtime.heartbeat_interval_s); }},
      {"runtime.coordinator_timeout_s", "--coordinator-timeout",
       "seconds without a coordinator message after which a serving worker exits",
       [](C& c) { return Setting::Ref(&c.runtime.coordinator_timeout_s); }},
      {"speculative.method", "--speculative-method", "none, draft (a draft model) or ngram",
       [](C& c) { return Setting::Ref(&c.speculative.method); }},
      {"speculative.draft_model", "--speculative-draft-model",
       "draft model directory (same tokenizer) for method = draft",
       [](C& c) { return Setting::Ref(&c.speculative.draft_model); }},
      {"speculative.num_speculative_tokens", "--num-speculative-tokens",
       "draft tokens per verify (K)",
       [](C& c) { return Setting::Ref(&c.speculative.num_speculative_tokens); }},
      {"speculative.adaptive", "--speculative-adaptive", "adaptive K per request: true or false",
       [](C& c) { return Setting::Ref(&c.speculative.adaptive); }},
      {"speculative.draft_cost", "--speculative-draft-cost",
       "adaptive K: cost of one draft token relative to a target step",
       [](C& c) { return Setting::Ref(&c.speculative.draft_cost); }},
      {"speculative.ngram_min", "--ngram-min", "prompt lookup: shortest suffix matched",
       [](C& c) { return Setting::Ref(&c.speculative.ngram_min); }},
      {"speculative.ngram_max", "--ngram-max", "prompt lookup: longest suffix matched",
       [](C& c) { return Setting::Ref(&c.speculative.ngram_max); }},
      {"speculative.draft_placement", "--draft-placement",
       "where the draft runs with tp > 1: every_rank or rank_zero",
       [](C& c) { return Setting::Ref(&c.speculative.draft_placement); }},
      // [security]: file names only (api/curve.h).
      {"security.curve_secret_key_file", "--curve-secret-key-file",
       "the front end's CURVE secret key file (mode 0600; '': CURVE off)",
       [](C& c) { return Setting::Ref(&c.security.curve_secret_key_file); }},
      {"security.curve_public_key_file", "--curve-public-key-file",
       "the front end's CURVE public key file (checked against the secret key)",
       [](C& c) { return Setting::Ref(&c.security.curve_public_key_file); }},
      {"security.authorized_clients_dir", "--authorized-clients-dir",
       "directory of the CURVE public keys (*.pub) of the clients let in",
       [](C& c) { return Setting::Ref(&c.security.authorized_clients_dir); }},
      {"security.allow_plaintext", "--allow-plaintext",
       "serve a non-loopback ZeroMQ address without CURVE (a trusted network only)",
       [](C& c) { return Setting::Ref(&c.security.allow_plaintext); }},
      // [limits]: per-request time limits at the ZeroMQ front end.
      {"limits.max_request_seconds", "--max-request-seconds",
       "a request's deadline and the largest timeout_s a submit may ask (0: none)",
       [](C& c) { return Setting::Ref(&c.limits.max_request_seconds); }},
      {"limits.stream_idle_timeout_s", "--stream-idle-timeout",
       "seconds a live request may go without output before it is ended (0: none)",
       [](C& c) { return Setting::Ref(&c.limits.stream_idle_timeout_s); }},
  };
  return all;
}

namespace {

const Setting* find_setting(std::string_view key) {
  for (const auto& s : settings())
    if (s.key == key) return &s;
  return nullptr;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string node_type(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    default: return "a date/time";
  }
}

// Sets one setting from a TOML value; `where` is "file:line: key".
void set_from_toml(ServiceConfig& c, const Setting& s, const toml::node& n, const std::string& where) {
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          require(n.is_string(), "{}: expected a string, got {}", where, node_type(n));
          *p = *n.value<std::string>();
        } else if constexpr (std::is_same_v<T, bool>) {
          require(n.is_boolean(), "{}: expected true or false, got {}", where, node_type(n));
          *p = *n.value<bool>();
        } else if constexpr (std::is_same_v<T, double>) {
          require(n.is_number(), "{}: expected a number, got {}", where, node_type(n));
          *p = *n.value<double>();
        } else {
          if (s.bytes && n.is_string()) {
            *p = parse_bytes(*n.value<std::string>(), where);
            return;
          }
          require(n.is_integer(), "{}: expected an integer{}, got {}", where,
                  s.bytes ? " or a size such as \"4GiB\"" : "", node_type(n));
          const int64_t v = *n.value<int64_t>();
          require(v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max(),
                  "{}: {} is out of range", where, v);
          *p = static_cast<T>(v);
        }
      },
      s.ref(c));
}

// Sets one setting from command-line text.
void set_from_text(ServiceConfig& c, const Setting& s, const std::string& text) {
  const std::string where = fmt::format("{} (setting {})", s.flag, s.key);
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          *p = text;
        } else if constexpr (std::is_same_v<T, bool>) {
          const std::string t = lower(text);
          if (t == "true" || t == "1" || t == "yes" || t == "on") {
            *p = true;
          } else if (t == "false" || t == "0" || t == "no" || t == "off") {
            *p = false;
          } else {
            fail("{} = '{}': expected true or false", where, text);
          }
        } else if constexpr (std::is_same_v<T, double>) {
          std::size_t used = 0;
          double v = 0;
          try {
            v = std::stod(text, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          require(used == text.size() && !text.empty(), "{} = '{}': expected a number", where, text);
          *p = v;
        } else {
          if (s.bytes) {
            *p = parse_bytes(text, where);
            return;
          }
          std::size_t used = 0;
          long long v = 0;
          try {
            v = std::stoll(text, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          require(used == text.size() && !text.empty(), "{} = '{}': expected an integer", where, text);
          require(v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max(),
                  "{} = '{}' is out of range", where, text);
          *p = static_cast<T>(v);
        }
      },
      s.ref(c));
}

std::string toml_quote(const std::string& s) {
  std::ostringstream out;
  out << toml::value<std::string>(s);
  return out.str();
}

void validate_speculative(const SpeculativeSettings& s) {
  require(s.method == "none" || s.method == "draft" || s.method == "ngram",
          "speculative.method = '{}' is not one of none, draft, ngram", s.method);
  require(s.draft_placement == "every_rank" || s.draft_placement == "rank_zero",
          "speculative.draft_placement = '{}' is not one of every_rank, rank_zero",
          s.draft_placement);
  if (s.method == "draft") {
    require(!s.draft_model.empty(),
            "speculative.method = 'draft' needs speculative.draft_model (the draft's directory)");
    require(std::filesystem::exists(std::filesystem::path(s.draft_model) / "config.json"),
            "speculative.draft_model = '{}' has no config.json", s.draft_model);
  } else {
    require(s.draft_model.empty(),
            "speculative.draft_model = '{}' is set but speculative.method = '{}' (use 'draft')",
            s.draft_model, s.method);
  }
  // Bounds of coordinator::SpeculativeConfig (kMaxSpeculativeTokens = 32).
  require(s.num_speculative_tokens >= 1 && s.num_speculative_tokens <= 32,
          "speculative.num_speculative_tokens = {} must be in [1, 32]", s.num_speculative_tokens);
  require(std::isfinite(s.draft_cost) && s.draft_cost >= 0,
          "speculative.draft_cost = {} must be at least 0", s.draft_cost);
  require(s.ngram_min >= 1, "speculative.ngram_min = {} must be at least 1", s.ngram_min);
  require(s.ngram_max >= s.ngram_min,
          "speculative.ngram_max = {} must be at least speculative.ngram_min = {}", s.ngram_max,
          s.ngram_min);
  require(s.ngram_max <= 64, "speculative.ngram_max = {} must be at most 64", s.ngram_max);
}

// The tokenizer files a directory has, by name, with their bytes.
std::map<std::string, std::string> tokenizer_files(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const auto path = std::filesystem::path(dir) / name;
    if (!std::filesystem::exists(path)) continue;
    std::ifstream in(path, std::ios::binary);
    require(static_cast<bool>(in), "{}: cannot be read", path.string());
    std::ostringstream text;
    text << in.rdbuf();
    out[name] = text.str();
  }
  return out;
}

// The tp checks of validate_for_model for one model; `what` names it in the message.
void check_tp_split(int32_t tp, const model::ModelConfig& m, const std::string& what) {
  require(m.num_attention_heads % tp == 0, "tp = {} does not divide {}num_attention_heads = {}",
          tp, what, m.num_attention_heads);
  require(m.intermediate_size % tp == 0, "tp = {} does not divide {}intermediate_size = {}", tp,
          what, m.intermediate_size);
  if (tp <= m.num_key_value_heads) {
    require(m.num_key_value_heads % tp == 0, "tp = {} does not divide {}num_key_value_heads = {}",
            tp, what, m.num_key_value_heads);
  } else {
    require(tp % m.num_key_value_heads == 0,
            "tp = {} is not a multiple of {}num_key_value_heads = {} (KV heads are replicated when "
            "tp exceeds them)",
            tp, what, m.num_key_value_heads);
  }
  require(tp <= m.vocab_size, "tp = {} exceeds {}vocab_size = {}", tp, what, m.vocab_size);
}

}  // namespace

int64_t parse_bytes(std::string_view text, std::string_view what) {
  std::string t(text);
  t.erase(std::remove_if(t.begin(), t.end(), [](unsigned char c) { return std::isspace(c); }),
          t.end());
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(t, &used);
  } catch (const std::exception&) {
    fail("{} = '{}': expected a size such as 4GiB, 512MiB or a number of bytes", what, text);
  }
  const std::string unit = lower(t.substr(used));
  static const std::map<std::string, double> units = {
      {"", 1},         {"b", 1},           {"k", 1e3},     {"kb", 1e3},      {"m", 1e6},
      {"mb", 1e6},     {"g", 1e9},         {"gb", 1e9},    {"t", 1e12},      {"tb", 1e12},
      {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  auto it = units.find(unit);
  require(it != units.end(), "{} = '{}': unknown unit '{}' (use B, KB, MB, GB, KiB, MiB, GiB, TiB)",
          what, text, t.substr(used));
  const double bytes = number * it->second;
  require(std::isfinite(bytes) && bytes >= 0 && bytes < 9.2e18, "{} = '{}' is out of range", what,
          text);
  return static_cast<int64_t>(bytes);
}

ServiceConfig parse_toml(std::string_view text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    fail("config file {}:{}:{}: {}", source, e.source().begin.line, e.source().begin.column,
         e.description());
  }
  ServiceConfig c;
  auto where = [&](const toml::node& n, const std::string& key) {
    return fmt::format("config file {}:{}: {}", source, n.source().begin.line, key);
  };
  auto visit_entry = [&](const std::string& key, const toml::node& n) {
    const Setting* s = find_setting(key);
    require(s != nullptr, "{}: unknown setting (known: see config/service_config.h)", where(n, key));
    set_from_toml(c, *s, n, where(n, key));
  };
  static const std::set<std::string> tables = {"kv", "scheduler", "ports", "runtime",
                                               "speculative", "security", "limits"};
  for (auto&& [k, v] : root) {
    const std::string key(k.str());
    if (v.is_table()) {
      require(tables.count(key) != 0, "{}: unknown table [{}] (known: kv, scheduler, ports, runtime, speculative, security, limits)",
              where(v, key), key);
      for (auto&& [k2, v2] : *v.as_table()) visit_entry(key + "." + std::string(k2.str()), v2);
    } else {
      visit_entry(key, v);
    }
  }
  return c;
}

ServiceConfig load_toml_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "config file {}: cannot be read", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse_toml(text.str(), path.string());
}

std::string to_toml(const ServiceConfig& config) {
  auto& c = const_cast<ServiceConfig&>(config);
  std::ostringstream out;
  std::string table;
  // Top-level keys first, then one table at a time (settings() lists them grouped).
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& s : settings()) {
      const auto dot = s.key.find('.');
      const bool nested = dot != std::string::npos;
      if (nested != (pass == 1)) continue;
      if (nested && s.key.substr(0, dot) != table) {
        table = s.key.substr(0, dot);
        out << "\n[" << table << "]\n";
      }
      out << (nested ? s.key.substr(dot + 1) : s.key) << " = ";
      std::visit(
          [&](auto* p) {
            using T = std::remove_pointer_t<decltype(p)>;
            if constexpr (std::is_same_v<T, std::string>) {
              out << toml_quote(*p);
            } else if constexpr (std::is_same_v<T, bool>) {
              out << (*p ? "true" : "false");
            } else if constexpr (std::is_same_v<T, double>) {
              out << fmt::format("{}", *p);
              if (std::floor(*p) == *p && std::isfinite(*p)) out << ".0";
            } else {
              out << *p;
            }
          },
          s.ref(c));
      out << "\n";
    }
  }
  return out.str();
}

struct CommandLine::Flag {
  const Setting* setting;
  std::string text;
  CLI::Option* option = nullptr;
};

CommandLine::CommandLine(CLI::App& app) : config_file_(std::make_unique<std::string>()) {
  app.add_option("--config", *config_file_, "service configuration file (TOML); flags override it");
  for (const auto& s : settings()) {
    auto f = std::make_unique<Flag>();
    f->setting = &s;
    f->option = app.add_option(s.flag, f->text, s.help + " [" + s.key + "]");
    flags_.push_back(std::move(f));
  }
}

CommandLine::~CommandLine() = default;

ServiceConfig CommandLine::resolve() const {
  ServiceConfig c = config_file_->empty() ? ServiceConfig{} : load_toml_file(*config_file_);
  for (const auto& f : flags_)
    if (f->option->count() > 0) set_from_text(c, *f->setting, f->text);
  return c;
}

void validate(const ServiceConfig& c) {
  require(!c.model.empty(),
          "model is not set: give the model directory in the config file (model = \"/path\") or "
          "with --model");
  require(std::filesystem::is_directory(c.model), "model = '{}' is not a directory", c.model);
  require(std::filesystem::exists(std::filesystem::path(c.model) / "config.json"),
          "model = '{}' has no config.json", c.model);
  require(c.tp >= 1, "tp = {} must be at least 1", c.tp);
  require(c.replicas >= 0, "replicas = {} must be at least 0 (0: from the world size)", c.replicas);
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn",
                                               "error", "critical", "off"};
  require(levels.count(c.log_level) != 0,
          "log_level = '{}' is not one of trace, debug, info, warn, error, critical, off",
          c.log_level);
  require(c.device == "cpu" || c.device == "cuda", "device = '{}' is not one of cpu, cuda",
          c.device);
  require(c.weights == "checkpoint" || c.weights == "random-w4g128" || c.weights == "random-bf16",
          "weights = '{}' is not one of checkpoint, random-w4g128, random-bf16", c.weights);
  require(c.weights == "checkpoint" || c.device == "cuda",
          "weights = '{}' needs device = \"cuda\" (random weights are made on the GPU; the CPU "
          "path serves checkpoints)", c.weights);
  require(c.weights == "checkpoint" || c.speculative.method != "draft",
          "weights = '{}' with speculative.method = \"draft\": a random target accepts no draft "
          "model's tokens; benchmark speculation with a checkpoint", c.weights);
  require(c.kv.block_size >= 1 && c.kv.block_size <= 1024,
          "kv.block_size = {} must be in [1, 1024]", c.kv.block_size);
  require(c.kv.num_blocks >= 0, "kv.num_blocks = {} must be at least 0 (0: from the memory budget)",
          c.kv.num_blocks);
  require(c.kv.memory_bytes >= 0, "kv.memory_bytes = {} must be at least 0", c.kv.memory_bytes);
  require(std::isfinite(c.kv.memory_fraction) && c.kv.memory_fraction > 0 &&
              c.kv.memory_fraction <= 1,
          "kv.memory_fraction = {} must be in (0, 1]", c.kv.memory_fraction);
  const auto& s = c.scheduler;
  require(s.max_num_seqs >= 1, "scheduler.max_num_seqs = {} must be at least 1", s.max_num_seqs);
  require(s.max_num_batched_tokens >= s.max_num_seqs,
          "scheduler.max_num_batched_tokens = {} must be at least scheduler.max_num_seqs = {} "
          "(every running sequence decodes every step)",
          s.max_num_batched_tokens, s.max_num_seqs);
  require(s.max_model_len == 0 || s.max_model_len >= 2,
          "scheduler.max_model_len = {} must be 0 (the model's) or at least 2", s.max_model_len);
  require(std::isfinite(s.watermark) && s.watermark >= 0 && s.watermark < 1,
          "scheduler.watermark = {} must be in [0, 1)", s.watermark);
  require(!c.ports.host.empty(), "ports.host is empty");
  const std::pair<const char*, int32_t> ports[] = {
      {"ports.zmq", c.ports.zmq}, {"ports.http", c.ports.http}, {"ports.metrics", c.ports.metrics}};
  for (const auto& [name, port] : ports)
    require((port >= 1 || (port == 0 && name == std::string_view("ports.metrics"))) &&
                port <= 65535,
            "{} = {} must be in [1, 65535]{}", name, port,
            name == std::string_view("ports.metrics") ? " (or 0: off)" : "");
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = i + 1; j < 3; ++j)
      require(ports[i].second != ports[j].second || ports[i].second == 0,
              "{} = {} equals {} = {}: each port must differ", ports[j].first, ports[j].second,
              ports[i].first, ports[i].second);
  require(!c.ports.metrics_host.empty(), "ports.metrics_host is empty");
  const std::pair<const char*, double> times[] = {
      {"runtime.startup_timeout_s", c.runtime.startup_timeout_s},
      {"runtime.step_timeout_s", c.runtime.step_timeout_s}};
  for (const auto& [name, t] : times)
    require(std::isfinite(t) && t > 0, "{} = {} must be a positive number of seconds", name, t);
  require(std::isfinite(c.runtime.shutdown_grace_s) && c.runtime.shutdown_grace_s >= 0,
          "runtime.shutdown_grace_s = {} must be at least 0", c.runtime.shutdown_grace_s);
  // Faults.
  require(c.runtime.on_replica_failure == "failover" || c.runtime.on_replica_failure == "abort",
          "runtime.on_replica_failure = \"{}\" must be \"failover\" or \"abort\"",
          c.runtime.on_replica_failure);
  for (const auto& [name, t] : {std::pair<const char*, double>{"runtime.heartbeat_interval_s",
                                                               c.runtime.heartbeat_interval_s},
                                {"runtime.coordinator_timeout_s", c.runtime.coordinator_timeout_s}})
    require(std::isfinite(t) && t > 0, "{} = {} must be a positive number of seconds", name, t);
  // A worker must hear several heartbeats within its timeout, or a busy moment looks like death.
  require(c.runtime.coordinator_timeout_s >= 3 * c.runtime.heartbeat_interval_s,
          "runtime.coordinator_timeout_s = {} must be at least 3 x runtime.heartbeat_interval_s = "
          "{}", c.runtime.coordinator_timeout_s, 3 * c.runtime.heartbeat_interval_s);
  validate_speculative(c.speculative);
  validate_security(c.security);
  validate_limits(c.limits);
}

void validate_limits(const LimitsSettings& l) {
  constexpr double kMax = 30.0 * 86400.0;  // api::kMaxTimeoutSeconds: the front end's bound
  const std::pair<const char*, double> limits[] = {
      {"limits.max_request_seconds", l.max_request_seconds},
      {"limits.stream_idle_timeout_s", l.stream_idle_timeout_s}};
  for (const auto& [name, t] : limits)
    require(std::isfinite(t) && t >= 0 && t <= kMax,
            "{} = {} must be a number of seconds in [0, {}] (0: none)", name, t, kMax);
}

void validate_security(const SecuritySettings& s) {
  // The keys' contents are checked where they are used (api/curve.cc); here the layout.
  const bool curve = !s.curve_secret_key_file.empty();
  require(curve || (s.curve_public_key_file.empty() && s.authorized_clients_dir.empty()),
          "security.curve_public_key_file / authorized_clients_dir are set but "
          "security.curve_secret_key_file is not: CURVE needs the server's secret key file");
  if (!curve) return;
  require(!s.authorized_clients_dir.empty(),
          "security.curve_secret_key_file is set but security.authorized_clients_dir is not: name "
          "the directory of the allowed clients' .pub files");
  require(std::filesystem::is_regular_file(s.curve_secret_key_file),
          "security.curve_secret_key_file = '{}' is not a file", s.curve_secret_key_file);
  require(s.curve_public_key_file.empty() || std::filesystem::is_regular_file(s.curve_public_key_file),
          "security.curve_public_key_file = '{}' is not a file", s.curve_public_key_file);
  require(std::filesystem::is_directory(s.authorized_clients_dir),
          "security.authorized_clients_dir = '{}' is not a directory", s.authorized_clients_dir);
}

void validate_for_model(const ServiceConfig& c, const model::ModelConfig& m) {
  check_tp_split(c.tp, m, "");
  require(c.scheduler.max_model_len <= m.max_position_embeddings,
          "scheduler.max_model_len = {} exceeds the model's max_position_embeddings = {}",
          c.scheduler.max_model_len, m.max_position_embeddings);
  const int32_t len = effective_max_model_len(c, m);
  require(c.scheduler.enable_chunked_prefill || c.scheduler.max_num_batched_tokens >= len,
          "scheduler.max_num_batched_tokens = {} must be at least max_model_len = {} when "
          "scheduler.enable_chunked_prefill = false",
          c.scheduler.max_num_batched_tokens, len);
  if (c.speculative.method == "draft")
    check_draft_model(c, m, model::load_model_config(c.speculative.draft_model));
}

void check_draft_model(const ServiceConfig& c, const model::ModelConfig& target,
                       const model::ModelConfig& draft) {
  const std::string& dir = c.speculative.draft_model;
  require(draft.vocab_size == target.vocab_size,
          "speculative.draft_model = '{}' has vocab_size = {}, the target's is {}: the draft must "
          "share the target's tokenizer",
          dir, draft.vocab_size, target.vocab_size);
  require(draft.bos_token_id == target.bos_token_id && draft.eos_token_ids == target.eos_token_ids,
          "speculative.draft_model = '{}' has BOS {} / EOS [{}], the target's are {} / [{}]: the "
          "draft must share the target's tokenizer",
          dir, draft.bos_token_id.value_or(-1), fmt::join(draft.eos_token_ids, ", "),
          target.bos_token_id.value_or(-1),
          fmt::join(target.eos_token_ids, ", "));
  const auto mine = tokenizer_files(dir), theirs = tokenizer_files(c.model);
  for (const auto& [name, bytes] : theirs) {
    auto it = mine.find(name);
    require(it != mine.end(), "speculative.draft_model = '{}' has no {} (the target has one)", dir,
            name);
    require(it->second == bytes,
            "speculative.draft_model = '{}': its {} differs from the target's: the draft must "
            "share the target's tokenizer",
            dir, name);
  }
  const int32_t len = effective_max_model_len(c, target);
  require(draft.max_position_embeddings >= len,
          "speculative.draft_model = '{}' has max_position_embeddings = {}, below max_model_len = "
          "{} (set scheduler.max_model_len at most {})",
          dir, draft.max_position_embeddings, len, draft.max_position_embeddings);
  if (c.speculative.draft_placement == "every_rank")
    check_tp_split(c.tp, draft, "the draft's (speculative.draft_placement = every_rank) ");
}

ServiceConfig resolve_for_world(ServiceConfig c, int world_size) {
  require(world_size >= 2,
          "the job has {} rank(s): it needs the coordinator and at least one worker "
          "(mpirun -np 1 coordinator ... : -np N worker)",
          world_size);
  const int workers = world_size - 1;
  require(workers % c.tp == 0,
          "tp = {} does not divide the {} worker ranks (world size {} = 1 coordinator + replicas x "
          "tp)",
          c.tp, workers, world_size);
  if (c.replicas == 0) c.replicas = workers / c.tp;
  require(c.replicas * c.tp == workers,
          "replicas = {} x tp = {} needs {} worker ranks, but the job has {} (world size {})",
          c.replicas, c.tp, c.replicas * c.tp, workers, world_size);
  return c;
}

int32_t effective_max_model_len(const ServiceConfig& c, const model::ModelConfig& m) {
  if (c.scheduler.max_model_len > 0) return c.scheduler.max_model_len;
  return static_cast<int32_t>(std::min<int64_t>(m.max_position_embeddings, INT32_MAX));
}

std::string effective_model_name(const ServiceConfig& c) {
  if (!c.served_model_name.empty()) return c.served_model_name;
  auto p = std::filesystem::path(c.model);
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace shardserve::config
