#pragma once
// The standard process metrics (process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds),
// read from /proc/self at each scrape. prometheus-cpp 1.0 has no process collector; this is a
// Collectable that fills prometheus::MetricFamily values (the library serializes them).
#include <cstdint>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace shardserve::monitoring {

struct ProcessSample {
  double cpu_seconds = 0;     // utime + stime
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;
  double start_time_seconds = 0;  // since the epoch
};

// Reads /proc/self (and /proc/stat for the boot time). A value that cannot be read stays 0.
ProcessSample read_process_sample();

// MemTotal of /proc/meminfo in bytes (0 when unreadable): the CPU path's "device" memory.
int64_t host_memory_total_bytes();

class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace shardserve::monitoring
