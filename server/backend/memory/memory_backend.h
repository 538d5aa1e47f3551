#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "backend/backend.h"
#include "clock/clock.h"

namespace traffik {

// A test-and-test-and-set spin lock for critical sections of a few dozen
// nanoseconds (one bucket update), where a futex-based mutex costs more than
// the work it protects. Spins with a CPU pause, yields after a while so a
// preempted holder can run.
class ABSL_LOCKABLE SpinLock {
 public:
  static void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    for (int spins = 0;; ++spins) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      while (locked_.load(std::memory_order_relaxed)) {
        if (spins++ > 64) {
          std::this_thread::yield();
        } else {
          CpuRelax();
        }
      }
    }
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    locked_.store(false, std::memory_order_release);
  }

 private:
  std::atomic<bool> locked_{false};
};

class ABSL_SCOPED_LOCKABLE SpinLockGuard {
 public:
  explicit SpinLockGuard(SpinLock& lock) ABSL_EXCLUSIVE_LOCK_FUNCTION(lock)
      : lock_(lock) {
    lock_.Lock();
  }
  ~SpinLockGuard() ABSL_UNLOCK_FUNCTION() { lock_.Unlock(); }
  SpinLockGuard(const SpinLockGuard&) = delete;
  SpinLockGuard& operator=(const SpinLockGuard&) = delete;

 private:
  SpinLock& lock_;
};

struct MemoryBackendOptions {
  // Upper bound on stored buckets (spread evenly over the shards). Buckets that
  // have refilled to full are dropped first (no loss); beyond that the buckets
  // closest to full are evicted and counted in evictions().
  uint64_t max_buckets = 1'000'000;
  // How often a background thread drops buckets that are full again; 0 turns
  // the thread off (tests call SweepExpired() themselves).
  int64_t sweep_interval_ms = 10'000;
};

// The embedded bucket store: a hash map split into kShards shards, each with
// its own lock, so concurrent decisions on different keys rarely contend and
// decisions on one key are serialised exactly. Completes callbacks inline.
//
// Thread-safe. Allocates per decision only when a new bucket's key is stored.
class MemoryBackend final : public Backend {
 public:
  static constexpr int kShardBits = 6;
  static constexpr int kShards = 1 << kShardBits;

  MemoryBackend(const Clock& clock, MemoryBackendOptions options);
  ~MemoryBackend() override;
  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;

  absl::string_view Name() const override { return "memory"; }
  bool CompletesInline() const override { return true; }
  void Decide(absl::string_view key, const Rate& rate, uint64_t cost,
              DecisionCallback done) override;
  void DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) override;
  // Locks the shards involved (each once, in ascending order, so it cannot
  // deadlock with another batch) for the whole evaluation: exact under any
  // concurrency.
  void DecideAllOrNothing(absl::Span<const BucketOp> ops,
                          AllOrNothingCallback done) override;

  // The synchronous core of DecideAllOrNothing.
  AllOrNothingResult DecideAllOrNothingNow(absl::Span<const BucketOp> ops);

  // The synchronous core of Decide.
  Decision DecideNow(absl::string_view key, const Rate& rate, uint64_t cost);

  // Drops every bucket that is full again at the current time; returns how many.
  uint64_t SweepExpired();

  // Buckets currently stored.
  uint64_t bucket_count() const { return bucket_count_.load(std::memory_order_relaxed); }
  // Buckets dropped before they were full (state lost) because of max_buckets.
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    BucketState state;
    int64_t full_at_ms;  // from then on the bucket equals a new one
  };
  using Map = absl::flat_hash_map<std::string, Entry>;
  struct alignas(64) Shard {
    SpinLock mu;
    Map buckets ABSL_GUARDED_BY(mu);
    Map::hasher hasher;  // stateless; the map's hash function
  };

  // Makes room for one more bucket in `shard` (which is at its cap).
  void MakeRoom(Shard& shard, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void SweepLoop();

  const Clock& clock_;
  const MemoryBackendOptions options_;
  const uint64_t per_shard_cap_;
  std::unique_ptr<std::array<Shard, kShards>> shards_;
  std::atomic<uint64_t> bucket_count_{0};
  std::atomic<uint64_t> evictions_{0};

  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  bool stopping_ = false;  // guarded by sweep_mu_
  std::thread sweeper_;
};

}  // namespace traffik
