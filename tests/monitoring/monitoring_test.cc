// The monitoring layer on its own: the catalogue's conventions, the families' label checks, the
// coordinator's and a worker's metrics under a synthetic workload (exact values), the /metrics
// endpoint over HTTP, `promtool check metrics` on both endpoints' output, and docs/metrics.md
// against the catalogue.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <prometheus/text_serializer.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "monitoring/catalogue.h"
#include "monitoring/coordinator_metrics.h"
#include "monitoring/endpoint.h"
#include "monitoring/process_metrics.h"
#include "monitoring/timed_collective.h"
#include "monitoring/worker_metrics.h"

namespace shardserve::monitoring {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// ----- helpers ----------------------------------------------------------------------------------

// The first series of `name` whose labels include `labels`, from a registry's families.
const prometheus::ClientMetric* series(const std::vector<prometheus::MetricFamily>& families,
                                       const std::string& name,
                                       const std::map<std::string, std::string>& labels = {}) {
  for (const auto& f : families) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      std::size_t matched = 0;
      for (const auto& l : m.label) {
        auto it = labels.find(l.name);
        if (it != labels.end() && it->second == l.value) ++matched;
      }
      if (matched == labels.size()) return &m;
    }
  }
  return nullptr;
}

double value(const MetricsEndpoint& e, const std::string& name,
             const std::map<std::string, std::string>& labels = {}) {
  // scrape() would do; Collect() keeps the doubles exact.
  auto& reg = const_cast<MetricsEndpoint&>(e).registry();
  const auto families = reg.Collect();
  const auto* m = series(families, name, labels);
  if (m == nullptr) throw Error("no series " + name);
  const MetricDef* def = find_metric(name);
  if (def == nullptr) throw Error("not in the catalogue: " + name);
  switch (def->type) {
    case MetricType::kCounter: return m->counter.value;
    case MetricType::kGauge: return m->gauge.value;
    case MetricType::kHistogram: return static_cast<double>(m->histogram.sample_count);
    case MetricType::kSummary: return static_cast<double>(m->summary.sample_count);
  }
  return NAN;
}

double histogram_sum(const MetricsEndpoint& e, const std::string& name,
                     const std::map<std::string, std::string>& labels = {}) {
  auto& reg = const_cast<MetricsEndpoint&>(e).registry();
  const auto families = reg.Collect();
  const auto* m = series(families, name, labels);
  if (m == nullptr) throw Error("no series " + name);
  return m->histogram.sample_sum;
}

struct CommandResult {
  int status;
  std::string output;
};

// Runs `command` with `input` on its standard input; returns its exit status and output.
CommandResult run_with_input(const std::string& command, const std::string& input) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("shardserve_monitoring_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto in = dir / "input.txt";
  const auto out = dir / "output.txt";
  std::ofstream(in) << input;
  const std::string line = command + " < " + in.string() + " > " + out.string() + " 2>&1";
  const int raw = std::system(line.c_str());
  std::ifstream o(out);
  std::stringstream text;
  text << o.rdbuf();
  std::filesystem::remove_all(dir);
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, text.str()};
}

// GET http://127.0.0.1:port/path; the whole response (status line, headers, body).
std::string http_get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    throw Error("connect to port " + std::to_string(port) + " failed");
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) {
    close(fd);
    throw Error("send failed");
  }
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  return response;
}

messages::StepPlan plan_of(uint64_t step,
                           std::vector<std::tuple<uint64_t, int32_t, int32_t, int32_t>> seqs) {
  // (seq id, start_pos, num_tokens, prompt_len)
  messages::StepPlan p;
  p.step_id = step;
  for (const auto& [id, start, n, prompt] : seqs) {
    messages::SequenceWork w;
    w.seq_id = id;
    w.start_pos = start;
    w.num_tokens = n;
    w.num_logits = 1;
    w.prompt_len = prompt;
    w.token_offset = p.total_tokens();
    for (int32_t i = 0; i < n; ++i) p.token_ids.push_back(1);
    p.seqs.push_back(w);
  }
  return p;
}

