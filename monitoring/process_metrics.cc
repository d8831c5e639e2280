#include "monitoring/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "monitoring/catalogue.h"

namespace shardserve::monitoring {
namespace {

double boot_time_seconds() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    std::string rest;
    std::getline(in, rest);
  }
  return 0;
}

double count_open_fds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  double n = 0;
  while (const dirent* e = readdir(dir))
    if (e->d_name[0] != '.') n += 1;
  closedir(dir);
  return n - 1;  // the descriptor of the directory being read
}

prometheus::MetricFamily family(const MetricDef& def, double value) {
  prometheus::MetricFamily f;
  f.name = def.name;
  f.help = def.help;
  prometheus::ClientMetric m;
  if (def.type == MetricType::kCounter) {
    f.type = prometheus::MetricType::Counter;
    m.counter.value = value;
  } else {
    f.type = prometheus::MetricType::Gauge;
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

ProcessSample read_process_sample() {
  ProcessSample s;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may contain spaces.
  const auto close = text.rfind(')');
  if (close != std::string::npos && ticks > 0) {
    std::istringstream fields(text.substr(close + 2));
    std::vector<std::string> f;
    std::string x;
    while (fields >> x) f.push_back(x);
    // f[0] is field 3 (state): utime = field 14, stime 15, starttime 22, vsize 23, rss 24.
    auto field = [&](int n) { return n - 3 < static_cast<int>(f.size()) ? std::stod(f[n - 3]) : 0.0; };
    try {
      s.cpu_seconds = (field(14) + field(15)) / ticks;
      s.start_time_seconds = boot_time_seconds() + field(22) / ticks;
      s.virtual_bytes = field(23);
      s.resident_bytes = field(24) * page;
    } catch (const std::exception&) {
      // A malformed line leaves zeros.
    }
  }
  s.open_fds = count_open_fds();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
    s.max_fds = static_cast<double>(limit.rlim_cur);
  return s;
}

int64_t host_memory_total_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t kib = 0;
  while (in >> key >> kib >> unit)
    if (key == "MemTotal:") return kib * 1024;
  return 0;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  const ProcessSample s = read_process_sample();
  return {family(metric::process_cpu_seconds_total, s.cpu_seconds),
          family(metric::process_resident_memory_bytes, s.resident_bytes),
          family(metric::process_virtual_memory_bytes, s.virtual_bytes),
          family(metric::process_open_fds, s.open_fds),
          family(metric::process_max_fds, s.max_fds),
          family(metric::process_start_time_seconds, s.start_time_seconds)};
}

}  // namespace shardserve::monitoring
