// Unit tests of the client's local short-circuit cache (private class), on a
// fake clock.

#include "short_circuit_cache.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace traffik::client_internal {
namespace {

using std::chrono::milliseconds;

class ShortCircuitCacheTest : public ::testing::Test {
 protected:
  ShortCircuitCache::Clock clock() {
    return [this] { return now_; };
  }
  void Advance(milliseconds d) { now_ += d; }
  ShortCircuitCache::TimePoint At(milliseconds d) const { return now_ + d; }

  ShortCircuitCache::TimePoint now_{std::chrono::hours(1)};
};

// Verifies a remembered refusal is reported with its remaining wait until it expires.
TEST_F(ShortCircuitCacheTest, RefusesUntilDeadline) {
  ShortCircuitCache cache(10, clock());
  EXPECT_FALSE(cache.Lookup("k", 1).has_value());
  cache.Insert("k", 1, At(milliseconds(500)));
  EXPECT_EQ(cache.Lookup("k", 1), milliseconds(500));
  Advance(milliseconds(499));
  EXPECT_EQ(cache.Lookup("k", 1), milliseconds(1));
  Advance(milliseconds(1));
  EXPECT_FALSE(cache.Lookup("k", 1).has_value());
  EXPECT_EQ(cache.size(), 0u);  // dropped when found expired
}

// Verifies a local refusal keeps the bucket's limit, remaining and reset (counted down
// with the clock, never below the wait), so its 429 carries RateLimit-* too.
TEST_F(ShortCircuitCacheTest, RefusalKeepsBucketNumbers) {
  ShortCircuitCache cache(10, clock());
  cache.Insert("k", 2, At(milliseconds(500)),
               {.limit = 5, .remaining = 1, .full_at = At(milliseconds(8000))});
  Advance(milliseconds(100));
  std::optional<ShortCircuitCache::Refusal> refusal = cache.LookupRefusal("k", 2);
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->wait, milliseconds(400));
  EXPECT_EQ(refusal->limit, 5u);
  EXPECT_EQ(refusal->remaining, 1u);
  EXPECT_EQ(refusal->reset, milliseconds(7900));
  // Unknown numbers (an old-style insert): limit 0, reset no shorter than the wait.
  cache.Insert("u", 1, At(milliseconds(300)));
  refusal = cache.LookupRefusal("u", 1);
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->limit, 0u);
  EXPECT_EQ(refusal->reset, milliseconds(300));
}

// Verifies the remaining wait is rounded up to whole milliseconds.
TEST_F(ShortCircuitCacheTest, RoundsWaitUp) {
  ShortCircuitCache cache(10, clock());
  cache.Insert("k", 1, now_ + std::chrono::microseconds(1500));
  EXPECT_EQ(cache.Lookup("k", 1), milliseconds(2));
}

// Verifies only hits at least as expensive as the refused one are refused (cost 0 means
// 1).
TEST_F(ShortCircuitCacheTest, CheaperHitsAreNotRefused) {
  ShortCircuitCache cache(10, clock());
  cache.Insert("k", 3, At(milliseconds(100)));
  EXPECT_FALSE(cache.Lookup("k", 2).has_value());
  EXPECT_TRUE(cache.Lookup("k", 3).has_value());
  EXPECT_TRUE(cache.Lookup("k", 4).has_value());
  cache.Insert("k", 0, At(milliseconds(100)));
  EXPECT_TRUE(cache.Lookup("k", 0).has_value());
  EXPECT_TRUE(cache.Lookup("k", 1).has_value());
}

// Verifies keys of different (tenant, uid, identifier) triples never collide.
TEST_F(ShortCircuitCacheTest, KeysAreUnambiguous) {
  EXPECT_NE(ShortCircuitCache::Key("a", "bc", "d"),
            ShortCircuitCache::Key("ab", "c", "d"));
  EXPECT_NE(ShortCircuitCache::Key("", "a", "bc"), ShortCircuitCache::Key("", "ab", "c"));
  EXPECT_NE(ShortCircuitCache::Key("1", "a", "b"), ShortCircuitCache::Key("", "1a", "b"));
  EXPECT_EQ(ShortCircuitCache::Key("t", "u", "i"), ShortCircuitCache::Key("t", "u", "i"));
}

