#include "backend/memory/memory_backend.h"

#include <malloc.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// A full partition waits (its buckets / kScanBucketsPerMs) ms between two
// on-demand scans. A scan visits roughly this many buckets per ms, so a flood
// of refused new buckets spends at most about half a core on scans (measured:
// a scan of 1M buckets takes ~20-60 ms here).
constexpr uint64_t kScanBucketsPerMs = 16'384;

// The heap bytes glibc's malloc takes for a request of `n` bytes: the request
// plus an 8-byte header, rounded up to 16, at least 32. From its mmap
// threshold (128 KiB initially) a request gets whole pages.
uint64_t MallocBytes(uint64_t n) {
  if (n >= (uint64_t{128} << 10)) return (n + 16 + 4095) / 4096 * 4096;
  return std::max<uint64_t>(32, (n + 8 + 15) / 16 * 16);
}

// A scan that drops at least this many bytes of buckets hands the freed heap
// back to the kernel (see ReleaseFreedMemory).
constexpr uint64_t kReleaseAfterBytes = uint64_t{4} << 20;

// glibc keeps freed heap memory resident (only the top of the heap is given
// back), and allocates large blocks (the bucket tables) with mmap, so freed
// keys would stay in RSS next to new tables: after a partition's buckets turn
// over from one mix of key sizes to another, RSS could reach about twice the
// budget. malloc_trim(0) returns the free pages of every arena.
void ReleaseFreedMemory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

// libstdc++'s std::string keeps up to 15 bytes inline.
constexpr size_t kInlineStringBytes = 15;

}  // namespace

uint64_t MemoryBackend::BucketBytes(size_t key_bytes) {
  const uint64_t heap = key_bytes <= kInlineStringBytes ? 0 : MallocBytes(key_bytes + 1);
  return kTableBytesPerBucket + heap;
}

MemoryBackend::Partition::Partition(std::string name, MemoryShare share)
    : name_(std::move(name)),
      max_bytes_(share.max_bytes),
      max_buckets_(share.max_buckets),
      shards_(std::make_unique<std::array<Shard, kShards>>()) {}

