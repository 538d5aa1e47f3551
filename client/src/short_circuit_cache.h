#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace traffik::client_internal {

// The local short-circuit: remembers, per bucket key, that traffikd refused a
// hit of some cost until some time, so that later hits of that key with at
// least that cost are refused without an RPC.
//
// Why this is safe: a refused hit takes nothing and buckets refill at a fixed
// rate, so a hit refused with "wait N ms" cannot be allowed before N ms have
// passed, and neither can any hit of a higher cost. Deadlines are measured
// from when the RPC was sent (before the server decided), so the client never
// refuses longer than the server would.
//
// Bounded: at most `max_keys` entries. Inserting into a full cache drops the
// expired entries first, then the ones expiring soonest. Expired entries are
// also dropped when looked up or when an insert finds them at the front of
// the deadline order.
//
// Thread-safe: keys are spread over shards, each with its own mutex.
class ShortCircuitCache {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Clock = std::function<TimePoint()>;

  // `max_keys` 0 disables the cache (Lookup never refuses, Insert does
  // nothing). `clock` defaults to std::chrono::steady_clock::now.
  explicit ShortCircuitCache(size_t max_keys, Clock clock = {});

  ShortCircuitCache(const ShortCircuitCache&) = delete;
  ShortCircuitCache& operator=(const ShortCircuitCache&) = delete;

  bool enabled() const { return !shards_.empty(); }

  // The cache key of the bucket (tenant, throttle_uid, identifier):
  // unambiguous for any bytes (lengths are encoded).
  static std::string Key(const std::string& tenant, const std::string& throttle_uid,
                         const std::string& identifier);

  // What the server said about the bucket when it refused, so that a local
  // refusal can carry the same RateLimit-* numbers.
  struct Bucket {
    uint64_t limit = 0;      // capacity (0: unknown)
    uint64_t remaining = 0;  // whole tokens left at the refusal (a lower bound later)
    TimePoint full_at{};     // when the bucket is full again (unknown: epoch)
  };

  // A hit known to be refused now.
  struct Refusal {
    std::chrono::milliseconds wait{0};   // time left, >= 1 ms, rounded up
    uint64_t limit = 0;                  // as Bucket::limit
    uint64_t remaining = 0;              // as Bucket::remaining
    std::chrono::milliseconds reset{0};  // until full_at, rounded up, >= wait
  };

  // If a hit of `cost` tokens (0 means 1) on `key` is known to be refused now,
  // the refusal; otherwise nullopt (ask the server).
  std::optional<Refusal> LookupRefusal(const std::string& key, uint32_t cost);
  // LookupRefusal's wait only.
  std::optional<std::chrono::milliseconds> Lookup(const std::string& key, uint32_t cost);

  // Remembers that hits of `cost` tokens (0 means 1) or more on `key` are
  // refused until `until`, and what the server said of the bucket. Replaces
  // what was known about `key` (any refusal the server gives is a valid one).
  // Does nothing if `until` has passed.
  void Insert(const std::string& key, uint32_t cost, TimePoint until,
              const Bucket& bucket);
  // The same with the bucket's numbers unknown.
  void Insert(const std::string& key, uint32_t cost, TimePoint until);

  // Entries held now (expired ones not yet dropped included).
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  size_t max_keys() const { return max_keys_; }

 private:
  using DeadlineIndex = std::multimap<TimePoint, const std::string*>;
  struct Entry {
    TimePoint until;
    uint32_t cost = 1;
    Bucket bucket;
    DeadlineIndex::iterator index;  // this entry's place in Shard::by_deadline
  };
  struct Shard {
    absl::Mutex mu;
    size_t capacity = 0;
    // node_hash_map: keys have stable addresses, referenced by by_deadline.
    absl::node_hash_map<std::string, Entry> entries ABSL_GUARDED_BY(mu);
    DeadlineIndex by_deadline ABSL_GUARDED_BY(mu);
  };

  Shard& ShardFor(const std::string& key);
  // Drops `it` from `shard`.
  void EraseLocked(Shard& shard, absl::node_hash_map<std::string, Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  const size_t max_keys_;
  const Clock clock_;
  int shard_bits_ = 0;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<size_t> size_{0};
};

}  // namespace traffik::client_internal