// Verifies re-inserting a key replaces its deadline without growing the cache.
TEST_F(ShortCircuitCacheTest, InsertReplaces) {
  ShortCircuitCache cache(10, clock());
  cache.Insert("k", 1, At(milliseconds(100)));
  cache.Insert("k", 1, At(milliseconds(50)));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.Lookup("k", 1), milliseconds(50));
}

// Verifies an already-expired deadline is not stored.
TEST_F(ShortCircuitCacheTest, IgnoresPastDeadlines) {
  ShortCircuitCache cache(10, clock());
  cache.Insert("k", 1, now_);
  EXPECT_EQ(cache.size(), 0u);
}

// Verifies a full cache drops expired entries first, then the soonest-expiring ones.
TEST_F(ShortCircuitCacheTest, EvictsExpiredThenSoonest) {
  ShortCircuitCache cache(3, clock());
  cache.Insert("k1", 1, At(milliseconds(30)));
  cache.Insert("k2", 1, At(milliseconds(5)));
  cache.Insert("k3", 1, At(milliseconds(50)));
  Advance(milliseconds(10));  // k2 has expired
  cache.Insert("k4", 1, At(milliseconds(100)));
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_TRUE(cache.Lookup("k1", 1).has_value());
  EXPECT_TRUE(cache.Lookup("k3", 1).has_value());
  EXPECT_TRUE(cache.Lookup("k4", 1).has_value());
  cache.Insert("k5", 1, At(milliseconds(200)));  // nothing expired: k1 is soonest
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_FALSE(cache.Lookup("k1", 1).has_value());
  EXPECT_TRUE(cache.Lookup("k3", 1).has_value());
  EXPECT_TRUE(cache.Lookup("k4", 1).has_value());
  EXPECT_TRUE(cache.Lookup("k5", 1).has_value());
}

// Verifies the size bound holds for small (one shard) and large (sharded) caches.
TEST_F(ShortCircuitCacheTest, SizeIsBounded) {
  for (const size_t max_keys : {size_t{1}, size_t{10}, size_t{5000}}) {
    ShortCircuitCache cache(max_keys, clock());
    for (int i = 0; i < 50'000; ++i) {
      cache.Insert(absl::StrCat("key-", i), 1, At(milliseconds(1000 + i)));
      ASSERT_LE(cache.size(), max_keys);
    }
    // Small caches use their full capacity; a sharded one nearly all of it.
    EXPECT_GE(cache.size(), max_keys * 9 / 10) << max_keys;
  }
}

// Verifies max_keys 0 turns the cache off.
TEST_F(ShortCircuitCacheTest, ZeroDisables) {
  ShortCircuitCache cache(0, clock());
  EXPECT_FALSE(cache.enabled());
  cache.Insert("k", 1, At(milliseconds(100)));
  EXPECT_FALSE(cache.Lookup("k", 1).has_value());
  EXPECT_EQ(cache.size(), 0u);
}

// Verifies concurrent inserts and lookups from 8 threads keep the bound and the entries.
TEST_F(ShortCircuitCacheTest, ConcurrentUseKeepsBound) {
  ShortCircuitCache cache(5000);  // real clock, sharded
  const auto until = std::chrono::steady_clock::now() + std::chrono::hours(1);
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = absl::StrCat("t", t, "-", i % 200);
        if (cache.Lookup(key, 1).has_value()) {
          ++refused;
        } else {
          cache.Insert(key, 1, until);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_LE(cache.size(), 5000u);
  EXPECT_EQ(cache.size(), 1600u);  // 8 x 200 distinct keys fit
  EXPECT_EQ(refused.load(), 8 * (2000 - 200));
}

}  // namespace
}  // namespace traffik::client_internal
