// Writes what each kind of endpoint exports after a small synthetic workload, for the deploy
// check (check_deploy.py: every metric a dashboard or rule names must be exported):
//   monitoring_sample DIR    -> DIR/coordinator.prom, DIR/worker.prom (text exposition format)
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "monitoring/coordinator_metrics.h"
#include "monitoring/endpoint.h"
#include "monitoring/worker_metrics.h"

using namespace shardserve;
using namespace shardserve::monitoring;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: monitoring_sample DIR\n";
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  const auto t0 = std::chrono::steady_clock::now();
  auto at = [&](int ms) { return t0 + std::chrono::milliseconds(ms); };

  MetricsEndpoint coordinator({"sample-model", 2, 2, "coordinator"});
  CoordinatorMetrics cm(coordinator, 2);
  for (int r = 0; r < 2; ++r) {
    cm.on_submitted();
    cm.on_admitted(r, 1, 8, at(0));
    messages::StepPlan plan;
    messages::SequenceWork w;
    w.seq_id = 1;
    w.num_tokens = 8;
    w.num_logits = 1;
    w.prompt_len = 8;
    plan.seqs.push_back(w);
    plan.token_ids.assign(8, 1);
    cm.on_step_sent(r, plan, at(5));
    cm.on_step_done(r, at(25));
    coordinator::RequestOutput out;
    out.seq_id = 1;
    out.num_prompt_tokens = 8;
    out.num_output_tokens = 1;
    out.new_tokens.resize(1);
    out.finished = true;
    out.finish_reason = coordinator::FinishReason::kLength;
    cm.on_output(r, out, at(25));
    coordinator::SchedulerStats s;
    s.kv_blocks_total = 64;
    s.prefix_cache_queried_tokens = 8;
    cm.on_replica_state(r, s);
  }
  std::ofstream(dir / "coordinator.prom") << coordinator.scrape();

  MetricsEndpoint worker({"sample-model", 2, 2, "worker"});
  WorkerMetrics wm(worker, {1, 0, 0, "cpu"});
  wm.on_forward(0.02, 0.002, 8);
  wm.set_memory(1 << 20, 1 << 30, 1 << 19, 1 << 19);
  std::ofstream(dir / "worker.prom") << worker.scrape();
  std::cout << "wrote " << (dir / "coordinator.prom").string() << " and "
            << (dir / "worker.prom").string() << "\n";
  return 0;
}
