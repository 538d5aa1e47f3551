#pragma once

#include <sys/mman.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "backend/backend.h"
#include "base/mutex.h"
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

// The allocator of the bucket tables: blocks of 64 KiB and more come straight
// from mmap, so a table that its map replaces (grown or shrunk) goes back to
// the kernel at once instead of staying resident in malloc's free lists.
template <typename T>
struct TableAllocator {
  using value_type = T;
  static constexpr size_t kMmapBytes = size_t{64} << 10;

  TableAllocator() = default;
  template <typename U>
  TableAllocator(const TableAllocator<U>&) {}  // NOLINT: rebinding

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kMmapBytes) return static_cast<T*>(::operator new(bytes));
    void* p =
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();  // as ::operator new would
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kMmapBytes) {
      ::operator delete(p);
    } else {
      munmap(p, bytes);
    }
  }
  friend bool operator==(const TableAllocator&, const TableAllocator&) { return true; }
  friend bool operator!=(const TableAllocator&, const TableAllocator&) { return false; }
};

// A tenant's share of the memory backend: the most buckets it may store and
// the most bytes they may take (BucketBytes each).
struct MemoryShare {
  uint64_t max_bytes = 0;
  uint64_t max_buckets = 0;
};

struct MemoryBackendOptions {
  // The budget of the backend's default partition (used by hits that name no
  // partition). Tenants get their own partitions (AddPartition), whose shares
  // the caller keeps within the same budget.
  uint64_t max_buckets = 1'000'000;
  // How often a background thread drops buckets that are full again; 0 turns
  // the thread off (tests call SweepExpired() themselves).
  int64_t sweep_interval_ms = 10'000;
  // With max_buckets: the default partition's budget, in bytes (BucketBytes
  // per bucket).
  uint64_t max_bytes = uint64_t{256} << 20;
};

// The embedded bucket store. Each tenant has its own partition: a hash map
// split into kShards shards, each with its own lock, plus the tenant's share
// (buckets and bytes) and counters. So concurrent decisions on different keys
// rarely contend, decisions on one key are serialised exactly, and no tenant's
// traffic can touch another tenant's buckets or room. Completes callbacks
// inline.
//
// Memory: a stored bucket is charged BucketBytes(key size) against its
// partition's share; a new bucket that does not fit is refused with
// kResourceExhausted (after dropping the partition's buckets that are full
// again, which loses nothing). A bucket that is not full is never dropped: that
// would let its owner through sooner.
//
// Thread-safe. Allocates per decision only when a new bucket's key is stored.
class MemoryBackend final : public Backend {
 public:
  static constexpr int kShardBits = 6;
  static constexpr int kShards = 1 << kShardBits;

  class Partition;

  MemoryBackend(const Clock& clock, MemoryBackendOptions options);
  ~MemoryBackend() override;
  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;

  // A new partition for tenant `name` (a configured name: it labels metrics
  // and error messages). Owned by the backend; valid until it is destroyed.
  Partition* AddPartition(std::string name, MemoryShare share);
  // Changes a partition's share at run time. Lowering it below what is stored
  // drops nothing: new buckets are refused until enough are full again.
  static void SetShare(Partition* partition, MemoryShare share);
  // The live partition of tenant `name`, or nullptr.
  Partition* FindPartition(absl::string_view name) const;
  // Drops every bucket of `partition` and retires it: FindPartition no longer
  // returns it. The object stays valid until the backend is destroyed, since a
  // call prepared on an older configuration may still name it (such a late
  // hit stores a bucket there, which the sweep drops once it is full again).
  // Returns the buckets dropped.
  uint64_t RemovePartition(Partition* partition);
  // The partition used by hits that name none (budget from the options).
  Partition* default_partition() const { return default_partition_; }

