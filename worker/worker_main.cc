// A worker rank (world rank >= 1 of `mpirun -np 1 coordinator ... : -np R*N worker`). Takes no
// arguments: the coordinator sends the configuration. See worker/worker_loop.h.
//
// Exit status: 0 after the coordinator's Shutdown; 1 after an Abort or a failure. A failure is
// reported to the coordinator (WorkerError), which gives this rank's replica up (its ranks are
// told to exit or killed; runtime.on_replica_failure) or, during start-up, tells every worker to
// exit. Without an answer this rank exits 1 itself, without MPI_Finalize.
#include <omp.h>
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include "comm/control_channel.h"
#include "comm/mpi_util.h"
#include "comm/world_layout.h"
#include "common/error.h"
#include "messages/codec.h"
#include "worker/worker_loop.h"

namespace {

using namespace shardserve;

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// SIGTERM/SIGINT are recorded, not obeyed: the coordinator decides when workers stop (it drains
// first), and mpirun ends the job with SIGKILL if the coordinator is gone.
void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

void setup_logging(int world_rank) {
  auto logger = spdlog::stderr_logger_mt("worker");
  logger->set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [worker {}] [%l] %v", world_rank));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

// Without OMP_NUM_THREADS, the ranks on one host share its cores instead of each taking all.
void share_cores(int local_ranks) {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  omp_set_num_threads(static_cast<int>(std::max(1u, cores / std::max(1, local_ranks))));
}

}  // namespace

int main(int argc, char** argv) {
  install_signal_handlers();
  std::optional<comm::MpiEnvironment> env;
  try {
    env.emplace(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker: MPI start-up failed: %s\n", e.what());
    return 1;
  }
  setup_logging(env->world_rank());
  if (env->world_rank() == comm::WorldLayout::kCoordinator) {
    spdlog::critical("a worker is world rank 0: launch the coordinator first, "
                     "`mpirun -np 1 coordinator ... : -np N worker`");
    comm::MpiEnvironment::abort_job(2);
  }
  share_cores(env->local_size());
  int status = 1;
  {
    comm::ControlChannel channel(MPI_COMM_WORLD);
    std::optional<worker::WorkerLoop> loop;
    try {
      loop.emplace(*env, channel);
      status = loop->run();
      channel.flush(std::chrono::seconds(10));
      if (loop->exit_without_finalize()) {
        // A replica failed in this job: MPI_Finalize can hang with a dead rank (tcp).
        spdlog::info("a replica failed in this job: exiting {} without MPI_Finalize", status);
        spdlog::shutdown();
        std::_Exit(status);
      }
    } catch (const std::exception& e) {
      spdlog::error("failed: {}", e.what());
      // Report to the coordinator. While serving it gives this rank's replica up (Abort, and a
      // SIGKILL on its host); during start-up it sends Abort to every worker, and then this rank
      // exits 1 like the others.
      bool told_to_exit = false;
      try {
        channel.send(comm::WorldLayout::kCoordinator,
                     messages::encode(messages::WorkerError{env->world_rank(), e.what()}));
        channel.flush(std::chrono::seconds(5));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!told_to_exit && std::chrono::steady_clock::now() < deadline) {
          auto r = channel.receive_for(std::chrono::milliseconds(200));
          if (!r) continue;
          const auto m = messages::decode(r->bytes);
          told_to_exit = std::holds_alternative<messages::Abort>(m) ||
                         std::holds_alternative<messages::Shutdown>(m);
        }
      } catch (const std::exception& e2) {
        spdlog::error("could not report the failure to the coordinator: {}", e2.what());
      }
      if (!told_to_exit || (loop && loop->serving())) {
        // Serving: this replica's peers may sit in a collective with this rank gone, and
        // MPI_Finalize with a dead rank can hang. Silent coordinator: it is gone.
        spdlog::error("{}: exiting 1 without MPI_Finalize",
                      told_to_exit ? "told to exit after a failure while serving"
                                   : "no word from the coordinator within 30 s");
        spdlog::shutdown();
        std::_Exit(1);
      }
      status = 1;
    }
  }
  if (g_signal.load() != 0)
    spdlog::info("signal {} was received while serving; the coordinator's shutdown was awaited",
                 g_signal.load());
  return status;
}