coordinator::RequestOutput output_of(uint64_t seq, int32_t prompt, int32_t outputs, int32_t n_new,
                                     std::optional<coordinator::FinishReason> reason = {},
                                     int32_t cached = 0) {
  coordinator::RequestOutput o;
  o.request_id = "r" + std::to_string(seq);
  o.seq_id = seq;
  o.num_prompt_tokens = prompt;
  o.num_output_tokens = outputs;
  o.num_cached_tokens = cached;
  o.new_tokens.resize(static_cast<size_t>(n_new));
  if (reason) {
    o.finished = true;
    o.finish_reason = reason;
  }
  return o;
}

BuildInfo coordinator_build() { return {"tiny-llama", 2, 2, "coordinator"}; }
BuildInfo worker_build() { return {"tiny-llama", 2, 2, "worker"}; }

// A coordinator endpoint after a small known workload on two replicas:
//   replica 0: seq 1 (prompt 5, 3 tokens, length), seq 2 (prompt 4, cancelled while waiting)
//   replica 1: seq 1 (prompt 7, 2 cached, stop after 2 tokens)
//   one request refused by the engine before any replica (rejected)
void run_workload(CoordinatorMetrics& m, Clock::time_point t0) {
  using R = coordinator::FinishReason;
  using std::chrono::milliseconds;
  for (int i = 0; i < 4; ++i) m.on_submitted();
  m.on_admitted(0, 1, 5, t0);
  m.on_admitted(0, 2, 4, t0);
  m.on_admitted(1, 1, 7, t0);
  m.on_output(-1, output_of(0, 3, 0, 0, R::kRejected), t0);
  // Replica 0: prefill of seq 1 (10 ms in the queue, 20 ms step), then two decodes.
  m.on_step_sent(0, plan_of(1, {{1, 0, 5, 5}}), t0 + milliseconds(10));
  m.on_step_done(0, t0 + milliseconds(30));
  m.on_output(0, output_of(1, 5, 1, 1), t0 + milliseconds(30));
  m.on_step_sent(0, plan_of(2, {{1, 5, 1, 5}}), t0 + milliseconds(30));
  m.on_step_done(0, t0 + milliseconds(40));
  m.on_output(0, output_of(1, 5, 2, 1), t0 + milliseconds(40));
  m.on_step_sent(0, plan_of(3, {{1, 6, 1, 5}}), t0 + milliseconds(40));
  m.on_step_done(0, t0 + milliseconds(50));
  m.on_output(0, output_of(1, 5, 3, 1, R::kLength), t0 + milliseconds(50));
  m.on_output(0, output_of(2, 4, 0, 0, R::kCancelled), t0 + milliseconds(55));
  // Replica 1: a mixed step would need two sequences; one prefill of the 5 uncached tokens, then
  // a decode that stops.
  m.on_step_sent(1, plan_of(1, {{1, 2, 5, 7}}), t0 + milliseconds(20));
  m.on_step_done(1, t0 + milliseconds(60));
  m.on_output(1, output_of(1, 7, 1, 1, std::nullopt, 2), t0 + milliseconds(60));
  m.on_step_sent(1, plan_of(2, {{1, 7, 1, 7}}), t0 + milliseconds(60));
  m.on_step_done(1, t0 + milliseconds(70));
  m.on_output(1, output_of(1, 7, 2, 1, R::kStop, 2), t0 + milliseconds(70));
  coordinator::SchedulerStats idle;
  idle.kv_blocks_total = 40;
  idle.kv_blocks_cached = 3;
  idle.prefix_cache_queried_tokens = 16;
  idle.prefix_cache_hit_tokens = 2;
  idle.preemptions_total = 1;
  m.on_replica_state(0, idle);
  m.on_replica_state(1, idle);
}

// ----- catalogue ----------------------------------------------------------------------------------