bool MemoryBackend::Partition::TryReserve(uint64_t bytes) {
  const uint64_t max_buckets = max_buckets_.load(std::memory_order_relaxed);
  uint64_t n = buckets_.load(std::memory_order_relaxed);
  do {
    if (n >= max_buckets) return false;
  } while (!buckets_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
  const uint64_t max_bytes = max_bytes_.load(std::memory_order_relaxed);
  uint64_t b = bytes_.load(std::memory_order_relaxed);
  do {
    if (b > max_bytes || bytes > max_bytes - b) {
      buckets_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
  } while (!bytes_.compare_exchange_weak(b, b + bytes, std::memory_order_relaxed));
  return true;
}

void MemoryBackend::Partition::Release(uint64_t buckets, uint64_t bytes) {
  buckets_.fetch_sub(buckets, std::memory_order_relaxed);
  bytes_.fetch_sub(bytes, std::memory_order_relaxed);
}

void MemoryBackend::Partition::NoteFullAt(int64_t full_at_ms) {
  // Called with the bucket's shard locked, so a concurrent Scan either sees
  // the bucket or sees this lowered bound (see Scan).
  int64_t current = min_full_at_ms_.load(std::memory_order_relaxed);
  while (full_at_ms < current && !min_full_at_ms_.compare_exchange_weak(
                                     current, full_at_ms, std::memory_order_relaxed)) {
  }
}

MemoryBackend::MemoryBackend(const Clock& clock, MemoryBackendOptions options)
    : clock_(clock), options_(options) {
  default_partition_ = AddPartition("", {options.max_bytes, options.max_buckets});
  if (options_.sweep_interval_ms > 0) sweeper_ = std::thread([this] { SweepLoop(); });
}

MemoryBackend::~MemoryBackend() {
  {
    MutexLock lock(&sweep_mu_);
    stopping_ = true;
  }
  sweep_cv_.SignalAll();
  if (sweeper_.joinable()) sweeper_.join();
}

MemoryBackend::Partition* MemoryBackend::AddPartition(std::string name,
                                                      MemoryShare share) {
  std::unique_ptr<Partition> partition(new Partition(std::move(name), share));
  Partition* raw = partition.get();
  MutexLock lock(&partitions_mu_);
  partitions_.push_back(std::move(partition));
  return raw;
}

MemoryBackend::Partition* MemoryBackend::FindPartition(absl::string_view name) const {
  MutexLock lock(&partitions_mu_);
  for (const auto& p : partitions_) {
    if (p.get() != default_partition_ && p->name() == name &&
        !p->retired_.load(std::memory_order_relaxed)) {
      return p.get();
    }
  }
  return nullptr;
}

uint64_t MemoryBackend::RemovePartition(Partition* partition) {
  partition->retired_.store(true, std::memory_order_relaxed);
  MutexLock scan_lock(&partition->scan_mu_);
  uint64_t dropped = 0;
  uint64_t bytes = 0;
  for (Shard& shard : *partition->shards_) {
    SpinLockGuard lock(shard.mu);
    for (const auto& [key, entry] : shard.buckets) bytes += BucketBytes(key.size());
    dropped += shard.buckets.size();
    Map().swap(shard.buckets);  // frees the table too
  }
  partition->Release(dropped, bytes);
  if (bytes >= kReleaseAfterBytes) ReleaseFreedMemory();
  return dropped;
}

void MemoryBackend::SetShare(Partition* partition, MemoryShare share) {
  partition->max_bytes_.store(share.max_bytes, std::memory_order_relaxed);
  partition->max_buckets_.store(share.max_buckets, std::memory_order_relaxed);
}

void MemoryBackend::Decide(absl::string_view key, const Rate& rate, uint64_t cost,
                           DecisionCallback done) {
  std::move(done)(DecideNow(nullptr, key, rate, cost));
}

void MemoryBackend::DecideIn(BackendPartition* partition, absl::string_view key,
                             const Rate& rate, uint64_t cost, DecisionCallback done) {
  std::move(done)(DecideNow(partition, key, rate, cost));
}

void MemoryBackend::DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) {
  std::move(done)(DecideBatchNow(ops));
}

void MemoryBackend::DecideAllOrNothing(absl::Span<const BucketOp> ops,
                                       AllOrNothingCallback done) {
  std::move(done)(DecideAllOrNothingNow(ops));
}

void MemoryBackend::Peek(BackendPartition* partition, absl::string_view key,
                         const Rate& rate, uint64_t cost, PeekCallback done) {
  std::move(done)(PeekNow(partition, key, rate, cost));
}

void MemoryBackend::Reset(BackendPartition* partition, BucketSelector selector,
                          CountCallback done) {
  std::move(done)(ResetNow(partition, selector));
}

PeekResult MemoryBackend::PeekNow(BackendPartition* partition_handle,
                                  absl::string_view key, const Rate& rate,
                                  uint64_t cost) {
  Partition& partition = Resolve(partition_handle);
  const size_t hash = HashOf(key);
  Shard& shard = partition.ShardFor(hash);
  const int64_t now_ms = clock_.NowMs();
  PeekResult result;
  BucketState unused;
  SpinLockGuard lock(shard.mu);
  auto it = shard.buckets.find(key, hash);
  const BucketState* state = it != shard.buckets.end() ? &it->second.state : nullptr;
  result.hit = traffik::Decide(state, rate, cost, now_ms, &unused);
  result.as_is = traffik::Decide(state, rate, /*cost=*/0, now_ms, &unused);
  return result;
}

uint64_t MemoryBackend::ResetNow(BackendPartition* partition_handle,
                                 const BucketSelector& selector) {
  Partition& partition = Resolve(partition_handle);
  // One at a time with the partition's scans, which also erase and shrink.
  MutexLock scan_lock(&partition.scan_mu_);
  uint64_t removed = 0;
  uint64_t bytes = 0;
  for (Shard& shard : *partition.shards_) {
    SpinLockGuard lock(shard.mu);
    Map& map = shard.buckets;
    uint64_t removed_here = 0;
    for (auto it = map.begin(); it != map.end();) {
      const absl::string_view key = it->first;
      if (selector.whole_partition || (absl::StartsWith(key, selector.key_prefix) &&
                                       (!selector.matches || selector.matches(key)))) {
        bytes += BucketBytes(key.size());
        ++removed_here;
        map.erase(it++);
      } else {
        ++it;
      }
    }
    // As in Scan: keep every table at least kMinLoadNum/kMinLoadDen full.
    if (removed_here > 0 && map.capacity() > 15 &&
        map.size() * kMinLoadDen < map.capacity() * kMinLoadNum) {
      map.rehash(0);
    }
    removed += removed_here;
  }
  // min_full_at_ms_ stays a valid lower bound: removing buckets cannot lower it.
  partition.Release(removed, bytes);
  if (bytes >= kReleaseAfterBytes) ReleaseFreedMemory();
  return removed;
}

absl::Status MemoryBackend::NoRoom(Partition& partition) const {
  const MemoryShare share = partition.share();
  const std::string budget =
      absl::StrCat("(", share.max_buckets, " buckets, ", share.max_bytes, " bytes)");
  if (partition.name().empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("memory: no room for a new bucket: the backend's budget ", budget,
                     " is taken by buckets that are not full again yet"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "memory: no room for a new bucket of tenant '", absl::CHexEscape(partition.name()),
      "': its share ", budget, " is taken by buckets that are not full again yet"));
}

bool MemoryBackend::ScanMayHelp(const Partition& partition, int64_t now_ms) {
  return now_ms >= partition.min_full_at_ms_.load(std::memory_order_relaxed) &&
         now_ms >= partition.next_scan_ms_.load(std::memory_order_relaxed);
}

uint64_t MemoryBackend::Scan(Partition& partition, int64_t now_ms, bool on_demand) {
  MutexLock scan_lock(&partition.scan_mu_);
  // Another scan may have run while this one waited for the lock.
  if (on_demand && !ScanMayHelp(partition, now_ms)) return 0;
  // Recomputed below, shard by shard. A bucket stored or updated meanwhile
  // lowers it itself (NoteFullAt, under its shard's lock).
  partition.min_full_at_ms_.store(kNever, std::memory_order_relaxed);
  uint64_t dropped = 0;
  uint64_t bytes = 0;
  for (Shard& shard : *partition.shards_) {
    SpinLockGuard lock(shard.mu);
    Map& map = shard.buckets;
    int64_t shard_min = kNever;
    for (auto it = map.begin(); it != map.end();) {
      if (it->second.full_at_ms <= now_ms) {
        bytes += BucketBytes(it->first.size());
        ++dropped;
        map.erase(it++);
      } else {
        shard_min = std::min(shard_min, it->second.full_at_ms);
        ++it;
      }
    }
    // Keep every table at least kMinLoadNum/kMinLoadDen full, as
    // kTableBytesPerBucket assumes (rehash(0) shrinks to fit).
    if (map.capacity() > 15 && map.size() * kMinLoadDen < map.capacity() * kMinLoadNum) {
      map.rehash(0);
    }
    partition.NoteFullAt(shard_min);
  }
  partition.Release(dropped, bytes);
  if (on_demand) partition.evictions_.fetch_add(dropped, std::memory_order_relaxed);
  if (bytes >= kReleaseAfterBytes) ReleaseFreedMemory();
  partition.next_scan_ms_.store(
      now_ms + 1 + static_cast<int64_t>(partition.buckets() / kScanBucketsPerMs),
      std::memory_order_relaxed);
  return dropped;
}

absl::StatusOr<Decision> MemoryBackend::DecideNow(BackendPartition* partition_handle,
                                                  absl::string_view key, const Rate& rate,
                                                  uint64_t cost) {
  Partition& partition = Resolve(partition_handle);
  const size_t hash = HashOf(key);
  Shard& shard = partition.ShardFor(hash);
  const int64_t now_ms = clock_.NowMs();
  for (bool scanned = false;; scanned = true) {
    {
      SpinLockGuard lock(shard.mu);
      auto it = shard.buckets.find(key, hash);
      if (it != shard.buckets.end()) {
        Entry& entry = it->second;
        const Decision d =
            traffik::Decide(&entry.state, rate, cost, now_ms, &entry.state);
        const int64_t full_at_ms = FullAtMs(entry.state, rate);
        // Only a different rate on the same key can bring it forward.
        if (full_at_ms < entry.full_at_ms) partition.NoteFullAt(full_at_ms);
        entry.full_at_ms = full_at_ms;
        return d;
      }
      BucketState state;
      const Decision d = traffik::Decide(nullptr, rate, cost, now_ms, &state);
      const int64_t full_at_ms = FullAtMs(state, rate);
      // A bucket that is still full after the hit (refused, which cannot
      // happen for a new bucket, or a cost of 0) needs no storage.
      if (full_at_ms <= now_ms) return d;
      if (partition.TryReserve(BucketBytes(key.size()))) {
        shard.buckets.emplace(std::string(key), Entry{state, full_at_ms});
        partition.NoteFullAt(full_at_ms);
        return d;
      }
    }
    // No room: drop the partition's buckets that are full again (no loss),
    // if any may be, and try once more. Never another bucket that is not
    // full: that would let its owner through sooner.
    if (scanned || !ScanMayHelp(partition, now_ms)) {
      partition.rejections_.fetch_add(1, std::memory_order_relaxed);
      return NoRoom(partition);
    }
    Scan(partition, now_ms, /*on_demand=*/true);
  }
}

absl::StatusOr<std::vector<Decision>> MemoryBackend::DecideBatchNow(
    absl::Span<const BucketOp> ops) {
  absl::StatusOr<AllOrNothingResult> result = DecideLocked(ops, /*all_or_nothing=*/false);
  if (!result.ok()) return result.status();
  return std::move(result->decisions);
}

absl::StatusOr<AllOrNothingResult> MemoryBackend::DecideAllOrNothingNow(
    absl::Span<const BucketOp> ops) {
  return DecideLocked(ops, /*all_or_nothing=*/true);
}

absl::StatusOr<AllOrNothingResult> MemoryBackend::DecideLocked(
    absl::Span<const BucketOp> ops, bool all_or_nothing)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {  // locks a run-time set of shards
  AllOrNothingResult result;
  result.applied = true;
  if (ops.empty()) return result;

  // One scratch copy per distinct (partition, key): the evaluation runs on
  // these and is written back only when it is committed.
  struct Scratch {
    Partition* partition = nullptr;
    absl::string_view key;
    size_t hash = 0;
    Shard* shard = nullptr;
    bool existed = false;  // stored when the shards were locked
    BucketState before;    // its state then (when existed)
    bool has_state = false;
    BucketState state;           // as the evaluation leaves it
    const Rate* rate = nullptr;  // of the last op on it that takes
    bool written = false;        // an op that takes (not a peek) touched it
    bool reserved = false;       // room taken for it as a new bucket
  };
  // A dry run: an all-or-nothing batch of peeks only, evaluated as usual but
  // never written.
  bool dry_run = all_or_nothing;
  for (const BucketOp& op : ops) dry_run = dry_run && op.peek;
  std::vector<Scratch> buckets;
  std::vector<size_t> bucket_of(ops.size());
  absl::flat_hash_map<std::pair<const Partition*, absl::string_view>, size_t> index;
  for (size_t i = 0; i < ops.size(); ++i) {
    Partition& partition = Resolve(ops[i].partition);
    auto [it, inserted] = index.try_emplace(
        std::make_pair(&partition, absl::string_view(ops[i].key)), buckets.size());
    if (inserted) {
      Scratch b;
      b.partition = &partition;
      b.key = ops[i].key;
      b.hash = HashOf(b.key);
      b.shard = &partition.ShardFor(b.hash);
      buckets.push_back(b);
    }
    bucket_of[i] = it->second;
  }
  // Each shard locked once, in ascending address order.
  std::vector<Shard*> locked;
  locked.reserve(buckets.size());
  for (const Scratch& b : buckets) locked.push_back(b.shard);
  std::sort(locked.begin(), locked.end());
  locked.erase(std::unique(locked.begin(), locked.end()), locked.end());

  std::vector<Partition*> scanned;  // partitions scanned for room
  for (;;) {
    const int64_t now_ms = clock_.NowMs();
    for (Shard* shard : locked) shard->mu.Lock();
    for (Scratch& b : buckets) {
      auto it = b.shard->buckets.find(b.key, b.hash);
      b.existed = it != b.shard->buckets.end();
      b.has_state = b.existed;
      if (b.existed) {
        b.before = it->second.state;
        b.state = b.before;
      }
      b.reserved = false;
      b.written = false;
    }

    result.applied = true;
    result.decisions.clear();
    result.decisions.reserve(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      Scratch& b = buckets[bucket_of[i]];
      if (ops[i].peek && !dry_run) {
        // Sees what earlier ops took; takes nothing itself.
        BucketState unused;
        result.decisions.push_back(traffik::Decide(
            b.has_state ? &b.state : nullptr, ops[i].rate, ops[i].cost, now_ms, &unused));
        continue;
      }
      const Decision d = traffik::Decide(b.has_state ? &b.state : nullptr, ops[i].rate,
                                         ops[i].cost, now_ms, &b.state);
      b.has_state = true;
      b.rate = &ops[i].rate;
      b.written = !dry_run;
      if (!d.allowed) result.applied = false;
      result.decisions.push_back(d);
    }

    Partition* no_room = nullptr;
    if (all_or_nothing && !result.applied) {
      // Nothing taken: describe each bucket as it stands.
      for (size_t i = 0; i < ops.size(); ++i) {
        const Scratch& b = buckets[bucket_of[i]];
        BucketState unused;
        const Decision as_is = traffik::Decide(b.existed ? &b.before : nullptr,
                                               ops[i].rate, /*cost=*/0, now_ms, &unused);
        result.decisions[i].remaining = as_is.remaining;
        result.decisions[i].reset_ms = as_is.reset_ms;
      }
    } else if (!dry_run) {
      // Room for every new bucket first, so the batch is stored whole or not
      // at all.
      for (Scratch& b : buckets) {
        if (!b.written || b.existed || FullAtMs(b.state, *b.rate) <= now_ms) continue;
        if (!b.partition->TryReserve(BucketBytes(b.key.size()))) {
          no_room = b.partition;
          break;
        }
        b.reserved = true;
      }
      for (Scratch& b : buckets) {
        if (no_room != nullptr) {
          if (b.reserved) b.partition->Release(1, BucketBytes(b.key.size()));
          continue;
        }
        if (!b.written) continue;  // peeked at only
        const int64_t full_at_ms = FullAtMs(b.state, *b.rate);
        Map& map = b.shard->buckets;
        if (b.existed) {
          Entry& entry = map.find(b.key, b.hash)->second;
          if (full_at_ms < entry.full_at_ms) b.partition->NoteFullAt(full_at_ms);
          entry = Entry{b.state, full_at_ms};
        } else if (b.reserved) {
          map.emplace(std::string(b.key), Entry{b.state, full_at_ms});
          b.partition->NoteFullAt(full_at_ms);
        }
      }
    }
    for (auto it = locked.rbegin(); it != locked.rend(); ++it) (*it)->mu.Unlock();
    if (no_room == nullptr) return result;

    // As for a single decision: drop what is full again, once per partition.
    if (std::find(scanned.begin(), scanned.end(), no_room) != scanned.end() ||
        !ScanMayHelp(*no_room, now_ms)) {
      no_room->rejections_.fetch_add(1, std::memory_order_relaxed);
      return NoRoom(*no_room);
    }
    scanned.push_back(no_room);
    Scan(*no_room, now_ms, /*on_demand=*/true);
  }
}

uint64_t MemoryBackend::SweepExpired() {
  std::vector<Partition*> partitions;
  {
    MutexLock lock(&partitions_mu_);
    for (const auto& p : partitions_) partitions.push_back(p.get());
  }
  uint64_t total = 0;
  for (Partition* p : partitions) total += Scan(*p, clock_.NowMs(), /*on_demand=*/false);
  return total;
}

uint64_t MemoryBackend::bucket_count() const {
  MutexLock lock(&partitions_mu_);
  uint64_t total = 0;
  for (const auto& p : partitions_) total += p->buckets();
  return total;
}

uint64_t MemoryBackend::evictions() const {
  MutexLock lock(&partitions_mu_);
  uint64_t total = 0;
  for (const auto& p : partitions_) total += p->evictions();
  return total;
}

void MemoryBackend::SweepLoop() {
  pthread_setname_np(pthread_self(), "traffik-sweep");
  sweep_mu_.Lock();
  while (!stopping_) {
    sweep_cv_.WaitFor(&sweep_mu_, std::chrono::milliseconds(options_.sweep_interval_ms));
    if (stopping_) break;
    sweep_mu_.Unlock();
    SweepExpired();
    sweep_mu_.Lock();
  }
  sweep_mu_.Unlock();
}

}  // namespace traffik
