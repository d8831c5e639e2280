// Closed-loop HTTP load generator for the overload benchmark (bench/overload/overload_bench.py).
// Each of --clients threads holds one kept-alive connection (cpp-httplib client, TCP_NODELAY) and
// sends the same POST again as soon as the previous answer is read (after --retry-ms when it was
// a 429), until --seconds have passed or it has sent --requests. Every request's status and
// latency are recorded; the JSON written to --out has a summary per status (n, p50, p99, max in
// ms), the generator's own CPU time (so a reader can see it did not use the cores it measures),
// and, with --records, every request as [status, start_ms, latency_ms].
//
// Why C++: the Python generator this replaces ran 80 threads under one interpreter lock on the
// same 2 cores as the server, so nothing it measured could be told apart from its own delays.
// Here a client thread sleeps in recv() between requests; the JSON reports the CPU it used
// (about 120 us per request, mostly the kernel's: at thousands of 429s a second that is still
// a large share of a 2-core machine, which the result files show per phase).
#include <httplib.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <latch>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Record {
  int status = 0;  // HTTP status; 0 = no answer (transport error)
  double start_ms = 0;
  double latency_ms = 0;
  std::string error;  // httplib's error name when status == 0
};

// Nearest rank on the sorted sample, the same rule as overload_bench.py's earlier pct().
double percentile(const std::vector<double>& sorted, double p) {
  const auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

double round2(double x) { return static_cast<double>(static_cast<long long>(x * 100 + 0.5)) / 100; }

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"closed-loop HTTP load generator (overload benchmark)"};
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/v1/completions";
  std::string body_file;
  int clients = 1;
  double seconds = 0;
  int requests = 0;
  int warmup = 0;
  double retry_ms = 5;
  std::string out;
  bool with_records = false;
  app.add_option("--host", host)->capture_default_str();
  app.add_option("--port", port)->required()->check(CLI::Range(1, 65535));
  app.add_option("--path", path)->capture_default_str();
  app.add_option("--body-file", body_file, "JSON body of every POST")->required();
  app.add_option("--clients", clients, "closed-loop clients (one thread and connection each)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--seconds", seconds, "run this long (0: until --requests)");
  app.add_option("--requests", requests, "requests per client (0: until --seconds)");
  app.add_option("--warmup", warmup, "unrecorded requests per client before the start")
      ->capture_default_str();
  app.add_option("--retry-ms", retry_ms, "pause after a 429 before the next request")
      ->capture_default_str();
  app.add_option("--out", out, "JSON result file")->required();
  app.add_flag("--records", with_records, "include every request in the JSON");
  CLI11_PARSE(app, argc, argv);
  if (seconds <= 0 && requests <= 0) {
    std::fprintf(stderr, "overload_load: give --seconds or --requests (or both)\n");
    return 2;
  }
  std::string body;
  {
    std::ifstream f(body_file);
    if (!f) {
      std::fprintf(stderr, "overload_load: cannot read --body-file %s\n", body_file.c_str());
      return 2;
    }
    std::stringstream s;
    s << f.rdbuf();
    body = s.str();
  }

  std::vector<std::vector<Record>> per_client(static_cast<std::size_t>(clients));
  std::latch ready(clients + 1);
  std::latch go(1);
  Clock::time_point start;
  std::mutex warmup_errors_mu;
  std::vector<std::string> warmup_errors;

  auto client = [&](int c) {
    httplib::Client cli(host, port);
    cli.set_keep_alive(true);
    // The request's headers and body are two writes: without TCP_NODELAY the body would wait
    // for the server's delayed ACK of the headers (~40 ms on Linux), measured as server latency.
    cli.set_tcp_nodelay(true);
    cli.set_connection_timeout(10, 0);
    cli.set_read_timeout(300, 0);
    cli.set_write_timeout(30, 0);
    for (int i = 0; i < warmup; ++i) {
      auto r = cli.Post(path, body, "application/json");
      if (!r) {
        std::lock_guard lock(warmup_errors_mu);
        warmup_errors.push_back(httplib::to_string(r.error()));
      }
    }
    ready.count_down();
    go.wait();
    auto& mine = per_client[static_cast<std::size_t>(c)];
    const auto stop = start + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(seconds > 0 ? seconds : 1e9));
    for (int n = 0; (requests <= 0 || n < requests) && Clock::now() < stop; ++n) {
      const auto t0 = Clock::now();
      auto r = cli.Post(path, body, "application/json");
      const auto t1 = Clock::now();
      Record rec;
      rec.start_ms = std::chrono::duration<double, std::milli>(t0 - start).count();
      rec.latency_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
      if (r) {
        rec.status = r->status;
      } else {
        rec.error = httplib::to_string(r.error());
      }
      const bool rejected = rec.status == 429;
      mine.push_back(std::move(rec));
      if (rejected && retry_ms > 0)
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(retry_ms));
    }
  };

  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(clients));
  for (int c = 0; c < clients; ++c) threads.emplace_back(client, c);
  ready.arrive_and_wait();
  const double cpu0 = cpu_seconds();
  start = Clock::now();
  go.count_down();
  for (auto& t : threads) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu_s = cpu_seconds() - cpu0;

  std::map<std::string, std::vector<double>> by_status;
  std::map<std::string, int> errors;
  json records = json::array();
  std::size_t total = 0;
  for (const auto& rs : per_client) {
    for (const auto& r : rs) {
      ++total;
      by_status[std::to_string(r.status)].push_back(r.latency_ms);
      if (r.status == 0) ++errors[r.error];
      if (with_records)
        records.push_back({r.status, round2(r.start_ms), round2(r.latency_ms)});
    }
  }
  json summary = json::object();
  for (auto& [status, v] : by_status) {
    std::sort(v.begin(), v.end());
    summary[status] = {{"n", v.size()},
                       {"p50", round2(percentile(v, 50))},
                       {"p99", round2(percentile(v, 99))},
                       {"max", round2(v.back())}};
  }
  json result = {{"clients", clients},
                 {"seconds", seconds},
                 {"requests_per_client", requests},
                 {"retry_ms", retry_ms},
                 {"wall_s", round2(wall_s)},
                 {"requests", total},
                 {"generator_cpu_s", round2(cpu_s)},
                 {"generator_cpu_share_of_one_core", round2(cpu_s / std::max(wall_s, 1e-9))},
                 {"latency_ms_by_status", summary},
                 {"transport_errors", errors},
                 {"warmup_errors", warmup_errors.size()}};
  if (with_records) result["records"] = records;
  std::ofstream f(out);
  if (!f) {
    std::fprintf(stderr, "overload_load: cannot write --out %s\n", out.c_str());
    return 2;
  }
  f << result.dump(1) << "\n";
  return 0;
}