TEST(Catalogue, NamesFollowPrometheusConventions) {
  std::set<std::string> names;
  const std::regex snake("[a-z][a-z0-9_]*");
  for (const MetricDef* d : catalogue()) {
    SCOPED_TRACE(d->name);
    EXPECT_TRUE(names.insert(d->name).second) << "duplicate";
    EXPECT_TRUE(std::regex_match(d->name, snake));
    // Standard process metrics and prometheus-cpp's own keep their names; ours have one prefix.
    const bool process = d->name.rfind("process_", 0) == 0;
    const bool exposer = d->name.rfind("exposer_", 0) == 0;
    EXPECT_TRUE(process || exposer || d->name.rfind("shardserve_", 0) == 0) << "one prefix";
    EXPECT_EQ(process, d->exporter == Exporter::kEveryProcess && d->name != "shardserve_build_info");
    EXPECT_EQ(exposer, d->exporter == Exporter::kExposer);
    const bool total = d->name.size() > 6 && d->name.substr(d->name.size() - 6) == "_total";
    EXPECT_EQ(total, d->type == MetricType::kCounter) << "_total exactly on counters";
    auto ends = [&](const std::string& s) {
      const std::string base = total ? d->name.substr(0, d->name.size() - 6) : d->name;
      return base.size() >= s.size() && base.substr(base.size() - s.size()) == s;
    };
    if (d->unit == "seconds") {
      EXPECT_TRUE(ends("_seconds"));
    }
    if (d->unit == "bytes") {
      EXPECT_TRUE(ends("_bytes"));
    }
    if (d->unit == "ratio") {
      EXPECT_TRUE(ends("_ratio"));
    }
    EXPECT_FALSE(d->help.empty());
    EXPECT_EQ(d->type == MetricType::kHistogram, !d->buckets.empty());
    for (std::size_t i = 1; i < d->buckets.size(); ++i) EXPECT_LT(d->buckets[i - 1], d->buckets[i]);
    for (const auto& l : d->labels) {
      EXPECT_TRUE(std::regex_match(l, snake)) << l;
      EXPECT_THAT(l, ::testing::Not(HasSubstr("request"))) << "unbounded label";
      EXPECT_NE(l, "le");
    }
    if (d->exporter == Exporter::kWorker) {
      for (const auto& l : worker_labels())
        EXPECT_NE(std::find(d->labels.begin(), d->labels.end(), l), d->labels.end()) << l;
    }
  }
  EXPECT_EQ(find_metric("shardserve_time_to_first_token_seconds"),
            &metric::time_to_first_token_seconds);
  EXPECT_EQ(find_metric("shardserve_nothing"), nullptr);
}

TEST(Catalogue, LatencyBucketsSpanMillisecondsToMinutes) {
  for (const MetricDef* d : {&metric::time_to_first_token_seconds,
                             &metric::e2e_request_latency_seconds,
                             &metric::request_queue_time_seconds}) {
    EXPECT_LE(d->buckets.front(), 0.001) << d->name;
    EXPECT_GE(d->buckets.back(), 300.0) << d->name;
  }
  EXPECT_LE(metric::time_per_output_token_seconds.buckets.front(), 0.001);
  EXPECT_LE(metric::step_duration_seconds.buckets.front(), 0.001);
  EXPECT_GE(metric::step_duration_seconds.buckets.back(), 60.0);
}

