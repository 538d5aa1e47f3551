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
