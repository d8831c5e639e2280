#include "comm/control_channel.h"

#include <algorithm>
#include <climits>
#include <thread>

#include "comm/mpi_util.h"
#include "common/error.h"

namespace shardserve::comm {
namespace {
constexpr int kControlTag = 17;
}

void PollBackoff::wait() {
  if (++polls_ <= 64) return;  // a reply that is about to arrive costs no sleep
  const auto waited = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start_);
  std::this_thread::sleep_for(std::clamp(waited / 8, std::chrono::microseconds(10), max_));
}

ControlChannel::ControlChannel(MPI_Comm world) {
  check_mpi(MPI_Comm_dup(world, &comm_), "MPI_Comm_dup (control channel)");
  check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank (control channel)");
  check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size (control channel)");
}

ControlChannel::~ControlChannel() {
  try {
    progress();
  } catch (const std::exception&) {
    // Destruction must not throw; what is still pending is freed below.
  }
  release(pending_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void ControlChannel::release(std::vector<PendingSend>& sends) {
  if (sends.empty()) return;
  for (auto& p : sends) MPI_Request_free(&p.request);
  // The buffers of freed requests must outlive the sends: keep them to the end of the process.
  static auto* leaked = new std::vector<std::shared_ptr<const std::string>>();
  for (auto& p : sends) leaked->push_back(std::move(p.bytes));
  sends.clear();
}

void ControlChannel::abandon(const std::vector<int>& dests) {
  std::vector<PendingSend> dropped;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (std::find(dests.begin(), dests.end(), it->dest) != dests.end()) {
      dropped.push_back(std::move(*it));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  release(dropped);
}

void ControlChannel::post(int dest, const std::shared_ptr<const std::string>& bytes) {
  require(dest >= 0 && dest < size_ && dest != rank_,
          "control channel: rank {} cannot send to rank {} (world of {})", rank_, dest, size_);
  require(bytes->size() <= static_cast<std::size_t>(INT_MAX),
          "control channel: a message of {} bytes to rank {} exceeds MPI's int count",
          bytes->size(), dest);
  PendingSend p{MPI_REQUEST_NULL, dest, bytes};
  const int rc = MPI_Isend(bytes->data(), static_cast<int>(bytes->size()), MPI_BYTE, dest,
                           kControlTag, comm_, &p.request);
  if (rc != MPI_SUCCESS)
    fail("MPI_Isend({} bytes, rank {} -> rank {}) failed: {}", bytes->size(), rank_, dest,
         mpi_error_string(rc));
  pending_.push_back(std::move(p));
}

void ControlChannel::send(int dest, std::string bytes) {
  post(dest, std::make_shared<const std::string>(std::move(bytes)));
  progress();
}

void ControlChannel::send_to(const std::vector<int>& dests, std::string bytes) {
  const auto shared = std::make_shared<const std::string>(std::move(bytes));
  for (int d : dests) post(d, shared);
  progress();
}

std::size_t ControlChannel::progress() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    int done = 0;
    const int rc = MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
      fail("MPI_Test(send of {} bytes, rank {} -> rank {}) failed: {}", it->bytes->size(), rank_,
           it->dest, mpi_error_string(rc));
    it = done ? pending_.erase(it) : it + 1;
  }
  return pending_.size();
}

bool ControlChannel::flush(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  PollBackoff backoff;
  while (progress() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    backoff.wait();
  }
  return true;
}

std::optional<ControlChannel::Received> ControlChannel::try_receive() {
  int flag = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Status status;
  check_mpi(MPI_Improbe(MPI_ANY_SOURCE, kControlTag, comm_, &flag, &message, &status),
            "MPI_Improbe (control channel)");
  if (!flag) return std::nullopt;
  int count = 0;
  check_mpi(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count (control channel)");
  Received r;
  r.source = status.MPI_SOURCE;
  r.bytes.resize(static_cast<std::size_t>(count));
  const int rc = MPI_Mrecv(r.bytes.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE);
  if (rc != MPI_SUCCESS)
    fail("MPI_Mrecv({} bytes from rank {}) failed: {}", count, r.source, mpi_error_string(rc));
  return r;
}

std::optional<ControlChannel::Received> ControlChannel::receive_for(
    std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  PollBackoff backoff;
  while (true) {
    progress();
    if (auto r = try_receive()) return r;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    backoff.wait();
  }
}

}  // namespace shardserve::comm