TEST(Catalogue, FamiliesCheckTypesAndLabels) {
  prometheus::Registry reg;
  EXPECT_THAT([&] { Family<prometheus::Counter>(reg, metric::requests_running); },
              ::testing::ThrowsMessage<Error>(HasSubstr("shardserve_requests_running is a gauge")));
  Family<prometheus::Gauge> running(reg, metric::requests_running);
  EXPECT_THAT([&] { running.add(); },
              ::testing::ThrowsMessage<Error>(HasSubstr("labels {} given, {replica} defined")));
  EXPECT_THAT([&] { running.add({{"replica", "0"}, {"request_id", "x"}}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("{replica, request_id} given")));
  running.add({{"replica", "0"}}).Set(3);
  EXPECT_THAT(
      [&] { Family<prometheus::Counter>(reg, metric::worker_tokens_total, {{"host", "a"}}); },
      ::testing::ThrowsMessage<Error>(HasSubstr("constant label 'host'")));
}

// ----- coordinator metrics ------------------------------------------------------------------------

TEST(CoordinatorMetrics, PhaseOfAPlan) {
  EXPECT_EQ(phase_of(plan_of(1, {{1, 0, 5, 5}})), StepPhase::kPrefill);
  EXPECT_EQ(phase_of(plan_of(1, {{1, 4, 1, 5}})), StepPhase::kPrefill);  // last prompt token
  EXPECT_EQ(phase_of(plan_of(1, {{1, 5, 1, 5}, {2, 9, 1, 3}})), StepPhase::kDecode);
  EXPECT_EQ(phase_of(plan_of(1, {{1, 5, 1, 5}, {2, 0, 8, 8}})), StepPhase::kMixed);
  EXPECT_EQ(phase_of(plan_of(1, {{1, 0, 9, 5}})), StepPhase::kPrefill);  // recompute
  // A speculative verify (1 + num_draft tokens past the prompt) is a decode.
  auto verify = plan_of(1, {{1, 7, 4, 5}});
  verify.seqs[0].num_draft = 3;
  EXPECT_EQ(phase_of(verify), StepPhase::kDecode);
  verify.seqs[0].num_draft = 2;  // one token more than a verify: a chunk
  EXPECT_EQ(phase_of(verify), StepPhase::kPrefill);
}

TEST(CoordinatorMetrics, ExactValuesOfAKnownWorkload) {
  MetricsEndpoint e(coordinator_build());
  CoordinatorMetrics m(e, 2);
  const auto t0 = Clock::now();
  run_workload(m, t0);
  EXPECT_EQ(value(e, "shardserve_requests_received_total"), 4);
  EXPECT_EQ(value(e, "shardserve_requests_finished_total", {{"reason", "length"}}), 1);
  EXPECT_EQ(value(e, "shardserve_requests_finished_total", {{"reason", "stop"}}), 1);
  EXPECT_EQ(value(e, "shardserve_requests_finished_total", {{"reason", "cancelled"}}), 1);
  EXPECT_EQ(value(e, "shardserve_requests_finished_total", {{"reason", "rejected"}}), 1);
  EXPECT_EQ(value(e, "shardserve_prompt_tokens_total", {{"replica", "0"}}), 9);
  EXPECT_EQ(value(e, "shardserve_prompt_tokens_total", {{"replica", "1"}}), 7);
  EXPECT_EQ(value(e, "shardserve_generation_tokens_total", {{"replica", "0"}}), 3);
  EXPECT_EQ(value(e, "shardserve_generation_tokens_total", {{"replica", "1"}}), 2);
  EXPECT_EQ(value(e, "shardserve_prefix_cached_tokens_total", {{"replica", "1"}}), 2);
  EXPECT_EQ(value(e, "shardserve_prefix_cached_tokens_total", {{"replica", "0"}}), 0);
  // Latencies: two requests got tokens, two finished normally, two were scheduled.
  EXPECT_EQ(value(e, "shardserve_time_to_first_token_seconds"), 2);
  EXPECT_NEAR(histogram_sum(e, "shardserve_time_to_first_token_seconds"), 0.030 + 0.060, 1e-9);
  EXPECT_EQ(value(e, "shardserve_e2e_request_latency_seconds"), 2);
  EXPECT_NEAR(histogram_sum(e, "shardserve_e2e_request_latency_seconds"), 0.050 + 0.070, 1e-9);
  EXPECT_EQ(value(e, "shardserve_time_per_output_token_seconds"), 2);
  EXPECT_NEAR(histogram_sum(e, "shardserve_time_per_output_token_seconds"), 0.010 + 0.010, 1e-9);
  EXPECT_EQ(value(e, "shardserve_request_queue_time_seconds"), 2);
  EXPECT_NEAR(histogram_sum(e, "shardserve_request_queue_time_seconds"), 0.010 + 0.020, 1e-9);
  // Steps by phase.
  EXPECT_EQ(value(e, "shardserve_step_duration_seconds", {{"replica", "0"}, {"phase", "prefill"}}), 1);
  EXPECT_EQ(value(e, "shardserve_step_duration_seconds", {{"replica", "0"}, {"phase", "decode"}}), 2);
  EXPECT_EQ(value(e, "shardserve_step_duration_seconds", {{"replica", "0"}, {"phase", "mixed"}}), 0);
  EXPECT_NEAR(histogram_sum(e, "shardserve_step_duration_seconds", {{"replica", "1"}, {"phase", "prefill"}}),
              0.040, 1e-9);
  EXPECT_EQ(value(e, "shardserve_step_batch_size", {{"replica", "0"}}), 3);
  EXPECT_EQ(histogram_sum(e, "shardserve_step_tokens", {{"replica", "0"}}), 7);
  EXPECT_EQ(histogram_sum(e, "shardserve_step_tokens", {{"replica", "1"}}), 6);
  // Replica state mirrored.
  EXPECT_EQ(value(e, "shardserve_kv_blocks_used", {{"replica", "0"}}), 0);
  EXPECT_EQ(value(e, "shardserve_kv_blocks_capacity", {{"replica", "1"}}), 40);
  EXPECT_EQ(value(e, "shardserve_kv_blocks_cached", {{"replica", "1"}}), 3);
  EXPECT_EQ(value(e, "shardserve_kv_cache_usage_ratio", {{"replica", "0"}}), 0);
  EXPECT_EQ(value(e, "shardserve_prefix_cache_hit_ratio", {{"replica", "0"}}), 0.125);
  EXPECT_EQ(value(e, "shardserve_prefix_cache_queried_tokens_total", {{"replica", "0"}}), 16);
  EXPECT_EQ(value(e, "shardserve_preemptions_total", {{"replica", "1"}}), 1);
  EXPECT_EQ(m.tracked_requests(), 0u) << "every finished request is forgotten";
}

TEST(CoordinatorMetrics, ReplicaStateGaugesAndMirroredCounters) {
  MetricsEndpoint e(coordinator_build());
  CoordinatorMetrics m(e, 1);
  coordinator::SchedulerStats s;
  s.num_running = 3;
  s.num_waiting = 5;
  s.num_preempted_waiting = 2;
  s.kv_blocks_used = 30;
  s.kv_blocks_total = 40;
  s.prefix_cache_queried_tokens = 100;
  s.prefix_cache_hit_tokens = 25;
  s.preemptions_total = 4;
  s.prefix_cache_evictions = 7;
  m.on_replica_state(0, s);
  m.on_replica_state(0, s);  // unchanged: counters do not move
  EXPECT_EQ(value(e, "shardserve_requests_running", {{"replica", "0"}}), 3);
  EXPECT_EQ(value(e, "shardserve_requests_waiting", {{"replica", "0"}}), 5);
  EXPECT_EQ(value(e, "shardserve_requests_preempted", {{"replica", "0"}}), 2);
  EXPECT_EQ(value(e, "shardserve_kv_cache_usage_ratio", {{"replica", "0"}}), 0.75);
  EXPECT_EQ(value(e, "shardserve_prefix_cache_hit_ratio", {{"replica", "0"}}), 0.25);
  EXPECT_EQ(value(e, "shardserve_preemptions_total", {{"replica", "0"}}), 4);
  EXPECT_EQ(value(e, "shardserve_prefix_cache_evictions_total", {{"replica", "0"}}), 7);
  s.preemptions_total = 6;
  s.kv_blocks_used = 0;
  m.on_replica_state(0, s);
  EXPECT_EQ(value(e, "shardserve_preemptions_total", {{"replica", "0"}}), 6);
  EXPECT_EQ(value(e, "shardserve_kv_cache_usage_ratio", {{"replica", "0"}}), 0);
  s.spec_decode_drafts_total = 2;
  s.spec_decode_draft_tokens_total = 8;
  s.spec_decode_accepted_tokens_total = 5;
  m.on_replica_state(0, s);
  EXPECT_EQ(value(e, "shardserve_spec_decode_drafts_total", {{"replica", "0"}}), 2);
  EXPECT_EQ(value(e, "shardserve_spec_decode_draft_tokens_total", {{"replica", "0"}}), 8);
  EXPECT_EQ(value(e, "shardserve_spec_decode_accepted_tokens_total", {{"replica", "0"}}), 5);
  EXPECT_THAT([&] { m.on_replica_state(1, s); },
              ::testing::ThrowsMessage<Error>(HasSubstr("replica 1 of 1")));
}

// Every reason label counts its own ends: a replica's failure (unavailable: not the request's
// fault) apart from rejected, and the front end's time-limit cancellations apart from cancelled.
TEST(CoordinatorMetrics, EachFinishReasonHasItsLabel) {
  using R = coordinator::FinishReason;
  MetricsEndpoint e(coordinator_build());
  CoordinatorMetrics m(e, 2);
  const auto t0 = Clock::now();
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    m.on_submitted();
    m.on_admitted(0, seq, 4, t0);
  }
  m.on_output(0, output_of(1, 4, 2, 2, R::kUnavailable), t0);  // its replica failed mid-stream
  m.on_output(-1, output_of(9, 4, 0, 0, R::kUnavailable), t0);  // submitted after the failure
  m.on_output(0, output_of(2, 4, 0, 0, R::kRejected), t0);
  m.on_cancel_reason("r3", CoordinatorMetrics::TimeLimit::kDeadline);
  m.on_output(0, output_of(3, 4, 1, 1, R::kCancelled), t0);
  m.on_cancel_reason("r4", CoordinatorMetrics::TimeLimit::kStreamIdle);
  m.on_output(0, output_of(4, 4, 0, 0, R::kCancelled), t0);
  m.on_output(0, output_of(5, 4, 0, 0, R::kCancelled), t0);
  const std::map<std::string, double> want = {
      {"stop", 0},        {"length", 0},  {"cancelled", 1},   {"rejected", 1},
      {"unavailable", 2}, {"timeout", 1}, {"idle_timeout", 1}};
  for (const auto& [reason, n] : want)
    EXPECT_EQ(value(e, "shardserve_requests_finished_total", {{"reason", reason}}), n) << reason;
  // A failed request is no completed one: no end-to-end latency.
  EXPECT_EQ(value(e, "shardserve_e2e_request_latency_seconds"), 0);
}

