#include "backend/memory/memory_backend.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"

namespace traffik {

MemoryBackend::MemoryBackend(const Clock& clock, MemoryBackendOptions options)
    : clock_(clock),
      options_(options),
      per_shard_cap_(std::max<uint64_t>(1, options.max_buckets / kShards)),
      shards_(std::make_unique<std::array<Shard, kShards>>()) {
  if (options_.sweep_interval_ms > 0) sweeper_ = std::thread([this] { SweepLoop(); });
}

MemoryBackend::~MemoryBackend() {
  {
    std::lock_guard<std::mutex> lock(sweep_mu_);
    stopping_ = true;
  }
  sweep_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

void MemoryBackend::Decide(absl::string_view key, const Rate& rate, uint64_t cost,
                           DecisionCallback done) {
  std::move(done)(DecideNow(key, rate, cost));
}

void MemoryBackend::DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) {
  std::vector<Decision> out;
  out.reserve(ops.size());
  for (const BucketOp& op : ops) out.push_back(DecideNow(op.key, op.rate, op.cost));
  std::move(done)(std::move(out));
}

void MemoryBackend::DecideAllOrNothing(absl::Span<const BucketOp> ops,
                                       AllOrNothingCallback done) {
  std::move(done)(DecideAllOrNothingNow(ops));
}

AllOrNothingResult MemoryBackend::DecideAllOrNothingNow(absl::Span<const BucketOp> ops)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {  // locks a run-time set of shards
  AllOrNothingResult result;
  result.applied = true;
  if (ops.empty()) return result;

  // One scratch copy per distinct key: the evaluation runs on these and is
  // written back only if every op is allowed.
  struct Scratch {
    absl::string_view key;
    size_t hash = 0;
    Shard* shard = nullptr;
    bool existed = false;  // stored when the shards were locked
    BucketState before;    // its state then (when existed)
    bool has_state = false;
    BucketState state;           // as the evaluation leaves it
    const Rate* rate = nullptr;  // of the last op on it
  };
  std::vector<Scratch> buckets;
  std::vector<size_t> bucket_of(ops.size());
  absl::flat_hash_map<absl::string_view, size_t> index;
  const Shard& any = (*shards_)[0];
  for (size_t i = 0; i < ops.size(); ++i) {
    auto [it, inserted] = index.try_emplace(ops[i].key, buckets.size());
    if (inserted) {
      Scratch b;
      b.key = ops[i].key;
      b.hash = any.hasher(b.key);
      b.shard = &(*shards_)[static_cast<uint64_t>(b.hash) >> (64 - kShardBits)];
      buckets.push_back(b);
    }
    bucket_of[i] = it->second;
  }
  // Each shard locked once, in ascending address (= index) order.
  std::vector<Shard*> locked;
  locked.reserve(buckets.size());
  for (const Scratch& b : buckets) locked.push_back(b.shard);
  std::sort(locked.begin(), locked.end());
  locked.erase(std::unique(locked.begin(), locked.end()), locked.end());

  const int64_t now_ms = clock_.NowMs();
  for (Shard* shard : locked) shard->mu.Lock();
  for (Scratch& b : buckets) {
    auto it = b.shard->buckets.find(b.key, b.hash);
    if (it != b.shard->buckets.end()) {
      b.existed = true;
      b.has_state = true;
      b.before = it->second.state;
      b.state = b.before;
    }
  }

  result.decisions.reserve(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    Scratch& b = buckets[bucket_of[i]];
    const Decision d = traffik::Decide(b.has_state ? &b.state : nullptr, ops[i].rate,
                                       ops[i].cost, now_ms, &b.state);
    b.has_state = true;
    b.rate = &ops[i].rate;
    if (!d.allowed) result.applied = false;
    result.decisions.push_back(d);
  }

  if (result.applied) {
    for (Scratch& b : buckets) {
      Map& map = b.shard->buckets;
      const int64_t full_at_ms = FullAtMs(b.state, *b.rate);
      // Looked up again: making room for an earlier new bucket may have
      // evicted this one.
      auto it = map.find(b.key, b.hash);
      if (it != map.end()) {
        it->second = Entry{b.state, full_at_ms};
      } else if (full_at_ms > now_ms) {
        if (map.size() >= per_shard_cap_) MakeRoom(*b.shard, now_ms);
        map.emplace(std::string(b.key), Entry{b.state, full_at_ms});
        bucket_count_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  } else {
    // Nothing taken: describe each bucket as it stands.
    for (size_t i = 0; i < ops.size(); ++i) {
      const Scratch& b = buckets[bucket_of[i]];
      BucketState unused;
      const Decision as_is = traffik::Decide(b.existed ? &b.before : nullptr, ops[i].rate,
                                             /*cost=*/0, now_ms, &unused);
      result.decisions[i].remaining = as_is.remaining;
      result.decisions[i].reset_ms = as_is.reset_ms;
    }
  }
  for (auto it = locked.rbegin(); it != locked.rend(); ++it) (*it)->mu.Unlock();
  return result;
}

Decision MemoryBackend::DecideNow(absl::string_view key, const Rate& rate,
                                  uint64_t cost) {
  // The map's own hash, computed once: it picks the shard (from the high
  // bits; flat_hash_map probes with the low ones) and drives the lookup.
  Shard& any = (*shards_)[0];
  const size_t hash = any.hasher(key);
  Shard& shard = (*shards_)[static_cast<uint64_t>(hash) >> (64 - kShardBits)];
  const int64_t now_ms = clock_.NowMs();

  SpinLockGuard lock(shard.mu);
  auto it = shard.buckets.find(key, hash);
  if (it != shard.buckets.end()) {
    Entry& entry = it->second;
    const Decision d = traffik::Decide(&entry.state, rate, cost, now_ms, &entry.state);
    entry.full_at_ms = FullAtMs(entry.state, rate);
    return d;
  }
  BucketState state;
  const Decision d = traffik::Decide(nullptr, rate, cost, now_ms, &state);
  const int64_t full_at_ms = FullAtMs(state, rate);
  // A bucket that is still full after the hit (refused, which cannot happen
  // for a new bucket, or a cost of 0) needs no storage.
  if (full_at_ms <= now_ms) return d;
  if (shard.buckets.size() >= per_shard_cap_) MakeRoom(shard, now_ms);
  shard.buckets.emplace(std::string(key), Entry{state, full_at_ms});
  bucket_count_.fetch_add(1, std::memory_order_relaxed);
  return d;
}

void MemoryBackend::MakeRoom(Shard& shard, int64_t now_ms) {
  auto& buckets = shard.buckets;
  // First the free drops: buckets that are full again.
  const size_t before = buckets.size();
  absl::erase_if(buckets,
                 [now_ms](const auto& kv) { return kv.second.full_at_ms <= now_ms; });
  size_t dropped = before - buckets.size();
  if (buckets.size() < per_shard_cap_) {
    bucket_count_.fetch_sub(dropped, std::memory_order_relaxed);
    return;
  }
  // Still at the cap: evict the sixteenth of the shard closest to full (the
  // least state lost), so the next inserts do not scan again.
  std::vector<int64_t> full_at;
  full_at.reserve(buckets.size());
  for (const auto& kv : buckets) full_at.push_back(kv.second.full_at_ms);
  const size_t target = std::max<size_t>(1, buckets.size() / 16);
  std::nth_element(full_at.begin(), full_at.begin() + (target - 1), full_at.end());
  const int64_t threshold = full_at[target - 1];
  size_t evicted = 0;
  for (auto it = buckets.begin(); it != buckets.end() && evicted < target;) {
    if (it->second.full_at_ms <= threshold) {
      buckets.erase(it++);
      ++evicted;
    } else {
      ++it;
    }
  }
  evictions_.fetch_add(evicted, std::memory_order_relaxed);
  bucket_count_.fetch_sub(dropped + evicted, std::memory_order_relaxed);
}

uint64_t MemoryBackend::SweepExpired() {
  uint64_t total = 0;
  for (Shard& shard : *shards_) {
    const int64_t now_ms = clock_.NowMs();
    SpinLockGuard lock(shard.mu);
    total += absl::erase_if(shard.buckets, [now_ms](const auto& kv) {
      return kv.second.full_at_ms <= now_ms;
    });
  }
  bucket_count_.fetch_sub(total, std::memory_order_relaxed);
  return total;
}

void MemoryBackend::SweepLoop() {
  pthread_setname_np(pthread_self(), "traffik-sweep");
  std::unique_lock<std::mutex> lock(sweep_mu_);
  while (!stopping_) {
    sweep_cv_.wait_for(lock, std::chrono::milliseconds(options_.sweep_interval_ms));
    if (stopping_) break;
    lock.unlock();
    SweepExpired();
    lock.lock();
  }
}

}  // namespace traffik
