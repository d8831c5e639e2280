#pragma once
// The gateway's bound on generations in flight. Every HTTP worker thread that streams a
// completion is held until the stream ends, so without a bound a burst (or clients that read
// slowly) would take every thread and later connections would wait in the accept queue with no
// answer. Past `limit` active generations a request is answered 429 at once, from a thread the
// bound leaves free (limit < threads), while the admitted ones carry on.
#include <atomic>
#include <memory>

namespace shardserve::gateway {

class ActiveLimit {
 public:
  explicit ActiveLimit(int limit) : limit_(limit) {}

  // A slot held until the returned pointer (and every copy) is gone; null when `limit` are held.
  std::shared_ptr<void> try_acquire() {
    int n = active_.load();
    do {
      if (n >= limit_) return nullptr;
    } while (!active_.compare_exchange_weak(n, n + 1));
    // (It points at this object, not at nothing: a shared_ptr holding null tests false.)
    return std::shared_ptr<void>(this, [](void* self) {
      static_cast<ActiveLimit*>(self)->active_.fetch_sub(1);
    });
  }
  int active() const { return active_.load(); }
  int limit() const { return limit_; }

 private:
  const int limit_;
  std::atomic<int> active_{0};
};

}  // namespace shardserve::gateway
