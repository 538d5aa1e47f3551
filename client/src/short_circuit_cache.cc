#include "short_circuit_cache.h"

#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace traffik::client_internal {
namespace {

// Large caches are split over 16 shards to keep lock contention low; small
// ones keep a single shard so the bound is exact and fully usable.
constexpr size_t kShardingThreshold = 4096;
constexpr int kShardBits = 4;

uint32_t NormalizedCost(uint32_t cost) { return cost == 0 ? 1 : cost; }

}  // namespace

ShortCircuitCache::ShortCircuitCache(size_t max_keys, Clock clock)
    : max_keys_(max_keys),
      clock_(clock ? std::move(clock)
                   : Clock([] { return std::chrono::steady_clock::now(); })) {
  if (max_keys_ == 0) return;
  shard_bits_ = max_keys_ >= kShardingThreshold ? kShardBits : 0;
  const size_t shard_count = size_t{1} << shard_bits_;
  for (size_t i = 0; i < shard_count; ++i) {
    auto shard = std::make_unique<Shard>();
    // Spread max_keys exactly: the first (max_keys % n) shards take one more.
    shard->capacity = max_keys_ / shard_count + (i < max_keys_ % shard_count ? 1 : 0);
    shards_.push_back(std::move(shard));
  }
}

std::string ShortCircuitCache::Key(const std::string& tenant,
                                   const std::string& throttle_uid,
                                   const std::string& identifier) {
  return absl::StrCat(tenant.size(), ":", tenant, throttle_uid.size(), ":", throttle_uid,
                      identifier);
}

ShortCircuitCache::Shard& ShortCircuitCache::ShardFor(const std::string& key) {
  if (shard_bits_ == 0) return *shards_[0];
  // absl's hash tables use the low bits; pick the shard from the high ones.
  const uint64_t hash = absl::Hash<std::string>{}(key);
  return *shards_[hash >> (64 - shard_bits_)];
}

void ShortCircuitCache::EraseLocked(
    Shard& shard, absl::node_hash_map<std::string, Entry>::iterator it) {
  shard.by_deadline.erase(it->second.index);
  shard.entries.erase(it);
  size_.fetch_sub(1, std::memory_order_relaxed);
}

std::optional<std::chrono::milliseconds> ShortCircuitCache::Lookup(const std::string& key,
                                                                   uint32_t cost) {
  std::optional<Refusal> refusal = LookupRefusal(key, cost);
  if (!refusal.has_value()) return std::nullopt;
  return refusal->wait;
}

std::optional<ShortCircuitCache::Refusal> ShortCircuitCache::LookupRefusal(
    const std::string& key, uint32_t cost) {
  if (!enabled()) return std::nullopt;
  Shard& shard = ShardFor(key);
  const TimePoint now = clock_();
  absl::MutexLock lock(&shard.mu);
  auto it = shard.entries.find(key);
  if (it == shard.entries.end()) return std::nullopt;
  if (it->second.until <= now) {
    EraseLocked(shard, it);
    return std::nullopt;
  }
  // A cheaper hit than the refused one may be allowed sooner: ask.
  if (NormalizedCost(cost) < it->second.cost) return std::nullopt;
  Refusal refusal;
  refusal.wait =
      std::max(std::chrono::ceil<std::chrono::milliseconds>(it->second.until - now),
               std::chrono::milliseconds(1));
  const Bucket& bucket = it->second.bucket;
  refusal.limit = bucket.limit;
  refusal.remaining = bucket.remaining;
  refusal.reset = std::max(
      refusal.wait, std::chrono::ceil<std::chrono::milliseconds>(bucket.full_at - now));
  return refusal;
}

void ShortCircuitCache::Insert(const std::string& key, uint32_t cost, TimePoint until) {
  Insert(key, cost, until, Bucket{});
}

void ShortCircuitCache::Insert(const std::string& key, uint32_t cost, TimePoint until,
                               const Bucket& bucket) {
  if (!enabled()) return;
  Shard& shard = ShardFor(key);
  const TimePoint now = clock_();
  if (until <= now) return;
  absl::MutexLock lock(&shard.mu);
  auto it = shard.entries.find(key);
  if (it != shard.entries.end()) {
    shard.by_deadline.erase(it->second.index);
    it->second.until = until;
    it->second.cost = NormalizedCost(cost);
    it->second.bucket = bucket;
    it->second.index = shard.by_deadline.emplace(until, &it->first);
    return;
  }
  // Expired entries sort first: drop them, then the soonest-expiring ones
  // while the shard is full.
  while (!shard.by_deadline.empty() && (shard.by_deadline.begin()->first <= now ||
                                        shard.entries.size() >= shard.capacity)) {
    EraseLocked(shard, shard.entries.find(*shard.by_deadline.begin()->second));
  }
  auto [inserted, ok] =
      shard.entries.emplace(key, Entry{until, NormalizedCost(cost), bucket, {}});
  (void)ok;
  inserted->second.index = shard.by_deadline.emplace(until, &inserted->first);
  size_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace traffik::client_internal