  absl::string_view Name() const override { return "memory"; }
  bool CompletesInline() const override { return true; }
  void Decide(absl::string_view key, const Rate& rate, uint64_t cost,
              DecisionCallback done) override;
  void DecideIn(BackendPartition* partition, absl::string_view key, const Rate& rate,
                uint64_t cost, DecisionCallback done) override;
  // Atomic with respect to room: if the batch's new buckets do not all fit in
  // their partitions' shares, the whole batch is kResourceExhausted and takes
  // nothing.
  void DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) override;
  // Locks the shards involved (each once, in ascending address order, so it
  // cannot deadlock with another batch) for the whole evaluation: exact under
  // any concurrency. Ops may name different partitions.
  void DecideAllOrNothing(absl::Span<const BucketOp> ops,
                          AllOrNothingCallback done) override;
  // Under the bucket's shard lock; no bucket is created.
  void Peek(BackendPartition* partition, absl::string_view key, const Rate& rate,
            uint64_t cost, PeekCallback done) override;
  // Visits every bucket of the partition, one shard (locked) at a time.
  void Reset(BackendPartition* partition, BucketSelector selector,
             CountCallback done) override;

  // The synchronous cores of DecideIn (partition nullptr: the default one),
  // DecideBatch and DecideAllOrNothing.
  absl::StatusOr<Decision> DecideNow(absl::string_view key, const Rate& rate,
                                     uint64_t cost) {
    return DecideNow(nullptr, key, rate, cost);
  }
  absl::StatusOr<Decision> DecideNow(BackendPartition* partition, absl::string_view key,
                                     const Rate& rate, uint64_t cost);
  absl::StatusOr<std::vector<Decision>> DecideBatchNow(absl::Span<const BucketOp> ops);
  absl::StatusOr<AllOrNothingResult> DecideAllOrNothingNow(
      absl::Span<const BucketOp> ops);
  // The synchronous cores of Peek and Reset (partition nullptr: the default
  // one).
  PeekResult PeekNow(BackendPartition* partition, absl::string_view key, const Rate& rate,
                     uint64_t cost);
  uint64_t ResetNow(BackendPartition* partition, const BucketSelector& selector);

  // Drops every bucket that is full again at the current time; returns how many.
  uint64_t SweepExpired();

  // Buckets currently stored, in all partitions.
  uint64_t bucket_count() const;
  // Buckets dropped on demand because a partition's share was full (each was
  // full again, so no state was lost), in all partitions.
  uint64_t evictions() const;

  // The bytes charged for one stored bucket whose key is `key_bytes` long: its
  // hash-table slot and control byte at the table's lowest load
  // (kTableBytesPerBucket) plus the
  // key's heap block as glibc's malloc rounds it (none within the string's
  // inline buffer). tests/backend/memory_backend_test.cc measures it.
  static uint64_t BucketBytes(size_t key_bytes);

 private:
  struct Entry {
    BucketState state;
    int64_t full_at_ms;  // from then on the bucket equals a new one
  };
  // Transparent, so a lookup by string_view builds no string.
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(absl::string_view key) const {
      return absl::Hash<absl::string_view>{}(key);
    }
  };
  struct KeyEq {
    using is_transparent = void;
    bool operator()(absl::string_view a, absl::string_view b) const { return a == b; }
  };
  using Map = absl::flat_hash_map<std::string, Entry, KeyHash, KeyEq,
                                  TableAllocator<std::pair<const std::string, Entry>>>;
  struct alignas(64) Shard {
    SpinLock mu;
    Map buckets ABSL_GUARDED_BY(mu);
  };
  // The maps' own hash: it picks the shard (from the high bits; flat_hash_map
  // probes with the low ones) and drives the lookup.
  static size_t HashOf(absl::string_view key) { return Map::hasher{}(key); }

 public:
  // A table slot and its control byte.
  static constexpr uint64_t kSlotBytes = sizeof(Map::value_type) + 1;
  // Table bytes per stored bucket at the lowest load a table keeps: absl
  // grows a table (doubling it) at a load of 7/8, or of 25/32 when erased
  // slots use up its growth, so a grown table is at least 25/64 full; a scan
  // that leaves a table less full than that shrinks it to fit.
  static constexpr uint64_t kMinLoadNum = 25;
  static constexpr uint64_t kMinLoadDen = 64;
  static constexpr uint64_t kTableBytesPerBucket =
      (kSlotBytes * kMinLoadDen + kMinLoadNum - 1) / kMinLoadNum;

  // One tenant's buckets and share. Counters are read lock-free.
  class Partition final : public BackendPartition {
   public:
    const std::string& name() const { return name_; }
    MemoryShare share() const {
      return {max_bytes_.load(std::memory_order_relaxed),
              max_buckets_.load(std::memory_order_relaxed)};
    }
    uint64_t buckets() const { return buckets_.load(std::memory_order_relaxed); }
    uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
    // New buckets refused because the share was full.
    uint64_t rejections() const { return rejections_.load(std::memory_order_relaxed); }
    // Full-again buckets dropped to make room for a new one.
    uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

   private:
    friend class MemoryBackend;
    Partition(std::string name, MemoryShare share);

    Shard& ShardFor(size_t hash) const {
      return (*shards_)[static_cast<uint64_t>(hash) >> (64 - kShardBits)];
    }
    // Takes room for one bucket of `bytes`; false (nothing taken) when the
    // share has no room.
    bool TryReserve(uint64_t bytes);
    void Release(uint64_t buckets, uint64_t bytes);
    // Records that a stored bucket is full again at `full_at_ms`.
    void NoteFullAt(int64_t full_at_ms);

    const std::string name_;
    std::atomic<bool> retired_{false};  // by RemovePartition
    std::atomic<uint64_t> max_bytes_;
    std::atomic<uint64_t> max_buckets_;
    std::atomic<uint64_t> buckets_{0};
    std::atomic<uint64_t> bytes_{0};
    std::atomic<uint64_t> rejections_{0};
    std::atomic<uint64_t> evictions_{0};
    // No stored bucket is full again before this (a lower bound, lowered by
    // NoteFullAt and recomputed by each scan): a full partition scans for
    // free room only when something may be found.
    std::atomic<int64_t> min_full_at_ms_{std::numeric_limits<int64_t>::max()};
    // Earliest time of the next on-demand scan (bounds the scans' CPU cost).
    std::atomic<int64_t> next_scan_ms_{0};
    // Held by a scan (one at a time per partition).
    Mutex scan_mu_;
    const std::unique_ptr<std::array<Shard, kShards>> shards_;
  };

 private:
  // Drops `partition`'s buckets that are full again at `now_ms`. On demand
  // (a new bucket found no room), only when one may be found and not more
  // often than the scan's cost allows; the dropped buckets then count as
  // evictions. Takes each shard's lock in turn: call with none held.
  uint64_t Scan(Partition& partition, int64_t now_ms, bool on_demand);
  // True when an on-demand Scan of `partition` could find room now.
  static bool ScanMayHelp(const Partition& partition, int64_t now_ms);
  absl::Status NoRoom(Partition& partition) const;
  Partition& Resolve(BackendPartition* partition) const {
    return partition != nullptr ? *static_cast<Partition*>(partition)
                                : *default_partition_;
  }
  // The locked evaluation behind DecideBatchNow and DecideAllOrNothingNow.
  absl::StatusOr<AllOrNothingResult> DecideLocked(absl::Span<const BucketOp> ops,
                                                  bool all_or_nothing);
  void SweepLoop();

  const Clock& clock_;
  const MemoryBackendOptions options_;

  mutable Mutex partitions_mu_;
  std::vector<std::unique_ptr<Partition>> partitions_ ABSL_GUARDED_BY(partitions_mu_);
  Partition* default_partition_ = nullptr;  // set by the constructor; in partitions_

  Mutex sweep_mu_;
  CondVar sweep_cv_;
  bool stopping_ ABSL_GUARDED_BY(sweep_mu_) = false;
  std::thread sweeper_;
};

}  // namespace traffik
