#include "coordinator/runtime/handshake.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/error.h"
#include "coordinator/runtime/mpi_transport.h"
#include "messages/codec.h"

namespace shardserve::runtime {
namespace {

std::string human_bytes(int64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return fmt::format("{:.1f} {}", v, units[u]);
}

// Waits for one message from a worker of each rank in `pending` (erasing them as they come);
// `on_message(source, message)` handles each. A WorkerError or a timeout throws.
template <typename Handler>
void gather(comm::ControlChannel& channel, const comm::WorldLayout& layout,
            std::vector<bool>& pending, const char* what, std::chrono::milliseconds timeout,
            Handler&& on_message) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] { return std::count(pending.begin(), pending.end(), true); };
  while (left() > 0) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      std::vector<int> missing;
      for (int w = 1; w < static_cast<int>(pending.size()); ++w)
        if (pending[w]) missing.push_back(w);
      fail("start-up: no {} from world rank(s) {} within {:.0f} s (runtime.startup_timeout_s)",
           what, fmt::join(missing, ", "), std::chrono::duration<double>(timeout).count());
    }
    auto r = channel.receive_for(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::seconds(1))));
    if (!r) continue;
    messages::Message m;
    try {
      m = messages::decode(r->bytes);
    } catch (const Error& e) {
      fail("start-up: {} sent an unreadable message: {}", describe_rank(layout, r->source), e.what());
    }
    if (auto* e = std::get_if<messages::WorkerError>(&m))
      fail("start-up: {} failed: {}", describe_rank(layout, r->source), e->message);
    require(r->source >= 1 && r->source < static_cast<int>(pending.size()) && pending[r->source],
            "start-up: unexpected {} message from {} while waiting for {}",
            messages::message_kind_name(messages::kind_of(m)), describe_rank(layout, r->source),
            what);
    on_message(r->source, m);
    pending[r->source] = false;
  }
}

}  // namespace

std::vector<ReplicaCapacity> check_hellos(const comm::WorldLayout& layout,
                                          const std::vector<messages::WorkerHello>& hellos,
                                          const std::string& expected_model_name) {
  require(static_cast<int>(hellos.size()) == layout.world_size() - 1,
          "start-up: {} worker reports for {} workers", hellos.size(), layout.world_size() - 1);
  const auto& ref = hellos.front();
  for (const auto& h : hellos) {
    const std::string who = describe_rank(layout, h.world_rank);
    require(h.replica == layout.replica_of(h.world_rank) &&
                h.tp_rank == layout.tp_rank_of(h.world_rank) && h.tp_size == layout.tp,
            "start-up: {} reports replica {}, tp rank {} of {}", who, h.replica, h.tp_rank,
            h.tp_size);
    require(h.model_name == expected_model_name,
            "start-up: {} serves model '{}' but the coordinator expects '{}'", who, h.model_name,
            expected_model_name);
    auto same = [&](const char* field, auto mine, auto theirs) {
      require(mine == theirs,
              "start-up: {} reports {} = {} but world rank {} reports {}: every rank must load the "
              "same model with the same settings",
              who, field, mine, ref.world_rank, theirs);
    };
    same("model_type", h.model_type, ref.model_type);
    same("num_layers", h.num_layers, ref.num_layers);
    same("hidden_size", h.hidden_size, ref.hidden_size);
    same("vocab_size", h.vocab_size, ref.vocab_size);
    same("num_heads_per_rank", h.num_heads_per_rank, ref.num_heads_per_rank);
    same("num_kv_heads_per_rank", h.num_kv_heads_per_rank, ref.num_kv_heads_per_rank);
    same("head_dim", h.head_dim, ref.head_dim);
    same("max_position_embeddings", h.max_position_embeddings, ref.max_position_embeddings);
    same("block_size", h.block_size, ref.block_size);
    require(h.num_kv_blocks >= 1, "start-up: {} has room for {} KV blocks ({})", who,
            h.num_kv_blocks, h.kv_source);
  }
  std::vector<ReplicaCapacity> replicas;
  for (int r = 0; r < layout.replicas; ++r) {
    ReplicaCapacity c;
    c.replica = r;
    c.world_ranks = layout.ranks_of(r);
    c.block_size = ref.block_size;
    c.num_kv_blocks = INT64_MAX;
    for (int w : c.world_ranks) c.num_kv_blocks = std::min(c.num_kv_blocks, hellos[w - 1].num_kv_blocks);
    replicas.push_back(c);
  }
  return replicas;
}

HandshakeResult run_handshake(comm::ControlChannel& channel, const comm::WorldLayout& layout,
                              const std::string& model_name, std::chrono::milliseconds timeout) {
  const int world = layout.world_size();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto remaining = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now()));
  };
  HandshakeResult result;
  result.hellos.resize(world - 1);
  std::vector<bool> pending(world, true);
  pending[0] = false;
  gather(channel, layout, pending, "WorkerHello", remaining(),
         [&](int source, messages::Message& m) {
           auto* h = std::get_if<messages::WorkerHello>(&m);
           require(h != nullptr, "start-up: {} sent {} instead of WorkerHello",
                   describe_rank(layout, source), messages::message_kind_name(messages::kind_of(m)));
           require(h->world_rank == source, "start-up: world rank {} reports itself as rank {}",
                   source, h->world_rank);
           spdlog::info(
               "{} on {} (pid {}): {} '{}' layers={} hidden={} vocab={} heads/rank={} "
               "kv_heads/rank={} head_dim={}; weights {}; KV {} blocks x {} tokens, {} per block ({})",
               describe_rank(layout, source), h->host, h->pid, h->model_type, h->model_name,
               h->num_layers, h->hidden_size, h->vocab_size, h->num_heads_per_rank,
               h->num_kv_heads_per_rank, h->head_dim, human_bytes(h->weight_bytes),
               h->num_kv_blocks, h->block_size, human_bytes(h->kv_bytes_per_block), h->kv_source);
           result.hellos[source - 1] = std::move(*h);
         });
  result.replicas = check_hellos(layout, result.hellos, model_name);
  for (const auto& c : result.replicas) {
    channel.send_to(c.world_ranks, messages::encode(messages::InitCache{c.num_kv_blocks}));
  }
  pending.assign(world, true);
  pending[0] = false;
  gather(channel, layout, pending, "WorkerReady", remaining(),
         [&](int source, messages::Message& m) {
           require(std::holds_alternative<messages::WorkerReady>(m),
                   "start-up: {} sent {} instead of WorkerReady", describe_rank(layout, source),
                   messages::message_kind_name(messages::kind_of(m)));
         });
  for (const auto& c : result.replicas) {
    spdlog::info("replica {}: world ranks {}, KV pool {} blocks x {} tokens = {} tokens (min over "
                 "its ranks)",
                 c.replica, fmt::join(c.world_ranks, ","), c.num_kv_blocks, c.block_size,
                 c.num_kv_blocks * c.block_size);
  }
  return result;
}

void abort_workers(comm::ControlChannel& channel, int world_size, const std::string& reason) {
  std::vector<int> workers;
  for (int w = 1; w < world_size; ++w) workers.push_back(w);
  if (workers.empty()) return;
  channel.send_to(workers, messages::encode(messages::Abort{reason}));
  channel.flush(std::chrono::seconds(10));
}

}  // namespace shardserve::runtime