TEST(CoordinatorMetrics, EverySeriesExistsBeforeAnyTraffic) {
  // Dashboards and rate() need every series from the first scrape, zero-valued.
  MetricsEndpoint e(coordinator_build());
  CoordinatorMetrics m(e, 3);
  const std::string text = e.scrape();
  for (const MetricDef* d : catalogue()) {
    if (d->exporter == Exporter::kWorker || d->exporter == Exporter::kExposer) continue;
    EXPECT_THAT(text, HasSubstr("# TYPE " + d->name + " ")) << d->name;
  }
  EXPECT_THAT(text, HasSubstr("shardserve_requests_finished_total{reason=\"rejected\"} 0"));
  EXPECT_THAT(text, HasSubstr("shardserve_requests_finished_total{reason=\"unavailable\"} 0"));
  EXPECT_THAT(text, HasSubstr("shardserve_kv_blocks_used{replica=\"2\"} 0"));
  EXPECT_THAT(text, HasSubstr("shardserve_step_duration_seconds_count{phase=\"mixed\",replica=\"2\"} 0"));
  EXPECT_THAT(text, HasSubstr("shardserve_build_info{model=\"tiny-llama\",replicas=\"2\",role=\"coordinator\",tp=\"2\",version=\""));
}

// ----- worker metrics -----------------------------------------------------------------------------

TEST(WorkerMetrics, RankLabelsForwardAllReduceMemoryHeartbeat) {
  MetricsEndpoint e(worker_build());
  WorkerMetrics w(e, {3, 1, 0, "cpu"});
  w.on_forward(0.020, 0.005, 17);
  w.on_forward(0.030, 0.007, 2);
  w.set_memory(1000, 8000, 600, 400);
  const std::map<std::string, std::string> rank = {{"rank", "3"}, {"replica", "1"}, {"tp_rank", "0"}};
  EXPECT_EQ(value(e, "shardserve_worker_forward_duration_seconds", rank), 2);
  EXPECT_NEAR(histogram_sum(e, "shardserve_worker_forward_duration_seconds", rank), 0.050, 1e-12);
  EXPECT_NEAR(histogram_sum(e, "shardserve_worker_allreduce_duration_seconds", rank), 0.012, 1e-12);
  EXPECT_EQ(value(e, "shardserve_worker_tokens_total", rank), 19);
  EXPECT_EQ(value(e, "shardserve_gpu_memory_used_bytes", {{"rank", "3"}, {"device", "cpu"}}), 1000);
  EXPECT_EQ(value(e, "shardserve_gpu_memory_total_bytes", rank), 8000);
  EXPECT_EQ(value(e, "shardserve_worker_weight_bytes", rank), 600);
  EXPECT_EQ(value(e, "shardserve_worker_kv_cache_bytes", rank), 400);

  // The heartbeat age is computed when scraped: it grows while nothing beats.
  auto age = [&] {
    const std::string text = e.scrape();
    std::smatch m;
    const std::regex re(
        "shardserve_worker_heartbeat_age_seconds\\{rank=\"3\",replica=\"1\",tp_rank=\"0\"\\} ([0-9.e+-]+)");
    EXPECT_TRUE(std::regex_search(text, m, re)) << text;
    return std::stod(m[1]);
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  EXPECT_GE(age(), 0.1);
  w.heartbeat();
  EXPECT_LT(age(), 0.1);
}

TEST(TimedCollective, AddsUpAllReduceTime) {
  struct Slow final : comm::Collective {
    int rank() const override { return 1; }
    int size() const override { return 2; }
    void all_reduce_sum(float* d, int64_t n) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      for (int64_t i = 0; i < n; ++i) d[i] *= 2;
    }
    void all_gather(const float*, float*, int64_t) override { ++gathers; }
    void broadcast(float*, int64_t, int) override {}
    void barrier() override {}
    int gathers = 0;
  } inner;
  TimedCollective t(inner);
  EXPECT_EQ(t.rank(), 1);
  EXPECT_EQ(t.size(), 2);
  float x[2] = {1, 2};
  t.all_reduce_sum(x, 2);
  t.all_reduce_sum(x, 2);
  t.all_gather(x, x, 1);
  EXPECT_EQ(x[1], 8);
  EXPECT_EQ(inner.gathers, 1);
  const double s = t.take_allreduce_seconds();
  EXPECT_GE(s, 0.010);
  EXPECT_LT(s, 1.0);
  EXPECT_EQ(t.take_allreduce_seconds(), 0.0);
}

// ----- endpoint -------------------------------------------------------------------------------------

TEST(Endpoint, PortOfARank) {
  EXPECT_EQ(metrics_port_for_rank(9100, 0), 9100);
  EXPECT_EQ(metrics_port_for_rank(9100, 5), 9105);
  EXPECT_EQ(metrics_port_for_rank(0, 3), std::nullopt);
  EXPECT_THAT([] { metrics_port_for_rank(65530, 7); },
              ::testing::ThrowsMessage<Error>(HasSubstr("65530 + world rank 7 = 65537")));
}

TEST(Endpoint, ServesMetricsOverHttpAndNamesABusyPort) {
  MetricsEndpoint e(coordinator_build());
  CoordinatorMetrics m(e, 1);
  m.on_submitted();
  EXPECT_FALSE(e.serving());
  EXPECT_EQ(e.url(), "");
  e.serve("127.0.0.1", 0);
  ASSERT_TRUE(e.serving());
  ASSERT_GT(e.port(), 0);
  EXPECT_EQ(e.url(), "http://127.0.0.1:" + std::to_string(e.port()) + "/metrics");
  const std::string response = http_get(e.port(), "/metrics");
  EXPECT_THAT(response, HasSubstr("200 OK"));
  EXPECT_THAT(response, HasSubstr("shardserve_requests_received_total 1"));
  EXPECT_THAT(response, HasSubstr("process_resident_memory_bytes "));
  EXPECT_THAT(response, HasSubstr("shardserve_build_info{"));
  // The Exposer's own metrics (catalogued as such) come with every served endpoint.
  for (const MetricDef* d : catalogue()) {
    if (d->exporter == Exporter::kExposer) {
      EXPECT_THAT(response, HasSubstr("# TYPE " + d->name + " " + std::string(to_string(d->type))));
    }
  }

  MetricsEndpoint other(worker_build());
  EXPECT_THAT([&] { other.serve("127.0.0.1", e.port()); },
              ::testing::ThrowsMessage<Error>(
                  HasSubstr("cannot listen on 127.0.0.1:" + std::to_string(e.port()))));
  EXPECT_THAT([&] { e.serve("127.0.0.1", 0); },
              ::testing::ThrowsMessage<Error>(HasSubstr("already serving")));
}

TEST(ProcessMetrics, ReadFromProc) {
  const ProcessSample s = read_process_sample();
  EXPECT_GT(s.resident_bytes, 1e5);
  EXPECT_GE(s.virtual_bytes, s.resident_bytes);
  EXPECT_GT(s.open_fds, 2);  // stdin, stdout, stderr
  EXPECT_GE(s.max_fds, s.open_fds);
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_GT(s.start_time_seconds, now - 3600);
  EXPECT_LE(s.start_time_seconds, now + 1);
  volatile double x = 0;
  for (int i = 0; i < 20000000; ++i) x = x + i;
  EXPECT_GT(read_process_sample().cpu_seconds, 0);
}

// ----- promtool and the documentation ---------------------------------------------------------------

TEST(Promtool, ChecksBothEndpointsOutput) {
  MetricsEndpoint c(coordinator_build());
  CoordinatorMetrics m(c, 2);
  run_workload(m, Clock::now());
  MetricsEndpoint w(worker_build());
  WorkerMetrics wm(w, {1, 0, 0, "cpu"});
  wm.on_forward(0.01, 0.001, 4);
  wm.set_memory(1, 2, 1, 0);
  for (const MetricsEndpoint* e : {&c, &w}) {
    const std::string text = e->scrape();
    const auto r = run_with_input(std::string(SHARDSERVE_PROMTOOL) + " check metrics", text);
    EXPECT_EQ(r.status, 0) << r.output << "\n----- input -----\n" << text;
    EXPECT_EQ(r.output, "") << "promtool's lint found problems";
  }
}

TEST(Promtool, RejectsWhatItShould) {
  // The check is real: a counter without _total is refused.
  const auto r = run_with_input(std::string(SHARDSERVE_PROMTOOL) + " check metrics",
                                "# HELP x_seconds h\n# TYPE x_seconds counter\nx_seconds 1\n");
  EXPECT_NE(r.status, 0);
  EXPECT_THAT(r.output, HasSubstr("_total"));
}

// docs/metrics.md has one table row per metric: | `name` | type | labels | unit | meaning |
TEST(Docs, MetricsMdListsExactlyTheCatalogue) {
  std::ifstream in(std::string(SHARDSERVE_SOURCE_DIR) + "/docs/metrics.md");
  ASSERT_TRUE(in) << "docs/metrics.md";
  const std::regex row(R"(^\|\s*`([a-z0-9_:]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|([^|]*)\|([^|]*)\|)");
  std::map<std::string, std::pair<std::string, std::string>> documented;
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, row)) {
      EXPECT_TRUE(documented.emplace(m[1], std::pair{m[2].str(), m[3].str()}).second)
          << "listed twice: " << m[1];
    }
  }
  for (const MetricDef* d : catalogue()) {
    SCOPED_TRACE(d->name);
    auto it = documented.find(d->name);
    ASSERT_NE(it, documented.end()) << "not in docs/metrics.md";
    EXPECT_EQ(it->second.first, to_string(d->type));
    for (const auto& l : d->labels) EXPECT_THAT(it->second.second, HasSubstr("`" + l + "`"));
    documented.erase(it);
  }
  for (const auto& [name, _] : documented) ADD_FAILURE() << name << " is documented but not exported";
}

}  // namespace
}  // namespace shardserve::monitoring
